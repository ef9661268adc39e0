"""SpeedUpNet in VideoMAR's backbone: guided features from one backbone pass.

With classifier-free guidance the sampler runs the backbone on [cond; uncond] (a doubled batch
and a doubled KV cache) and mixes the head's eps. SUN (arXiv 2312.08887, sec. 3) puts its
adapter on the text cross-attention of the denoiser instead: every block of VideoMAR's backbone
already cross-attends to the text, with the learned null embedding as the unconditional input,
so that is where the adapter goes here. Per block, from the frozen query Q and the joint context
[positive | negative] (negative = the null embedding or an encoded negative prompt):

    Ap = Attn(Q, K cp, V cp)                    frozen positive branch
    An = Attn(Q, K_neg cn, V_neg cn)            trainable negative branch (copy of K/V at start)
    Ae = Attn(Q, K_pos2 cp, V_pos2 cp)          trainable extra positive branch (add_pos)
    X' = (alpha_X + da_X(w)) * (||Ap|| / ||X||) * X + (beta_X + db_X(w))   per token, X in {An, Ae}
    out = proj(Ap - An' + Ae')

the attention normalisation of core/sun/adapter.py with per-channel alpha/beta (1/0 at start) and
zero-initialised deltas read from sinusoidal features of the guidance scale w, since MAR ramps w
over a frame's iterations. With cn = cp the fresh adapter returns the frozen block's output.
The features of the one pass feed the per-token head with no second branch; core/sun/
backbone_distill.py trains the adapter so that the head's eps on them matches the CFG teacher's
guided eps. Processors attach through CrossAttention.set_processor only inside
`adapter.scale(model, w)`, and the adapter lives outside the model's module tree: checkpoints,
EMA, parameter counts and every pass outside that block are the frozen model's.
"""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors.torch import save_file
from torch import Tensor, nn

from core.attention import CrossAttention
from core.sun.head_adapter import (GUIDANCE_FEATURES, NORM_EPS, guidance_features,
                                   read_adapter_file)

ATTR = "sun_backbone"  # the model attribute an installed adapter lives in
FORMAT = "sun_backbone_adapter/1"


def joint_context(context: Tensor, mask: Tensor, negative: Tensor, negative_mask: Tensor):
    """The single-pass context [positive | negative] along the token axis, and its mask."""
    if context.shape != negative.shape:
        raise ValueError(f"positive {tuple(context.shape)} and negative {tuple(negative.shape)} "
                         "contexts must have the same shape (both from model.encode_context)")
    return torch.cat([context, negative], dim=1), torch.cat([mask, negative_mask], dim=1)


class SUNCrossProcessor(nn.Module):
    """The SUN branches of one block's text cross-attention."""

    def __init__(self, cross: CrossAttention, owner: "SUNBackboneAdapter"):
        super().__init__()
        width = cross.proj.in_features
        self.kv_neg = copy.deepcopy(cross.kv).requires_grad_(True)
        self.kv_pos2 = copy.deepcopy(cross.kv).requires_grad_(True)
        self.alpha = nn.Parameter(torch.ones(2, width, device=cross.proj.weight.device))
        self.beta = nn.Parameter(torch.zeros(2, width, device=cross.proj.weight.device))
        self.modulation = nn.Linear(GUIDANCE_FEATURES, 4 * width, device=cross.proj.weight.device)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)
        object.__setattr__(self, "owner", owner)  # reads the guidance scale; not a submodule

    def _attend(self, cross: CrossAttention, q: Tensor, kv: Tensor, mask: Tensor) -> Tensor:
        k, v = rearrange(kv, "b l (two h d) -> two b h l d", two=2, h=cross.num_heads)
        out = F.scaled_dot_product_attention(q, cross.k_norm(k), v, attn_mask=mask[:, None, None])
        return rearrange(out, "b h l d -> b l (h d)")

    def forward(self, cross: CrossAttention, x: Tensor, context: Tensor, context_mask: Tensor,
                cache=None, layer: int = 0) -> Tensor:
        if context.shape[1] % 2:
            raise ValueError(f"the SUN backbone adapter expects the joint context [positive | "
                             f"negative] with 2 x text_len tokens, got {context.shape[1]}: sample "
                             "with sampler.guidance=sun (core/sampler.py builds it)")
        half = context.shape[1] // 2
        pos, neg = context[:, :half], context[:, half:]
        pos_mask, neg_mask = context_mask[:, :half], context_mask[:, half:]

        def projections():
            return cross.kv(pos), self.kv_neg(neg), self.kv_pos2(pos)

        if cache is not None:  # the text does not change while a clip is generated
            kv_p, kv_n, kv_e = cache.cross_kv(("sun", layer), context, projections)
        else:
            kv_p, kv_n, kv_e = projections()
        q = cross.q_norm(rearrange(cross.q(x), "b l (h d) -> b h l d", h=cross.num_heads))
        ap = self._attend(cross, q, kv_p, pos_mask)
        branches = torch.stack([self._attend(cross, q, kv_n, neg_mask),
                                self._attend(cross, q, kv_e, pos_mask)])  # (2, B, L, W)
        ratio = ap.norm(dim=-1, keepdim=True) / (branches.norm(dim=-1, keepdim=True) + NORM_EPS)
        w = torch.as_tensor(self.owner.guidance, dtype=torch.float32, device=x.device).reshape(-1)
        delta = self.modulation(guidance_features(w).to(x.dtype))  # (1 or B, 4W)
        delta = delta.view(w.numel(), 2, 2, -1).permute(1, 2, 0, 3)[..., None, :]  # (X, a|b, n, 1, W)
        alpha = self.alpha[:, None, None] + delta[:, 0]  # (2, n, 1, W)
        beta = self.beta[:, None, None] + delta[:, 1]
        an, ae = alpha.to(x.dtype) * ratio * branches + beta.to(x.dtype)
        return cross.proj(ap - an + ae)


