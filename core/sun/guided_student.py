"""Guidance distillation with a guidance-scale embedding: the alternative SUN competes with.

Meng et al. ("On Distillation of Guided Diffusion Models", arXiv 2210.03142) distil a CFG teacher
into a student that is the whole denoiser, fine-tuned, and told the guidance scale w through an
embedding: one pass gives the guided output, for any w in the distilled range. SUN (arXiv
2312.08887) argues for its adapter against exactly this: the student is a new copy of the model
(it does not plug into other fine-tunes) and its negative is fixed at distillation time (no
negative prompt at sampling).

Here the student is a copy of the trained VideoMAR (backbone, text encoder and head all train)
plus, in every block's text cross-attention, a zero-initialised linear map of sinusoidal features
of w added to the text tokens before their K/V projection: the fresh student is exactly the
conditional branch, and w reaches every block as SUN's scale does. Like the SUN backbone adapter
the w embedding attaches through CrossAttention.set_processor only inside `student.scale(model,
w)`, so the sampler runs both through one protocol (sampler.guidance=distilled: one backbone pass
on the caption, the head unguided). core/sun/backbone_distill.py trains it on the same teacher
states and losses as the backbone adapter; a saved student is its whole state (model + w
embedding), loaded as a separate model (`load`).
"""

from __future__ import annotations

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
from core.sun.backbone_adapter import processors_at
from core.sun.head_adapter import GUIDANCE_FEATURES, guidance_features, read_adapter_file

ATTR = "guided_student"  # the model attribute an installed w embedding lives in
FORMAT = "guided_student/1"


class GuidanceEmbedProcessor(nn.Module):
    """One block's text cross-attention with the embedded guidance scale added to the text."""

    def __init__(self, cross: CrossAttention, owner: "GuidedStudent"):
        super().__init__()
        width = cross.kv.in_features
        self.embed = nn.Linear(GUIDANCE_FEATURES, width, device=cross.kv.weight.device)
        nn.init.zeros_(self.embed.weight)
        nn.init.zeros_(self.embed.bias)
        object.__setattr__(self, "owner", owner)  # reads the guidance scale; not a submodule

    def forward(self, cross: CrossAttention, x: Tensor, context: Tensor, context_mask: Tensor,
                cache=None, layer: int = 0) -> Tensor:
        # No text K/V cache: the text depends on w, which MAR ramps over a frame's iterations.
        w = torch.as_tensor(self.owner.guidance, dtype=torch.float32, device=x.device).reshape(-1)
        text = context + self.embed(guidance_features(w).to(context.dtype))[:, None]
        q = cross.q_norm(rearrange(cross.q(x), "b l (h d) -> b h l d", h=cross.num_heads))
        k, v = cross.context_kv(text)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=context_mask[:, None, None, :])
        return cross.proj(rearrange(out, "b h l d -> b l (h d)"))


