"""The SpeedUpNet (SUN) adapter on VideoMAR's per-token diffusion head: guided few-step sampling
in one pass per solver step.

MAR-family samplers (VideoMAR, arXiv 2506.14168) spend most of their time in the per-token
head: ~100 respaced DDPM steps, each on [z_cond; z_uncond] for classifier-free guidance (2 x 100
MLP passes per token). SUN (arXiv 2312.08887, sec. 3) folds CFG into a trainable branch that
reads the negative condition next to the frozen model's positive one, and trains it with CFG
distillation plus a multi-step consistency loss (head_distill.py) so that 4 DPM-Solver++ steps
(solver.py) suffice. The construction on the head is ours [I], since SUN's adapter is defined
on cross-attention and the head has none:

* Where the condition enters. The head (core/diffusion_head.py) conditions every adaLN block
  on y = time_embed(t) + cond_embed(z). The frozen positive branch is Ap = cond_embed(z_cond);
  the adapter adds a trainable negative branch An = W_neg z_uncond and an extra positive branch
  Ae = W_pos2 z_cond (both initialised as copies of cond_embed), each rescaled per token to
  Ap's norm and given a per-channel scale and shift (starting at 1 and 0), exactly as SUN's
  attention normalisation; the combined condition is Ap - An' + Ae'. With z_uncond = z_cond
  the initial adapter reproduces the plain head, as SUN's does for a negative equal to the
  positive.
* Guidance and time. MAR ramps the CFG scale linearly over a frame's iterations, so one adapter
  serves every scale w in [1, cfg_max]: a zero-initialised linear layer reads the head's time
  embedding and sinusoidal features of w and adds per-channel deltas to the scales and shifts.

The adapter is installed on a model outside its module tree (`install`), so checkpoints, EMA
and parameter counts of the model are unchanged; only its own weights are saved (safetensors).
"""

from __future__ import annotations

import copy
import hashlib
import json
import warnings
from pathlib import Path
from typing import Optional

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from core.diffusion_head import DiffusionHead, SimpleMLPAdaLN, timestep_features
from core.sun.solver import solve, start

GUIDANCE_FEATURES = 32  # sinusoidal features of the guidance scale
GUIDANCE_FREQ_SCALE = 100.0  # w -> w * 100 before the sinusoids (resolves steps of ~0.01)
NORM_EPS = 1e-6
ATTR = "sun_head"  # the model attribute an installed adapter lives in


def guidance_features(w: Tensor) -> Tensor:
    """Sinusoidal features (N, GUIDANCE_FEATURES) of guidance scales w (N,)."""
    return timestep_features(w.float() * GUIDANCE_FREQ_SCALE, GUIDANCE_FEATURES)


