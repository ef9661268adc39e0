"""The SpeedUpNet adapter as diffusers attention processors for any UNet2DConditionModel.

Follows SUN (arXiv 2312.08887, sec. 3) and its released inference code (own implementation,
nothing copied). The UNet is called once per step with a joint
context [positive | negative] along the token axis (B, 2L, D). Every cross-attention layer
(`attn2`) gets a SUNAttnProcessor; self-attention (`attn1`) keeps its processor. Per layer, from
the frozen query Q:
    Ap = Attn(Q, Wk cp, Wv cp)                     frozen positive branch
    An = Attn(Q, Wk_neg cn, Wv_neg cn)             trainable negative branch
    Ae = Attn(Q, Wk_pos2 cp, Wv_pos2 cp)           trainable extra positive branch (add_pos)
    X' = alpha_X * (||Ap|| / ||X||) * X + beta_X    attention normalisation, X in {An, Ae}
    out = Wout(Ap - An' + Ae')                     then the layer's usual residual/rescale
alpha/beta are per-channel, initialised to 1/0. The norm is per sample over (tokens, channels)
(`attn_norm="sample"`, our default); "batch" reproduces the release's single whole-tensor
norm; "none" drops normalisation and the affine (the ablation).

Initialisation [I: the paper's is unknown]: the new K/V projections start as copies of the
frozen ones. Then, for a negative equal to the positive, An' = Ae' = Ap and the adapter output
equals the base UNet's output on the positive prompt, exactly as CFG with cn = cp gives
eps(cp) for every guidance scale; with an empty negative the start is an attention-space guidance
of strength ~2. Every adapter tensor is created on the device and in the dtype of the layer it
wraps, and while installed the processors are submodules of the UNet, so `unet.to(...)` moves
them too (after remove() they stay where they are). Only adapter weights are saved/loaded
(safetensors), keyed by processor name, so the same code trains and runs on SD1.5 (16 layers,
38.4M parameters with add_pos).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention
from safetensors.torch import load_file, save_file
from torch import nn

ATTN_NORMS = ("sample", "batch", "none")
NORM_EPS = 1e-6


def _is_cross_attention(name: str) -> bool:
    return name.endswith("attn2.processor")


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, heads, N, C / heads)."""
    b, n, c = x.shape
    return x.view(b, n, num_heads, c // num_heads).transpose(1, 2)


def joint_context(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """The single-pass context [positive | negative]: (B, L, D) x 2 -> (B, 2L, D)."""
    if positive.shape != negative.shape:
        raise ValueError(f"positive {tuple(positive.shape)} and negative "
                         f"{tuple(negative.shape)} embeddings must have the same shape; encode "
                         "the empty negative prompt like any other prompt")
    return torch.cat([positive, negative], dim=1)


class SUNAttnProcessor(nn.Module):
    """Cross-attention processor with the SUN negative and extra-positive branches."""

    def __init__(self, attn: Attention, add_pos: bool = True, attn_norm: str = "sample"):
        super().__init__()
        if attn_norm not in ATTN_NORMS:
            raise ValueError(f"attn_norm={attn_norm!r}: choose one of {ATTN_NORMS}")
        self.add_pos, self.attn_norm = add_pos, attn_norm
        # every tensor created here lives where the wrapped layer's K projection lives
        like = {"device": attn.to_k.weight.device, "dtype": attn.to_k.weight.dtype}
        width = attn.to_k.out_features
        self.to_k_neg, self.to_v_neg = self._copy(attn.to_k), self._copy(attn.to_v)
        self.alpha_neg = nn.Parameter(torch.ones(width, **like))
        self.beta_neg = nn.Parameter(torch.zeros(width, **like))
        if add_pos:
            self.to_k_pos2, self.to_v_pos2 = self._copy(attn.to_k), self._copy(attn.to_v)
            self.alpha_pos2 = nn.Parameter(torch.ones(width, **like))
            self.beta_pos2 = nn.Parameter(torch.zeros(width, **like))

    @staticmethod
    def _copy(linear: nn.Linear) -> nn.Linear:
        new = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None,
                        device=linear.weight.device, dtype=linear.weight.dtype)
        new.load_state_dict(linear.state_dict())
        return new

    def _attend(self, attn: Attention, q: torch.Tensor, context: torch.Tensor,
                to_k: nn.Module, to_v: nn.Module) -> torch.Tensor:
        """Multi-head attention of q (B, heads, N, d) over context (B, L, D) -> (B, N, C)."""
        k, v = _heads(to_k(context), attn.heads), _heads(to_v(context), attn.heads)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, d)
        return out.transpose(1, 2).flatten(2)

    def _normalise(self, x: torch.Tensor, ref: torch.Tensor, alpha: torch.Tensor,
                   beta: torch.Tensor) -> torch.Tensor:
        """Rescale x (B, N, C) to ref's norm (per sample or whole tensor), then alpha * x + beta."""
        if self.attn_norm == "none":
            return x
        dims = (1, 2) if self.attn_norm == "sample" else (0, 1, 2)
        norm = lambda y: torch.linalg.vector_norm(y, dim=dims, keepdim=True)  # noqa: E731
        ratio = norm(ref) / norm(x).clamp_min(NORM_EPS)
        return alpha * (ratio * x) + beta

    def __call__(self, attn: Attention, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 **kwargs) -> torch.Tensor:
        if encoder_hidden_states is None:
            raise ValueError("SUNAttnProcessor is for cross-attention layers (attn2) only")
        if attention_mask is not None:
            raise ValueError("SUN processors do not support attention masks (neither does the "
                             "released code); pass attention_mask=None")
        if encoder_hidden_states.shape[1] % 2:
            raise ValueError(f"SUN expects the joint context [positive | negative] with 2L "
                             f"tokens; got {encoder_hidden_states.shape[1]} tokens. Build it with "
                             "core.sun.adapter.joint_context(pos, neg)")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)  # (B, HW, C)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        q = _heads(attn.to_q(hidden_states), attn.heads)  # frozen query, shared by all branches
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        pos, neg = encoder_hidden_states.chunk(2, dim=1)  # (B, L, D) each
        a_pos = self._attend(attn, q, pos, attn.to_k, attn.to_v)
        a_neg = self._attend(attn, q, neg, self.to_k_neg, self.to_v_neg)
        out = a_pos - self._normalise(a_neg, a_pos, self.alpha_neg, self.beta_neg)
        if self.add_pos:
            a_ext = self._attend(attn, q, pos, self.to_k_pos2, self.to_v_pos2)
            out = out + self._normalise(a_ext, a_pos, self.alpha_pos2, self.beta_pos2)
        out = attn.to_out[1](attn.to_out[0](out.to(q.dtype)))  # output projection, dropout
        if input_ndim == 4:
            out = out.transpose(1, 2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class SUNAdapter(nn.Module):
    """The installed processors (a ModuleDict keyed by layer name) plus what remove() restores."""

    def __init__(self, unet: UNet2DConditionModel, add_pos: bool = True,
                 attn_norm: str = "sample"):
        super().__init__()
        self.add_pos, self.attn_norm = add_pos, attn_norm
        modules = dict(unet.named_modules())
        current = unet.attn_processors
        self.names = [n for n in current if _is_cross_attention(n)]
        if not self.names:
            raise ValueError("this UNet has no cross-attention (attn2) layers to adapt; SUN needs "
                             "a text-conditioned UNet2DConditionModel")
        self.layers = nn.ModuleDict({
            _key(n): SUNAttnProcessor(modules[n.removesuffix(".processor")], add_pos, attn_norm)
            for n in self.names})
        self._original = current  # every processor, to restore exactly what was there
        self._unet = [unet]  # a list, so the UNet is not registered as a submodule

    def processors(self) -> dict:
        """{processor name: processor} for unet.set_attn_processor, self-attention unchanged."""
        return {n: (self.layers[_key(n)] if _is_cross_attention(n) else p)
                for n, p in self._original.items()}

    def remove(self) -> None:
        """Restore the UNet's original processors (the UNet is then bit-identical to before)."""
        self._unet[0].set_attn_processor(dict(self._original))

    def attach(self) -> None:
        """Put these processors back after remove(), e.g. to alternate SUN and the plain UNet."""
        _refuse_if_installed(self._unet[0])
        self._unet[0].set_attn_processor(self.processors())

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the adapter's tensors, keyed '<processor name>.<param>'."""
        return {f"{name}.{p}": t.detach().contiguous() for name in self.names
                for p, t in self.layers[_key(name)].state_dict().items()}

    def save(self, path: str | Path) -> None:
        meta = {"add_pos": str(self.add_pos), "attn_norm": self.attn_norm, "format": "sun-adapter"}
        save_file(self.adapter_state_dict(), str(path), metadata=meta)

    def load(self, path: str | Path) -> None:
        """Load adapter weights saved by save(); names and shapes must match this UNet."""
        tensors = load_file(str(path))
        expected = self.adapter_state_dict()
        missing = sorted(set(expected) - set(tensors))
        unexpected = sorted(set(tensors) - set(expected))
        if missing or unexpected:
            raise ValueError(f"{path}: adapter weights do not fit this UNet (missing {missing[:3]}"
                             f"{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}"
                             f"{'...' if len(unexpected) > 3 else ''}); check add_pos and the UNet")
        for name in self.names:
            prefix = f"{name}."
            own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            layer = self.layers[_key(name)]
            for k, v in own.items():
                if v.shape != layer.state_dict()[k].shape:
                    raise ValueError(f"{path}: {prefix}{k} has shape {tuple(v.shape)}, this UNet "
                                     f"needs {tuple(layer.state_dict()[k].shape)}")
            layer.load_state_dict(own)


def _refuse_if_installed(unet: UNet2DConditionModel) -> None:
    if any(isinstance(p, SUNAttnProcessor) for p in unet.attn_processors.values()):
        raise ValueError("SUN is already installed on this UNet; call adapter.remove() first")


def _key(name: str) -> str:
    return name.replace(".", "__")  # ModuleDict keys cannot contain dots


def install_sun(unet: UNet2DConditionModel, add_pos: bool = True,
                attn_norm: str = "sample") -> SUNAdapter:
    """Freeze `unet` and put SUN processors on all its cross-attention layers.

    Returns the adapter (its parameters are the only trainable ones). Call adapter.remove() to
    restore the original processors. Installing twice without removing is refused.
    """
    _refuse_if_installed(unet)
    unet.requires_grad_(False)
    adapter = SUNAdapter(unet, add_pos, attn_norm)
    unet.set_attn_processor(adapter.processors())
    adapter.requires_grad_(True)
    return adapter


def load_sun(unet: UNet2DConditionModel, path: str | Path) -> SUNAdapter:
    """Install SUN with the options stored in the file, then load its weights."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != "sun-adapter":
        raise ValueError(f"{path} is not a SUN adapter file written by SUNAdapter.save")
    adapter = install_sun(unet, add_pos=meta["add_pos"] == "True", attn_norm=meta["attn_norm"])
    adapter.load(path)
    return adapter
