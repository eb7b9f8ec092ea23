"""tthf: compiled, validated inference for a three-headed transformer on minutely BBO data.

The subpackages live in the repository's top-level folders: ``engine/`` is
``tthf.engine`` (data, features, model, windows, runs, inference), ``export/`` is
``tthf.export`` (ONNX / TensorRT export and validation) and ``cli/`` is ``tthf.cli``.
"""

__version__ = "0.1.0"
