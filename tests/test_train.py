"""Training loop properties: exact resume, DDP == 1 process, warmup, EMA math, weight decay, NaN.

All runs use a very small VideoMAR (2 layers, width 64) on 3-frame 16x16 random clips (4x4 tokens
per frame) in fp32 on CPU, so the whole file takes seconds.
"""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import Dataset

from core.config import ModelConfig, TrainConfig
from core.model import VideoMAR
from core.train import (EMA, CheckpointError, NonFiniteLossError, StepBatchSampler,
                        build_optimizer, load_checkpoint, lr_at, no_weight_decay_names, train)

SEED = 7
NUM_CLIPS = 10  # not a multiple of the batch: global batches straddle epoch boundaries


class RandomVideos(Dataset):
    """Clip i is uniform noise from a generator seeded with i (deterministic, no global RNG)."""

    def __init__(self, n: int = NUM_CLIPS, frames: int = 3, size: int = 16):
        self.n, self.frames, self.size = n, frames, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(1000 + i)
        video = torch.rand(self.frames, 3, self.size, self.size, generator=g)
        return {"video": video, "caption": f"a clip number {i}", "index": i}



def tiny_model() -> VideoMAR:
    cfg = ModelConfig(width=64, depth=2, num_heads=2, text_dim=32, text_len=8, text_vocab=256,
                      head_depth=2, head_width=64, diffusion_batch_mul=2, cond_drop_prob=0.5)
    return VideoMAR(cfg, seed=0)


def train_cfg(**kw) -> TrainConfig:
    base = dict(steps=4, batch_size=4, lr=1e-3, warmup_steps=2, ckpt_every=2, log_every=1,
                ema_decay=0.9, grad_clip=1.0)
    return TrainConfig(**{**base, **kw})


def run(out_dir, **kw) -> tuple[VideoMAR, dict]:
    model = tiny_model()
    summary = train(model, RandomVideos(), train_cfg(**kw), seed=SEED, out_dir=out_dir,
                    progress=False)
    return model, summary


