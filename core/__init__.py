"""videomar-harness core: the VideoMAR model, its sampler, data and training, without Hydra.

Public API for notebooks and other programs:
    from core import ModelConfig, VideoMAR, sample_video, build_dataset

Names are resolved lazily, so `import core.results` (tables, notebooks) does not pay for torch
and the model code.
"""

from importlib import import_module

_EXPORTS = {
    "ModelConfig": "core.config", "DataConfig": "core.config", "EvalConfig": "core.config",
    "RunConfig": "core.config", "SamplerConfig": "core.config", "TokenizerConfig": "core.config",
    "TrainConfig": "core.config", "PRESETS": "core.config", "preset": "core.config",
    "build_dataset": "core.data", "VideoMAR": "core.model", "TrainDraws": "core.model",
    "sample_video": "core.sampler", "sample_latents": "core.sampler",
    "PreemptionGuard": "core.preemption", "write_data_report": "core.data",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'core' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