@contextlib.contextmanager
def processors_at(model, owner, guidance):
    """`owner.processors` (one per block) on `model`'s text cross-attention, reading scale
    `guidance` (checked by owner.check_guidance), for the passes inside the block; the plain
    cross-attention again after it. Shared by the one-pass guidance modules (this adapter and
    core/sun/guided_student.py)."""
    owner.check_guidance(guidance)
    crosses = [block.cross for block in model.blocks]
    owner.guidance = guidance
    for cross, processor in zip(crosses, owner.processors):
        cross.set_processor(processor)
    try:
        yield owner
    finally:
        for cross in crosses:
            cross.set_processor(None)


class SUNBackboneAdapter(nn.Module):
    """One SUNCrossProcessor per backbone block, for guidance scales in [1, cfg_max]."""

    def __init__(self, model, cfg_max: float):
        super().__init__()
        crosses = [block.cross for block in model.blocks]
        if model.text_encoder is None or any(c is None for c in crosses):
            raise ValueError("the SUN backbone adapter needs a text-conditioned model "
                             "(model.text_dim > 0): it lives on the text cross-attention")
        self.processors = nn.ModuleList(SUNCrossProcessor(c, self) for c in crosses)
        self.cfg_max = float(cfg_max)
        self.guidance = 1.0  # the scale of the passes inside `scale`
        self.info: dict = {}

    def check_guidance(self, guidance) -> None:
        """guidance: a scale, or a tensor of per-sample scales."""
        low, high = (float(torch.as_tensor(guidance).min()), float(torch.as_tensor(guidance).max()))
        if not (1.0 <= low and high <= self.cfg_max + 1e-6):
            guidance = low if low < 1.0 else high
            raise ValueError(f"guidance {guidance:g} is outside [1, {self.cfg_max:g}], the scales "
                             "this backbone adapter was distilled for: distil it with "
                             f"head_distill.cfg_max >= {guidance:g} or change sampler.cfg_scale")

    def scale(self, model, guidance):
        """Backbone passes of `model` inside this block run through the adapter at scale
        `guidance` (a float, or a tensor of per-sample scales); outside it the model is the
        frozen one (training, plain CFG)."""
        return processors_at(model, self, guidance)

    def save(self, path: str | Path, info: Optional[dict] = None) -> None:
        """Write the adapter's weights only (safetensors, atomic)."""
        meta = {"format": FORMAT, "cfg_max": repr(self.cfg_max),
                "info": json.dumps(info or self.info, sort_keys=True)}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(str(path) + ".tmp")
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()},
                  str(tmp), metadata=meta)
        tmp.replace(path)


def load(model, path: str | Path) -> SUNBackboneAdapter:
    """A SUNBackboneAdapter for `model` with the weights SUNBackboneAdapter.save wrote to `path`."""
    meta, state = read_adapter_file(
        path, FORMAT, "SUN backbone adapter",
        "distil one with `python ablations/run.py sampler.guidance=sun ...` (cached next to the "
        "training checkpoint) or fix sampler.backbone_adapter",
        "sampler.backbone_adapter", "SUNBackboneAdapter.save")
    adapter = SUNBackboneAdapter(model, float(meta["cfg_max"]))
    try:
        adapter.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"SUN backbone adapter {path} does not fit this model ({exc}): it was "
                         "distilled for another width/depth") from exc
    adapter.info = json.loads(meta.get("info") or "{}")
    return adapter.to(model.mask_token.device)


def install(model, adapter: SUNBackboneAdapter) -> None:
    """Attach `adapter` to `model` for sampler.guidance=sun, outside the model's module tree."""
    object.__setattr__(model, ATTR, adapter.to(model.mask_token.device))


def remove(model) -> None:
    """Detach an installed adapter (a no-op without one)."""
    model.__dict__.pop(ATTR, None)


def installed(model) -> Optional[SUNBackboneAdapter]:
    """The adapter installed on `model`, or None."""
    return model.__dict__.get(ATTR)


def resolve(model, cfg) -> SUNBackboneAdapter:
    """sampler.guidance=sun: the installed adapter, else the one in sampler.backbone_adapter,
    checked against sampler.cfg_scale."""
    adapter = installed(model)
    if cfg.backbone_adapter and getattr(adapter, "source", None) != cfg.backbone_adapter:
        adapter = load(model, cfg.backbone_adapter)
        adapter.source = cfg.backbone_adapter
        install(model, adapter)
    if adapter is None:
        raise ValueError("sampler.guidance=sun but no SUN backbone adapter: set "
                         "sampler.backbone_adapter to a file SUNBackboneAdapter.save wrote "
                         "(ablations/run.py distils one), or call "
                         "core.sun.backbone_adapter.install(model, adapter)")
    if next(adapter.parameters()).device != model.mask_token.device:  # model moved
        install(model, adapter)
    adapter.check_guidance(cfg.cfg_scale)
    return adapter