def assert_same_params(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if atol == 0.0:
            assert torch.equal(a[name], b[name]), f"{name} differs"
        else:
            diff = (a[name] - b[name]).abs().max().item()
            assert diff <= atol, f"{name}: max abs diff {diff:.3g} > {atol}"


# ----------------------------------------------------------------------------- resume


def test_resume_continues_exactly(tmp_path):
    straight, s_full = run(tmp_path / "straight")
    _, s_half = run(tmp_path / "split", steps=2)
    resumed, s_resumed = run(tmp_path / "split")  # a new model object picks up the checkpoint
    assert s_half["steps"] == 2 and s_resumed["resumed_from"] == 2 and s_resumed["steps"] == 4
    assert s_resumed["losses"] == s_full["losses"]
    assert s_resumed["losses"][:2] == s_half["losses"]
    assert all(math.isfinite(x) for x in s_full["losses"])
    assert_same_params(straight.state_dict(), resumed.state_dict())
    ema_a, ema_b = EMA(tiny_model(), 0.9), EMA(tiny_model(), 0.9)
    ck_a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt", ema=ema_a)
    ck_b = load_checkpoint(tmp_path / "split" / "checkpoint.pt", ema=ema_b)
    assert ck_a["step"] == ck_b["step"] == 4 and ema_a.num_updates == ema_b.num_updates == 4
    assert_same_params(ema_a.shadow, ema_b.shadow)
    # Atomic writes leave no temp files behind; a finished run resumes to a no-op.
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == [
        "checkpoint.prev.pt", "checkpoint.pt"]  # the previous checkpoint is kept (core/checkpoint)
    _, again = run(tmp_path / "split")
    assert again["resumed_from"] == 4 and again["losses"] == s_full["losses"]


def test_corrupt_checkpoint_names_the_file(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="checkpoint.pt"):
        run(tmp_path, steps=1)


def test_resume_refuses_a_different_seed(tmp_path):
    run(tmp_path, steps=1)
    with pytest.raises(CheckpointError, match="seed"):
        train(tiny_model(), RandomVideos(), train_cfg(steps=2), seed=SEED + 1, out_dir=tmp_path,
              progress=False)


# ----------------------------------------------------------------------------- DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = tiny_model()
        seen = []  # what this rank's forward passes get: (clips, checksum of their tokens)
        model.register_forward_pre_hook(
            lambda module, args: seen.append((args[0].shape[0], float(args[0].sum()))))
        summary = train(model, RandomVideos(), train_cfg(steps=2), seed=SEED, out_dir=out_dir,
                        progress=False)
        torch.save({"params": model.state_dict(), "losses": summary["losses"], "seen": seen},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_equals_one_process(tmp_path):
    mp.start_processes(_ddp_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2,
                       join=True, start_method="spawn")
    single, s_single = run(tmp_path / "single", steps=2)
    ranks = [torch.load(tmp_path / "ddp" / f"rank{r}.pt") for r in range(2)]
    assert_same_params(ranks[0]["params"], ranks[1]["params"])  # DDP keeps replicas in sync
    # each rank trains its own half of the global batch of 4, not the whole batch
    assert [n for n, _ in ranks[0]["seen"]] == [n for n, _ in ranks[1]["seen"]] == [2, 2]
    assert all(a != b for (_, a), (_, b) in zip(ranks[0]["seen"], ranks[1]["seen"]))
    assert_same_params(single.state_dict(), ranks[0]["params"], atol=1e-6)
    assert ranks[0]["losses"] == pytest.approx(s_single["losses"], abs=1e-6)
    ckpt = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")  # written by rank 0 only
    assert ckpt["step"] == 2 and ckpt["world_size"] == 2


def test_rank_slices_tile_the_global_batch():
    whole = StepBatchSampler(NUM_CLIPS, SEED, 4, 0, 6)
    parts = [StepBatchSampler(NUM_CLIPS, SEED, 4, 0, 6, rank=r, world=2) for r in range(2)]
    for step, batch in enumerate(whole):
        assert parts[0].indices(step) + parts[1].indices(step) == batch
    # Five steps of 4 cover two full epochs of 10 clips, each clip once per epoch.
    stream = [i for s in range(5) for i in whole.indices(s)]
    assert sorted(stream[:10]) == sorted(stream[10:]) == list(range(NUM_CLIPS))
    assert stream[:10] != stream[10:]
    assert list(StepBatchSampler(NUM_CLIPS, SEED, 4, 3, 6)) == list(whole)[3:]
    with pytest.raises(ValueError, match="divisible"):
        StepBatchSampler(NUM_CLIPS, SEED, 5, 0, 1, rank=0, world=2)


# ----------------------------------------------------------------------------- optimisation


def test_lr_warmup_then_constant():
    cfg = train_cfg(lr=2e-3, warmup_steps=4)
    lrs = [lr_at(s, cfg) for s in range(8)]
    assert lrs[:4] == pytest.approx([5e-4, 1e-3, 1.5e-3, 2e-3])
    assert lrs[4:] == [2e-3] * 4
    assert lr_at(0, train_cfg(lr=2e-3, warmup_steps=0)) == 2e-3


def test_cosine_lr_decays_from_lr_to_the_floor_with_progress():
    cfg = train_cfg(lr=2e-3, warmup_steps=2, steps=10, lr_schedule="cosine", min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg) for s in range(2, 11)]
    assert lr_at(0, cfg) == pytest.approx(1e-3)  # warmup is unchanged
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert lr_at(10, cfg) == pytest.approx(2e-4)  # the floor at the end of training
    assert lr_at(5, cfg) == pytest.approx(1.1e-3)  # halfway: the mean of lr and the floor
    assert lr_at(3, cfg, progress=0.5) == pytest.approx(1.1e-3)  # FLOP-budget progress wins
    with pytest.raises(ValueError, match="lr_schedule"):
        train_cfg(lr_schedule="linear")


def test_ema_math_and_swap():
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(0.0)
    ema = EMA(model, decay=0.75)
    for value in (3.0, 5.0):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(model)
    # ema = 0.75 * (0.75 * 1 + 0.25 * 3) + 0.25 * 5 = 2.375; the bias stays 0
    expected = torch.full((1, 2), 2.375)
    assert torch.allclose(ema.shadow["weight"], expected)
    assert torch.equal(ema.shadow["bias"], torch.zeros(1)) and ema.num_updates == 2
    with ema.swapped(model):
        assert torch.allclose(model.weight, expected)
    assert torch.equal(model.weight, torch.full((1, 2), 5.0))  # live weights restored
    other = EMA(nn.Linear(2, 1), decay=0.1)
    other.load_state_dict(ema.state_dict())
    assert other.decay == 0.75 and torch.equal(other.shadow["weight"], ema.shadow["weight"])
    other.copy_to(model)
    assert torch.allclose(model.weight, expected)


def test_no_weight_decay_on_head_norms_and_embeddings():
    model, cfg = tiny_model(), train_cfg(weight_decay=0.05)
    opt = build_optimizer(model, cfg)
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert len(decay_of) == len(params)  # every parameter in exactly one group
    skip = no_weight_decay_names(model)
    for name, p in params.items():
        expected = 0.0 if (p.ndim == 1 or name.startswith("head.") or "mask_token" in name
                           or "null" in name or "embed" in name.split(".")[-1]
                           or name == "text_encoder.token_embed.weight") else 0.05
        assert decay_of[id(p)] == expected, name
        assert (name in skip) == (expected == 0.0), name
    assert any(n.startswith("head.") and p.ndim == 2 for n, p in params.items())
    assert decay_of[id(params["token_embed.weight"])] == 0.05  # a Linear projection keeps decay
    assert opt.defaults["betas"] == (cfg.beta1, cfg.beta2)


def test_non_finite_loss_names_the_step(tmp_path):
    model, calls = tiny_model(), []
    forward = model.forward

    def poisoned(*args, **kwargs):
        calls.append(1)
        loss = forward(*args, **kwargs)
        return loss * float("nan") if len(calls) == 3 else loss

    model.forward = poisoned
    with pytest.raises(NonFiniteLossError, match="step 2"):
        train(model, RandomVideos(), train_cfg(), seed=SEED, out_dir=tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2  # the last good one is kept


def test_fused_ema_update_equals_the_per_tensor_rule_bit_for_bit():
    model = VideoMAR(ModelConfig(width=32, depth=1, num_heads=2, head_width=32), seed=0)
    ema = EMA(model, 0.9)
    expected = {n: t.clone() for n, t in ema.shadow.items()}
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g))
        ema.update(model)
        for name, p in EMA._params(model):
            expected[name].mul_(0.9).add_(p.detach(), alpha=0.1)
    assert all(torch.equal(expected[n], ema.shadow[n]) for n in expected)
    assert ema.num_updates == 3