class GuidedStudent(nn.Module):
    """The w embedding of a guidance-distilled copy of a model, for scales in [1, cfg_max]."""

    def __init__(self, model, cfg_max: float, negative_prompt: Optional[str] = None):
        super().__init__()
        crosses = [block.cross for block in model.blocks]
        if model.text_encoder is None or any(c is None for c in crosses):
            raise ValueError("guidance distillation needs a text-conditioned model "
                             "(model.text_dim > 0): the guidance scale enters through the text "
                             "cross-attention")
        self.processors = nn.ModuleList(GuidanceEmbedProcessor(c, self) for c in crosses)
        self.cfg_max = float(cfg_max)
        self.negative_prompt = negative_prompt  # the teacher's negative, fixed in the student
        self.guidance = 1.0
        self.info: dict = {}

    def check(self, guidance, negative_prompt: Optional[str]) -> None:
        """guidance (a scale or per-sample scales) within the distilled range, and the
        sampler's negative prompt the one the student was distilled with."""
        low, high = (float(torch.as_tensor(guidance).min()), float(torch.as_tensor(guidance).max()))
        if not (1.0 <= low and high <= self.cfg_max + 1e-6):
            bad = low if low < 1.0 else high
            raise ValueError(f"guidance {bad:g} is outside [1, {self.cfg_max:g}], the scales this "
                             "guidance-distilled student learned: distil it with "
                             f"head_distill.cfg_max >= {bad:g} or change sampler.cfg_scale")
        if negative_prompt != self.negative_prompt:
            raise ValueError(f"sampler.negative_prompt={negative_prompt!r}, but this guidance-"
                             f"distilled student folded in {self.negative_prompt!r} (None = the "
                             "null embedding): a distilled student has no negative prompt of its "
                             "own; distil one for this negative or use sampler.guidance=sun|cfg")

    def check_guidance(self, guidance) -> None:
        self.check(guidance, self.negative_prompt)

    def scale(self, model, guidance):
        """Backbone passes of `model` inside this block see guidance scale `guidance` (a float or
        per-sample scales); outside it the blocks' cross-attention is the plain one."""
        return processors_at(model, self, guidance)

    def save(self, model, path: str | Path, info: Optional[dict] = None) -> None:
        """Write the student: the fine-tuned model's state and the w embedding (safetensors,
        atomic)."""
        meta = {"format": FORMAT, "cfg_max": repr(self.cfg_max),
                "negative_prompt": json.dumps(self.negative_prompt),
                "info": json.dumps(info or self.info, sort_keys=True)}
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        tensors |= {f"embed.{k}": v for k, v in self.state_dict().items()}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(str(path) + ".tmp")
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
                  metadata=meta)
        tmp.replace(path)


def new_student(model, cfg_max: float, negative_prompt: Optional[str] = None):
    """A trainable copy of `model` with a fresh (zero) w embedding installed: (copy, embedding).
    `model` itself is left untouched."""
    student = copy.deepcopy(model)
    remove(student)  # a w embedding `model` may carry is not the new student's
    embedding = GuidedStudent(student, cfg_max, negative_prompt).to(student.mask_token.device)
    install(student, embedding)
    return student, embedding


def load(model, path: str | Path):
    """The guidance-distilled student in `path` (written by GuidedStudent.save) as a new model
    shaped like `model`, its w embedding installed; `model` itself is left untouched."""
    meta, state = read_adapter_file(
        path, FORMAT, "guidance-distilled student",
        "distil one with `python ablations/run.py sampler.guidance=distilled ...` (cached next to "
        "the training checkpoint) or fix sampler.guided_student",
        "sampler.guided_student", "GuidedStudent.save")
    student, embedding = new_student(model, float(meta["cfg_max"]),
                                     json.loads(meta.get("negative_prompt", "null")))
    parts = {"model.": {}, "embed.": {}}
    for key, value in state.items():
        prefix = "model." if key.startswith("model.") else "embed."
        parts[prefix][key[len(prefix):]] = value
    try:
        student.load_state_dict(parts["model."])
        embedding.load_state_dict(parts["embed."])
    except RuntimeError as exc:
        raise ValueError(f"guidance-distilled student {path} does not fit this model ({exc}): it "
                         "was distilled from another width/depth") from exc
    embedding.info = json.loads(meta.get("info") or "{}")
    embedding.source = str(path)
    return student.eval()


def install(model, embedding: GuidedStudent) -> None:
    """Mark `model` as a guidance-distilled student with this w embedding (outside its module
    tree: its state_dict stays that of a VideoMAR)."""
    object.__setattr__(model, ATTR, embedding.to(model.mask_token.device))


def remove(model) -> None:
    model.__dict__.pop(ATTR, None)


def installed(model) -> Optional[GuidedStudent]:
    return model.__dict__.get(ATTR)


def resolve(model, cfg) -> GuidedStudent:
    """sampler.guidance=distilled: `model` must be a student (from `load` or distillation),
    checked against sampler.cfg_scale and sampler.negative_prompt."""
    embedding = installed(model)
    if embedding is None:
        raise ValueError("sampler.guidance=distilled samples a guidance-distilled student, and "
                         "this model is not one: sample the model core.sun.guided_student.load("
                         "model, sampler.guided_student) returns (ablations/run.py distils and "
                         "loads one)")
    if next(embedding.parameters()).device != model.mask_token.device:  # model moved
        install(model, embedding)
    embedding.check(cfg.cfg_scale, cfg.negative_prompt)
    return embedding