class SUNHeadAdapter(nn.Module):
    """Negative and extra-positive condition branches for a frozen SimpleMLPAdaLN head."""

    def __init__(self, net: SimpleMLPAdaLN, cfg_max: float):
        super().__init__()
        if not isinstance(net, SimpleMLPAdaLN):
            raise TypeError(f"the SUN head adapter needs a SimpleMLPAdaLN head, got {type(net)}")
        width = net.cond_embed.out_features
        self.neg = copy.deepcopy(net.cond_embed)  # W_neg, starts as the frozen cond_embed
        self.pos2 = copy.deepcopy(net.cond_embed)  # W_pos2 (SUN's add_pos branch)
        for p in [*self.neg.parameters(), *self.pos2.parameters()]:
            p.requires_grad_(True)
        self.alpha = nn.Parameter(torch.ones(2, width))  # per-channel scale of (An, Ae)
        self.beta = nn.Parameter(torch.zeros(2, width))  # per-channel shift of (An, Ae)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width + GUIDANCE_FEATURES, 4 * width))
        nn.init.zeros_(self.modulation[-1].weight)
        nn.init.zeros_(self.modulation[-1].bias)
        self.cfg_max = float(cfg_max)
        self.info: dict = {}  # how it was distilled (student_steps, cfg_max, losses, ...)

    def branches(self, net: SimpleMLPAdaLN, z: Tensor, z_uncond: Tensor):
        """What depends on the conditions only, once per chain: Ap (N, width), the raw (An, Ae)
        (2, N, width) and their rescaling to Ap's norm (2, N, 1)."""
        ap = net.cond_embed(z)
        branches = torch.stack([self.neg(z_uncond), self.pos2(z)])  # (2, N, width)
        scale = ap.norm(dim=-1, keepdim=True) / (branches.norm(dim=-1, keepdim=True) + NORM_EPS)
        return ap, branches, scale

    def condition(self, net: SimpleMLPAdaLN, z: Tensor, z_uncond: Tensor, t: Tensor,
                  guidance: Tensor, cached=None) -> Tensor:
        """The combined condition Ap - An' + Ae' (N, width) at timesteps t (1,) or (N,);
        `cached` = self.branches(net, z, z_uncond) when the caller already has it."""
        ap, branches, scale = cached if cached is not None else self.branches(net, z, z_uncond)
        n = z.shape[0]
        temb = net.time_embed(t, ap.dtype).expand(n, -1)
        g = guidance_features(guidance.reshape(-1).expand(n)).to(ap.dtype)
        delta = self.modulation(torch.cat([temb, g], dim=-1)).view(n, 2, 2, -1)  # (N, 2, 2, w)
        alpha = self.alpha[:, None] + delta[:, :, 0].transpose(0, 1)  # (2, N, w)
        beta = self.beta[:, None] + delta[:, :, 1].transpose(0, 1)
        an, ae = alpha * scale * branches + beta
        return ap - an + ae

    def eps_fn(self, head: DiffusionHead, z: Tensor, z_uncond: Tensor, guidance: Tensor):
        """The student's guided eps in one head pass on N rows (x (N, D), t (1,)) -> (N, D)."""
        net = head.net
        cached = self.branches(net, z, z_uncond)  # per chain, not per solver step

        def eps(x: Tensor, t: Tensor) -> Tensor:
            cond = self.condition(net, z, z_uncond, t, guidance, cached)
            return net(x.to(z.dtype), t, None, cond)[:, :head.token_dim].float()
        return eps

    def check_guidance(self, guidance: float) -> None:
        if guidance < 1.0:
            raise ValueError(f"guidance {guidance:g} < 1: the head adapter is trained for scales "
                             f"in [1, {self.cfg_max:g}]")
        if guidance > self.cfg_max + 1e-6:
            raise ValueError(f"guidance {guidance:g} exceeds the scale this head adapter was "
                             f"trained for (cfg_max={self.cfg_max:g}): distil it with "
                             f"head_distill.cfg_max >= {guidance:g} or lower sampler.cfg_scale")

    @torch.no_grad()
    def sample(self, head: DiffusionHead, z: Tensor, z_uncond: Tensor, *, cfg_scale: float,
               temperature=1.0, num_steps: int, generator: Optional[torch.Generator],
               clip_x0: Optional[float] = None, stochastic: bool = False) -> Tensor:
        """Tokens (N, D) for conditions z, z_uncond (N, C): num_steps single-pass solver steps.

        Randomness and temperature as in solver.start (ODE: scaled x_T; SDE: scaled step noise).
        """
        self.check_guidance(float(cfg_scale))
        x_T, noise = start(head, z, generator, temperature, stochastic)
        w = torch.tensor(float(cfg_scale), device=z.device)
        x0, _ = solve(self.eps_fn(head, z, z_uncond.to(z), w), head, x_T, num_steps, clip_x0,
                      noise=noise)
        return x0.to(z.dtype)

    # ------------------------------------------------------------------ weights only
    def save(self, path: str | Path, info: Optional[dict] = None,
             head: Optional[DiffusionHead] = None) -> None:
        """Write the adapter's weights only; `head` records a fingerprint of the frozen head."""
        meta = {"format": "sun_head_adapter/1", "cfg_max": repr(self.cfg_max),
                "info": json.dumps(info or {}, sort_keys=True)}
        if head is not None:
            meta["head_fingerprint"] = head_fingerprint(head)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(str(path) + ".tmp")
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()},
                  str(tmp), metadata=meta)
        tmp.replace(path)  # atomic: a killed save leaves no half-written adapter


def read_adapter_file(path: str | Path, fmt: str, what: str, missing_fix: str,
                      option: str, writer: str) -> tuple[dict, dict]:
    """(metadata, tensors) of a SUN adapter weights file, or the error that names the fix:
    missing (`missing_fix`), unreadable (distil again), or another format (`option` must point
    to a file `writer` wrote)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist: {missing_fix}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except Exception as exc:  # truncated or foreign file
        raise ValueError(f"cannot read {what} {path} ({exc}): delete it and distil again") from exc
    if meta.get("format") != fmt:
        raise ValueError(f"{path} is not a {what} (metadata {meta}); {option} must point to a "
                         f"file {writer} wrote")
    return meta, state


def load_adapter(head: DiffusionHead, path: str | Path) -> SUNHeadAdapter:
    """A SUNHeadAdapter for `head` with the weights in `path` (written by SUNHeadAdapter.save)."""
    meta, state = read_adapter_file(
        path, "sun_head_adapter/1", "SUN head adapter",
        "distil one with `python ablations/run.py sampler.head=sun ...` (it is cached next to "
        "the training checkpoint) or fix sampler.head_adapter",
        "sampler.head_adapter", "SUNHeadAdapter.save")
    adapter = SUNHeadAdapter(head.net, float(meta["cfg_max"]))
    try:
        adapter.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"SUN head adapter {path} does not fit this model's head ({exc}); it "
                         "was distilled for another head width/condition size") from exc
    expected = meta.get("head_fingerprint")
    if expected and expected != head_fingerprint(head):
        warnings.warn(f"SUN head adapter {path} was distilled from other head weights than "
                      "this model's (e.g. EMA vs raw weights, or another checkpoint); its "
                      "samples may be off: distil it from the weights you sample with",
                      stacklevel=2)
    adapter.info = json.loads(meta.get("info") or "{}")
    return adapter.to(next(head.parameters()).device)


def head_fingerprint(head: DiffusionHead) -> str:
    """A short hash of the frozen head's weights (what an adapter was distilled from)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(head.net.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def install(model, adapter: SUNHeadAdapter) -> None:
    """Attach `adapter` to `model` for sampler.head=sun, outside the model's module tree."""
    object.__setattr__(model, ATTR, adapter.to(model.mask_token.device))


def remove(model) -> None:
    """Detach an installed adapter (a no-op without one)."""
    model.__dict__.pop(ATTR, None)


def installed(model) -> Optional[SUNHeadAdapter]:
    """The adapter installed on `model`, or None."""
    return model.__dict__.get(ATTR)
