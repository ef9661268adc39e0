"""torch.profiler traces of a training step and of sampling, viewable in TensorBoard or Perfetto.

    python bench/profiler.py                         # tiny preset, train + sample, CPU (+ CUDA)
    python bench/profiler.py --what train --preset small --active 5 --out runs/profile
    tensorboard --logdir runs/profile               # needs the `profile` extra (torch-tb-profiler)

Each profiled "step" is one training step (forward, backward, clip, AdamW) or one sampling call
(`sample_latents`, a conditioning frame + --gen-frames frames). The profiler runs a
wait/warmup/active schedule (torch.profiler.schedule) and writes one Chrome-trace JSON per
active window through `tensorboard_trace_handler` into OUT/<what>/. The plugin is deprecated
upstream (github.com/pytorch/kineto, tb_plugin README); the same files open in https://ui.perfetto.dev.
Regions "backbone" and "head" are marked with record_function, so the table below splits the
time between the transformer and the diffusion head, and by operator class.

Named profiler.py, not profile.py: a bench/profile.py would shadow the standard library's
`profile` module for every `python bench/<script>.py` (torch._dynamo imports cProfile, which
imports profile) and break them all.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path


from bench._common import CpuMeter, base_parser, bench_config, finish, format_table, setup_threads

import torch
from torch.profiler import ProfilerActivity, profile, record_function, schedule, tensorboard_trace_handler

from core.config import SamplerConfig, TrainConfig, preset
from core.model import VideoMAR
from core.sampler import sample_latents
from core.train import build_optimizer, derive_seed

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul")
ATTENTION_KEY = "scaled_dot_product"


# The columns of paper_tables/profile.md (the question this bench answers); every metric goes
# to paper_tables/profile.csv.
HEADLINE = ("train_steps_ms", "train_backbone_ms", "train_head_ms", "train_attention_share",
            "sample_steps_ms", "sample_backbone_ms", "sample_head_ms", "sample_attention_share")


def _mark(model: VideoMAR) -> None:
    """Label the backbone and head calls of this instance with record_function regions."""
    backbone, head_sample, head_loss = model.backbone, model.head.sample, model.head.loss

    def wrap(fn, name):
        def inner(*args, **kwargs):
            with record_function(name):
                return fn(*args, **kwargs)
        return inner

    model.backbone = wrap(backbone, "backbone")
    model.head.sample = wrap(head_sample, "head")
    model.head.loss = wrap(head_loss, "head")


def _shares(prof, use_cuda: bool) -> dict:
    """Self time (ms) per operator class and the backbone/head region totals."""
    events = prof.key_averages()
    attr = "self_device_time_total" if use_cuda else "self_cpu_time_total"
    total = sum(getattr(e, attr) for e in events) or 1.0
    matmul = sum(getattr(e, attr) for e in events if e.key in MATMUL_OPS)
    attention = sum(getattr(e, attr) for e in events if ATTENTION_KEY in e.key)
    regions = {e.key: e.cpu_time_total for e in events if e.key in ("backbone", "head")}
    step_total = sum(e.cpu_time_total for e in events if e.key.startswith("ProfilerStep"))
    top = sorted(events, key=lambda e: getattr(e, attr), reverse=True)[:12]
    return {"self_total_ms": total / 1e3, "matmul_share": matmul / total,
            "attention_share": attention / total,
            "other_share": 1 - (matmul + attention) / total,
            "backbone_ms": regions.get("backbone", 0.0) / 1e3,
            "head_ms": regions.get("head", 0.0) / 1e3, "steps_ms": step_total / 1e3,
            "top_ops": [{"op": e.key, "self_ms": getattr(e, attr) / 1e3, "calls": e.count,
                         "gflop": (e.flops or 0) / 1e9} for e in top]}


def run(what: str, args, cfg, device, activities) -> dict:
    model = VideoMAR(cfg, seed=args.seed).to(device)
    _mark(model)
    grid = (args.grid, args.grid)
    g = torch.Generator().manual_seed(args.seed)
    tokens = torch.randn(args.batch, args.frames, *grid, cfg.token_dim, generator=g).clamp(-1, 1)
    tokens = tokens.to(device)
    captions = ["a red ball bounces"] * args.batch if cfg.text_dim > 0 else None
    if what == "train":
        model.train()
        train_cfg = TrainConfig()
        optimizer = build_optimizer(model, train_cfg)

        def step(i):
            gen = torch.Generator().manual_seed(derive_seed(args.seed, "draws", i))
            draws = model.sample_train_draws(args.batch, args.frames, grid, gen)
            loss = model(tokens, captions, draws)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
            optimizer.step()
    else:
        model.eval()
        sampler = SamplerConfig(num_iter=args.num_iter, num_sampling_steps=args.gen_steps)

        def step(i):
            with torch.no_grad():
                sample_latents(model, tokens[:, :cfg.num_cond_frames],
                               cfg.num_cond_frames + args.gen_frames, sampler,
                               torch.Generator().manual_seed(i), captions)
    out_dir = Path(args.out) / what
    out_dir.mkdir(parents=True, exist_ok=True)
    before = set(out_dir.glob("*.json"))
    sched = schedule(wait=args.wait, warmup=args.warmup, active=args.active, repeat=1)
    with profile(activities=activities, schedule=sched, record_shapes=True, profile_memory=True,
                 with_flops=True,
                 on_trace_ready=tensorboard_trace_handler(str(out_dir), worker_name=what)) as prof:
        for i in range(args.wait + args.warmup + args.active):
            step(i)
            if device.type == "cuda":
                torch.cuda.synchronize()
            prof.step()
    traces = sorted(str(p) for p in set(out_dir.glob("*.json")) - before)
    if not traces:
        raise RuntimeError(f"the profiler wrote no trace into {out_dir}")
    use_cuda = ProfilerActivity.CUDA in activities
    return {"traces": traces, **_shares(prof, use_cuda),
            "table": prof.key_averages().table(
                sort_by="self_cuda_time_total" if use_cuda else "self_cpu_time_total", row_limit=12)}


def main(argv=None) -> dict:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--what", default="train,sample", help="train, sample or both (comma list)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--frames", type=int, default=8, help="latent frames of the training clip")
    p.add_argument("--grid", type=int, default=8)
    p.add_argument("--gen-frames", type=int, default=1, help="frames generated per sampling step")
    p.add_argument("--gen-steps", type=int, default=10,
                   help="head steps per token (default 10; the model's 50 give ~90 MB traces)")
    p.add_argument("--num-iter", type=int, default=8)
    p.add_argument("--wait", type=int, default=1)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--active", type=int, default=3)
    p.add_argument("--out", default="runs/profile", help="trace directory (TensorBoard logdir)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    threads = setup_threads(args.threads)
    whats = [w.strip() for w in args.what.split(",") if w.strip()]
    if bad := [w for w in whats if w not in ("train", "sample")]:
        raise SystemExit(f"--what: unknown {bad}; choose train and/or sample")
    if min(args.wait, args.warmup) < 0 or args.active < 1:
        raise SystemExit("--wait/--warmup must be >= 0 and --active >= 1")
    device = torch.device(args.device)
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    cfg = preset(args.preset)
    if cfg.tokenizer.kind != "patch":
        cfg = dataclasses.replace(cfg, tokenizer=dataclasses.replace(cfg.tokenizer, kind="patch"))
    results = {}
    with CpuMeter() as meter:
        for what in whats:
            results[what] = run(what, args, cfg, device, activities)
    lines = []
    for what, res in results.items():
        lines += [f"== {what}: {args.active} active steps, traces in {Path(args.out) / what}",
                  res.pop("table")]
    lines.append(format_table(
        ["what", "backbone ms", "head ms", "matmul share", "attention share", "other share",
         "trace files"],
        [[w, r["backbone_ms"], r["head_ms"], r["matmul_share"], r["attention_share"],
          r["other_share"], len(r["traces"])] for w, r in results.items()]))
    lines.append(f"open: tensorboard --logdir {args.out}   (or load a .pt.trace.json in "
                 f"https://ui.perfetto.dev); threads={threads} load/cpu: {meter.info()}")
    metrics = {"activities": [str(a).split(".")[-1] for a in activities], "threads": threads,
               "device": str(device), "logdir": args.out, "machine": meter.info(),
               **{f"{w}_{k}": v for w, r in results.items() for k, v in r.items()}}
    return finish("profile", args, bench_config("profile", args, cfg), metrics, meter.wall,
                  "\n".join(lines), headline=HEADLINE)


if __name__ == "__main__":
    main()
