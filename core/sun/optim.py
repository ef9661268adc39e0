"""Small training helpers shared by the UNet adapter (distill.py, teacher.py) and the head
adapter (head_distill.py): the learning-rate schedule, one clipped update, progress logs."""

from __future__ import annotations

from typing import Callable

import torch


def cosine_lr(step: int, cfg_lr: float, warmup: int, num_steps: int) -> float:
    """Linear warmup, then cosine decay to 10%."""
    if step < warmup:
        return cfg_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, num_steps - warmup)
    return cfg_lr * (0.1 + 0.45 * (1 + torch.cos(torch.tensor(progress * torch.pi)).item()))


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, params: list,
                   max_norm: float = 1.0) -> None:
    """One adapter update: backward, clip the gradient norm to `max_norm`, step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    opt.step()


def log_progress(curves: dict[str, list[float]], step: int, num_steps: int,
                 log: Callable[[str], None], tag: str) -> None:
    """At each quarter of training, log the mean CFG (and MSC) loss of that quarter."""
    w = max(1, num_steps // 4)
    if (step + 1) % w:
        return
    msc = f" msc {sum(curves['msc'][-w:]) / w:.4f}" if curves["msc"] else ""
    log(f"  [{tag}] step {step + 1}/{num_steps} cfg {sum(curves['cfg'][-w:]) / w:.4f}{msc}")
