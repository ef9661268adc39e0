"""Video metrics mirroring VBench-I2V's nine dimensions, in three backends with distinct keys.

- `synthetic` (keys `syn_*`, core/metrics/synthetic.py): on the built-in sprites data, computed
  from its exact ground truth (positions, colours, camera offsets). numpy only, weight-free.
- `proxy` (keys `proxy_*` plus VBench's exact `temporal_flickering`, core/metrics/proxy.py): any
  video, classical OpenCV implementations; needs the `metrics` extra (opencv-python-headless).
- `vbench` (core/metrics/vbench_backend.py): the official VBench-I2V; imported lazily, CUDA only.

Only the vbench backend's values may enter VBench's Quality/I2V/Total (core/metrics/aggregate.py).
Submodules are imported on first use so `import core.metrics` needs neither OpenCV nor vbench.
"""

from __future__ import annotations

import importlib

SUBMODULES = ("aggregate", "synthetic", "proxy", "vbench_backend")
# Bumped when a backend's numbers change for the same input; recorded as results-row metric_version.
METRIC_VERSIONS = {"synthetic": 1, "proxy": 1, "aggregate": 1}

__all__ = list(SUBMODULES) + ["METRIC_VERSIONS"]


def __getattr__(name: str):
    if name in SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
