"""One forecast's attributions as a heatmap PNG: features down, lags across, one panel per output."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tthf.engine.config import OUTPUT_NAMES


def heatmap_png(title: str, cells: dict[str, np.ndarray], feature_names: list[str], method: str) -> bytes:
    """``cells[name]`` (T, F) of one forecast; each panel's colours are symmetric around 0 (red adds, blue takes away)."""
    n_features = len(feature_names)
    fig = Figure(figsize=(18, 2.0 + 0.16 * n_features), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(OUTPUT_NAMES), sharey=True)
    for ax, name in zip(axes, OUTPUT_NAMES, strict=True):
        grid = cells[name][::-1].T  # (F, T) with lag 0 on the left
        top = float(np.abs(grid).max()) or 1.0
        image = ax.imshow(grid, aspect="auto", cmap="RdBu_r", vmin=-top, vmax=top, interpolation="nearest")
        ax.set_title(name)
        ax.set_xlabel("lag (minutes back)")
        fig.colorbar(image, ax=ax, shrink=0.6, format="%.1e")
    axes[0].set_yticks(np.arange(n_features), feature_names, fontsize=7)
    fig.suptitle(f"{title}: {method} attributions")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
