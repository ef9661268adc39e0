"""torch.compile of the model (inductor, CPU) computes the training loss eager does.

Slow (about a minute of compilation on 2 cores): the check that the model stays compilable as
it changes; GPU runs compile the same code. The attention mask is built on the host (a graph
break at core/pattern.py's "nothing hidden?" test), the rest is traced.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from core.config import ModelConfig
from core.model import VideoMAR


@pytest.mark.slow
@pytest.mark.skipif(not any(shutil.which(c) for c in ("c++", "g++", "clang++")),
                    reason="inductor needs a C++ compiler on PATH (apt install g++)")
def test_compiled_model_matches_eager():
    model = VideoMAR(ModelConfig(width=32, depth=1, num_heads=2, head_width=32), seed=0).eval()
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, 3, 4, 4, model.cfg.token_dim, generator=g)
    draws = model.sample_train_draws(2, 3, (4, 4), torch.Generator().manual_seed(1))
    eager = model(tokens, ["a red circle", "a blue square"], draws)
    compiled = torch.compile(model)(tokens, ["a red circle", "a blue square"], draws)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
