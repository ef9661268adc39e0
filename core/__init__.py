"""videomar-harness core: the VideoMAR model, its sampler, data and training, without Hydra.

Public API for notebooks and other programs:
    from core import ModelConfig, VideoMAR, sample_video, build_dataset
"""

from core.config import (DataConfig, EvalConfig, ModelConfig, PRESETS, RunConfig, SamplerConfig,
                         TokenizerConfig, TrainConfig, preset)
from core.data import build_dataset
from core.model import TrainDraws, VideoMAR
from core.sampler import sample_latents, sample_video

__all__ = ["DataConfig", "EvalConfig", "ModelConfig", "PRESETS", "RunConfig", "SamplerConfig",
           "TokenizerConfig", "TrainConfig", "preset", "build_dataset", "TrainDraws", "VideoMAR",
           "sample_latents", "sample_video"]
