"""``inference/manifest.json``: each predicted date's outcome, typed like the export manifest.

The batch runner rewrites it (atomically) after every date, so a killed run loses at
most the dates in flight; a rerun skips the dates whose entry is ``ok`` with the same
settings key and whose file exists. Any executor that runs dates writes these entries.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from tthf.engine.runs import INFERENCE_MANIFEST, Run
from tthf.errors import KeyNotFoundError

log = logging.getLogger("tthf.run")

STATUSES = ("ok", "failed", "skipped", "no_data")


@dataclass
class DateResult:
    """The outcome of one date, as written to the run manifest."""

    date: str
    status: str  # one of STATUSES: "skipped" is already done, "no_data" has no partition
    rows: int = 0
    windows: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    reason: str = ""
    file: str = ""
    settings: str = ""
    backend: str = ""
    windowing: str = ""  # "host" or "device": where the windows were cut
    executor: str = ""  # "local" or "ray" (tthf.engine.runtime.batch.EXECUTORS)
    worker: str = ""  # the process that computed the date: host (local) or host:pid (a Ray actor)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DateResult:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


@dataclass
class RunManifest:
    """The run, the settings of the latest call, library versions, and one entry per date."""

    run: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    dates: dict[str, DateResult] = field(default_factory=dict)

    @classmethod
    def load(cls, run: Run) -> RunManifest:
        """The run's manifest, or an empty one (an unreadable manifest is logged and redone)."""
        try:
            raw = json.loads(run.read_text(INFERENCE_MANIFEST))
        except KeyNotFoundError:
            return cls()
        except json.JSONDecodeError:
            log.warning(
                "%s is not valid JSON; starting a new one (dates will be redone)", run.store.uri(INFERENCE_MANIFEST)
            )
            return cls()
        dates = {day: DateResult.from_dict(entry) for day, entry in raw.get("dates", {}).items()}
        return cls(raw.get("run", ""), raw.get("settings", {}), raw.get("versions", {}), dates)

    def record(self, result: DateResult) -> None:
        self.dates[result.date] = result

    def to_json(self) -> str:
        doc = {
            "run": self.run,
            "settings": self.settings,
            "versions": self.versions,
            "dates": {day: dataclasses.asdict(r) for day, r in self.dates.items()},
        }
        return json.dumps(doc, indent=1, sort_keys=True) + "\n"

    def write(self, run: Run) -> None:
        run.write_text(INFERENCE_MANIFEST, self.to_json())