def test_gradient_accumulation_equals_the_whole_batch():
    """2 micro-batches of 4 accumulate to the step of one batch of 8: same draws, same losses,
    same weights after every step (fp32 summation order aside)."""
    whole, a = run(None, batch_size=8, steps=3)
    accumulated, b = run(None, batch_size=8, steps=3, grad_accum=2)
    assert a["losses"] == pytest.approx(b["losses"], rel=1e-5)
    assert a["grad_norms"] == pytest.approx(b["grad_norms"], rel=1e-4)
    for (name, p), q in zip(whole.named_parameters(), accumulated.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)
    with pytest.raises(Exception, match="grad_accum=3 must be >= 1 and divide"):
        train_cfg(batch_size=8, grad_accum=3)


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    def grads(checkpoint: bool):
        model = tiny_model()
        model.cfg.grad_checkpoint = checkpoint
        tokens = torch.randn(2, 3, 4, 4, model.cfg.token_dim,
                             generator=torch.Generator().manual_seed(0))
        loss = model.loss(tokens, ["a", "b"], torch.Generator().manual_seed(1))
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                               if p.grad is not None}

    (loss_a, a), (loss_b, b) = grads(False), grads(True)
    assert torch.equal(loss_a, loss_b) and a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-7, msg=name)


def test_each_rank_picks_its_own_gpu_before_building_anything(monkeypatch):
    """rank_device: LOCAL_RANK's GPU for None and for a bare "cuda" (not GPU 0 for every rank),
    made current for NCCL; an explicit index or the CPU is kept."""
    from core.train import rank_device

    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert rank_device() == torch.device("cuda", 3) and current == [torch.device("cuda", 3)]
    assert rank_device("cuda") == torch.device("cuda", 3)
    assert rank_device("cuda:1") == torch.device("cuda", 1)
    assert rank_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert rank_device() == torch.device("cpu")
