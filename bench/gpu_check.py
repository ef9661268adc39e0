"""GPU check: the figures of the scale path that only a CUDA device can give, as one JSON line.

    python bench/gpu_check.py               # or: make gpu-check
    python bench/gpu_check.py --depth 8 --frames 7 --steps 10

Without CUDA it prints {"gpu_check": "skipped: no CUDA device", ...} and exits 0. With a GPU:

* train_*: bf16-autocast training steps (forward, backward, AdamW) of a paper-shaped layer slice:
  `--depth` VideoMAR blocks at the paper preset's width 1536 / 24 heads, on `--frames` latent
  frames of the paper's 30x48-token grid. MFU = core.flops' analytic FLOPs of the timed steps /
  their time / the device's dense bf16 peak. The peak is an assumption: vendor datasheet values
  by device name (bench/cost.py GPU_PEAK_TFLOPS, SXM parts), or --peak-tflops.
* kv_cache_*: cached == recomputed sampling on CUDA (fp32, same device generator), the largest
  pixel difference, and the same under bf16 autocast (reported, not judged).
* ddp_*: 2-process DDP (torch.multiprocessing, NCCL) through core.train as ablations/run.py runs
  it; each rank reports the memory it holds on the other rank's GPU (must be 0) and the device of
  its weights. Skipped with a reason on fewer than 2 GPUs.
* head_*: device-to-host copies and host syncs (torch.profiler) of the diffusion head's sampling
  chain with a generator on the device (core.sampler.device_generator), and of a whole
  sample_video call; head_steps is the chain's length.

It writes no results-table row: the figures go into the README with the device name.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

SKIPPED = "skipped: no CUDA device"
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
SPAN = "gpu_check.profiled"
CAPTION = "a red ball rolls across a wooden table"


def count_sync_events(names: Iterable[str]) -> dict:
    """Device-to-host copies ("Memcpy DtoH ...") and host-side CUDA syncs among profiler events."""
    names = list(names)
    return {"dtoh_copies": sum("Memcpy DtoH" in n for n in names),
            "host_syncs": sum(n.startswith(SYNC_CALLS) for n in names)}


def profile_syncs(fn: Callable[[], Any]) -> tuple[Any, dict]:
    """Run fn() under torch.profiler -> (its result, count_sync_events of what fn caused).

    The trace ends with one synchronize so that it holds every copy fn queued; host syncs are
    counted inside fn's own span only. Without CUDA only CPU activity is recorded (both 0)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile, record_function

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        with record_function(SPAN):
            result = fn()
        if cuda:
            torch.cuda.synchronize()
    events = prof.events()
    span = next(e.time_range for e in events if e.name == SPAN and e.device_type == DeviceType.CPU)
    names = [e.name for e in events if not e.name.startswith(SYNC_CALLS)
             or span.start <= e.time_range.start <= span.end]
    return result, count_sync_events(names)


def peak_bf16_tflops(device_name: str) -> float | None:
    """Dense bf16 peak from the datasheet table by device name ("NVIDIA H200" -> h200), or None."""
    from bench.cost import GPU_PEAK_TFLOPS

    name = device_name.lower()
    return next((v for k, v in GPU_PEAK_TFLOPS.items() if k in name), None)


def train_check(args: argparse.Namespace, device: torch.device) -> dict:
    """bf16 training steps of a paper-width slice: time per step, TFLOP/s, MFU, memory."""
    from core.config import TrainConfig, preset
    from core.flops import train_step_flops
    from core.model import VideoMAR
    from core.train import build_optimizer

    cfg = preset("paper", depth=args.depth)
    model = VideoMAR(cfg).to(device).train()
    optimizer = build_optimizer(model, TrainConfig())
    grid = (30, 48)  # the paper's 480x768 frames through a 16x spatial tokenizer
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randn(args.batch, args.frames, *grid, cfg.token_dim, generator=gen).to(device)
    captions = [CAPTION] * args.batch
    draws = [model.sample_train_draws(args.batch, args.frames, grid, gen)
             for _ in range(args.warmup + args.steps)]

    def step(d) -> torch.Tensor:
        with torch.autocast("cuda", torch.bfloat16):
            loss = model(tokens, captions, d)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    for d in draws[:args.warmup]:
        step(d)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    losses = [step(d) for d in draws[args.warmup:]]
    torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    flops = sum(train_step_flops(cfg, args.batch, args.frames, grid, num_masked=d.num_masked,
                                 target_frame=d.target_frame if d.target_frame >= 0 else None)
                for d in draws[args.warmup:])
    achieved = flops / seconds / 1e12
    peak = args.peak_tflops or peak_bf16_tflops(torch.cuda.get_device_name(device))
    return {"train_shape": f"depth {args.depth} x width {cfg.width} / {cfg.num_heads} heads, "
                           f"batch {args.batch}, {args.frames} frames of {grid[0]}x{grid[1]} tokens",
            "train_params": model.num_params(), "train_attn_backend": cfg.attn_backend,
            "train_timed_steps": args.steps, "train_step_ms": 1e3 * seconds / args.steps, "train_tflops_per_s": achieved,
            "train_peak_bf16_tflops": peak, "train_mfu": achieved / peak if peak else None,
            "train_loss_finite": bool(torch.isfinite(torch.stack(losses)).all()),
            "train_peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30}


def _sampling_model(device: torch.device):
    """A small-preset model whose diffusion head gives non-zero outputs (it is zero-initialised)."""
    from core.config import preset
    from core.model import VideoMAR

    model = VideoMAR(preset("small", num_sampling_steps=20), seed=1)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.head.parameters():
            p.copy_(0.02 * torch.randn(p.shape, generator=gen))
    return model.to(device).eval()


def _sample(model, use_kv_cache: bool, bf16: bool = False) -> torch.Tensor:
    from core.sampler import device_generator, sample_video

    frame = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.autocast("cuda", torch.bfloat16, enabled=bf16):
        return sample_video(model, frame, 4, use_kv_cache=use_kv_cache, num_iter=4,
                            cfg_scale=2.5, captions=[CAPTION] * 2,
                            generator=device_generator(model, 0)).float()


def kv_cache_check(device: torch.device, tolerance: float = 1e-4) -> dict:
    """Cached vs recomputed sampling on CUDA, fp32 (judged) and bf16 autocast (reported)."""
    model = _sampling_model(device)
    fp32 = (_sample(model, True) - _sample(model, False)).abs().max().item()
    bf16 = (_sample(model, True, bf16=True) - _sample(model, False, bf16=True)).abs().max().item()
    return {"kv_cache_max_abs_diff": fp32, "kv_cache_equal": fp32 <= tolerance,
            "kv_cache_tolerance": tolerance, "kv_cache_bf16_max_abs_diff": bf16}


def head_sync_check(device: torch.device) -> dict:
    """D2H copies and host syncs of one guided head chain, and of a whole sample_video call."""
    from core.sampler import device_generator

    model = _sampling_model(device)
    z = torch.randn(64, model.cfg.width, device=device)
    generator = device_generator(model, 0)
    def run_chain():
        return model.head.sample(z, z_uncond=torch.zeros_like(z), cfg_scale=2.5,
                                 generator=generator)

    def run_sample():
        return _sample(model, True)

    run_chain(), run_sample()  # warm-up: schedules, RoPE tables and CUDA handles are made once
    _, head = profile_syncs(run_chain)
    _, whole = profile_syncs(run_sample)
    return {"head_steps": model.head.num_sampling_steps, "head_dtoh_copies": head["dtoh_copies"],
            "head_host_syncs": head["host_syncs"], "sample_dtoh_copies": whole["dtoh_copies"],
            "sample_host_syncs": whole["host_syncs"]}


def _ddp_rank(rank: int, world: int, port: int, out: str) -> None:
    """One DDP rank: pick the device from LOCAL_RANK, build, train 2 steps, report memory."""
    import torch.distributed as dist

    from core.config import DataConfig, TrainConfig, preset
    from core.data import build_dataset
    from core.model import VideoMAR
    from core.train import EMA, rank_device, train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    device = rank_device()  # as ablations/run.py: the device first, then the model on it
    dist.init_process_group("nccl", device_id=device)
    try:
        cfg, train_cfg = preset("small"), TrainConfig(steps=2, batch_size=4, ckpt_every=0)
        model = VideoMAR(cfg).to(device)
        ema = EMA(model, train_cfg.ema_decay)
        data = build_dataset(DataConfig(num_frames=3), "train", seed=0)
        train(model, data, train_cfg, seed=0, out_dir=None, device=device, ema=ema, progress=False)
        torch.cuda.synchronize(device)
        other = (rank + 1) % world
        report = {"rank": rank, "device": str(device),
                  "weights_on": sorted({str(p.device) for p in model.parameters()}),
                  "ema_on": sorted({str(t.device) for t in ema.shadow.values()}),
                  "bytes_on_other_gpu": torch.cuda.memory_allocated(other),
                  "reserved_on_other_gpu": torch.cuda.memory_reserved(other)}
        Path(out, f"rank{rank}.json").write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()


def ddp_check() -> dict:
    """Two ranks on GPUs 0 and 1: rank 1 must hold nothing on GPU 0 (and rank 0 nothing on 1)."""
    if torch.cuda.device_count() < 2:
        return {"ddp": f"skipped: needs 2 GPUs, this machine has {torch.cuda.device_count()}"}
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_ddp_rank, args=(2, port, out), nprocs=2, join=True)
        ranks = [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(2)]
    r1 = ranks[1]
    return {"ddp_rank1_bytes_on_gpu0": r1["bytes_on_other_gpu"],
            "ddp_rank1_reserved_on_gpu0": r1["reserved_on_other_gpu"],
            "ddp_rank1_weights_on": r1["weights_on"], "ddp_rank1_ema_on": r1["ema_on"],
            "ddp_rank0_bytes_on_gpu1": ranks[0]["bytes_on_other_gpu"],
            "ddp_ok": r1["bytes_on_other_gpu"] == 0 and r1["weights_on"] == ["cuda:1"]
            and r1["ema_on"] == ["cuda:1"] and ranks[0]["bytes_on_other_gpu"] == 0}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depth", type=int, default=4, help="VideoMAR blocks in the slice (paper: 36)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--frames", type=int, default=7, help="latent frames (paper: 7, 49 frames)")
    p.add_argument("--steps", type=int, default=5, help="timed training steps")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="dense bf16 peak of this GPU (default: datasheet value by device name)")
    args = p.parse_args(argv)
    for name in ("depth", "batch", "steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name}={getattr(args, name)} must be at least 1")
    if args.frames < 2:
        p.error(f"--frames={args.frames} must be at least 2 (a conditioning frame and a target)")
    if args.warmup < 0:
        p.error(f"--warmup={args.warmup} must be at least 0")
    return args


def main(argv=None) -> dict:
    """Print the report as one JSON line; a part that raises is reported as <part>_error and the
    others still run (the exit status is then 1)."""
    args = parse_args(argv)
    if not torch.cuda.is_available():
        report = {"gpu_check": SKIPPED, "torch": torch.__version__}
        print(json.dumps(report, sort_keys=True))
        return report
    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)
    report = {"gpu_check": "ran", "device": torch.cuda.get_device_name(device),
              "gpus": torch.cuda.device_count(), "torch": torch.__version__,
              "cuda": torch.version.cuda}
    parts = {"train": lambda: train_check(args, device), "kv_cache": lambda: kv_cache_check(device),
             "head": lambda: head_sync_check(device), "ddp": ddp_check}
    for name, part in parts.items():
        try:
            report.update(part())
        except Exception as err:  # noqa: BLE001 - report it and go on with the other figures
            report[f"{name}_error"] = f"{type(err).__name__}: {err}"
        torch.cuda.empty_cache()
    print(json.dumps(report, sort_keys=True))
    return report


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench.cost` from any cwd
    sys.exit(1 if any(key.endswith("_error") for key in main()) else 0)
