"""End-to-end VideoMAR sampling time of the SUN arms against MAR's 100-step CFG head, timed honestly.

    python bench/sun_speed.py [--preset tiny] [--batch 4] [--frames 8] [--repeats 5]
                              [--thread-counts 1 2] [--no-results]

Arms (the `sun_head` table's, ablations/conf/head/): ddpm100_cfg (backbone on [cond; uncond],
100 DDPM head steps on 2n rows), dpm4_cfg / dpm8_cfg (the frozen head under 4 / 8 SDE-DPM-Solver++
steps, CFG), sun4 (the head adapter: one head pass per step, backbone still doubled), sunbb_ddpm100
and sunbb_dpm4 (the backbone adapter: one backbone pass with one KV cache, unguided head), gd_dpm4
(a guidance-distilled student with a w embedding: one backbone pass on the caption alone).
Speed does not depend on the weights, so the model and adapters are freshly initialised (the
zero-initialised head output layers are randomised so clipping and solvers do real work). Each
arm samples the same `batch` clips of `frames` frames from the same first frames; bench/timing.py
times them after a warm-up in interleaved rounds and reports medians with order-statistic
intervals of the seconds and of the per-round speedup over ddpm100_cfg, at each thread count;
one kind=bench row goes to the results table. Time it alone on a quiet machine.
"""

from __future__ import annotations

import torch

from bench import timing
from bench._common import CpuMeter, base_parser, bench_config, finish, format_table
from core.config import SamplerConfig, preset
from core.model import VideoMAR
from core.sampler import sample_latents
from core.sun import backbone_adapter, guided_student, head_adapter

ARMS = {
    "ddpm100_cfg": dict(head="ddpm", num_sampling_steps=100),
    "dpm4_cfg": dict(head="dpm", num_sampling_steps=4),
    "dpm8_cfg": dict(head="dpm", num_sampling_steps=8),
    "sun4": dict(head="sun", num_sampling_steps=4),
    "sunbb_ddpm100": dict(guidance="sun", head="ddpm", num_sampling_steps=100),
    "sunbb_dpm4": dict(guidance="sun", head="dpm", num_sampling_steps=4),
    "gd_dpm4": dict(guidance="distilled", head="dpm", num_sampling_steps=4),
}
REFERENCE = "ddpm100_cfg"


def build(preset_name: str, seed: int = 0) -> VideoMAR:
    model = VideoMAR(preset(preset_name), seed=seed).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.head.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02, generator=g)
    head_adapter.install(model, head_adapter.SUNHeadAdapter(model.head.net, cfg_max=3.0))
    backbone_adapter.install(model, backbone_adapter.SUNBackboneAdapter(model, cfg_max=3.0))
    return model


def methods(model: VideoMAR, batch: int, frames: int, cfg_scale: float, num_iter: int):
    """name -> a zero-argument sampling call; every arm samples the same clips the same way."""
    grid = model.tokenizer.token_grid(32, 32)
    cond = torch.randn(batch, 1, *grid, model.cfg.token_dim,
                       generator=torch.Generator().manual_seed(1))
    captions = ["a red circle moves right"] * batch

    student, _ = guided_student.new_student(model, cfg_max=cfg_scale)  # gd_: its own copy

    def call(options: dict):
        sampler = SamplerConfig(cfg_scale=cfg_scale, num_iter=num_iter, **options)
        sampled = student if sampler.guidance == "distilled" else model
        return lambda: sample_latents(sampled, cond, frames, sampler,
                                      torch.Generator().manual_seed(0), captions)
    return {name: call(options) for name, options in ARMS.items()}


def main(argv=None) -> dict:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--num-iter", type=int, default=8)
    p.add_argument("--cfg-scale", type=float, default=3.0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--thread-counts", type=int, nargs="+", default=[1, 2],
                   help="torch thread counts to time at (default: 1 2)")
    args = p.parse_args(argv)
    if min(args.thread_counts) < 1 or args.repeats < 1 or args.frames < 2 or args.batch < 1:
        p.error("--thread-counts >= 1 each, --repeats >= 1, --frames >= 2, --batch >= 1")
    with CpuMeter() as meter:
        model = build(args.preset, args.seed)
        with torch.no_grad():
            by_threads = timing.time_methods(
                methods(model, args.batch, args.frames, args.cfg_scale, args.num_iter),
                REFERENCE, threads=args.thread_counts, repeats=args.repeats, warmup=args.warmup)
    metrics = {"batch": args.batch, "frames": args.frames, "num_iter": args.num_iter,
               "cfg_scale": args.cfg_scale, "repeats": args.repeats, "warmup": args.warmup,
               "reference": REFERENCE, **meter.info()}
    rows = []
    for n, arms in by_threads.items():
        for name, r in arms.items():
            metrics[f"t{n}_{name}_s"] = r["seconds"]["median"]
            metrics[f"t{n}_{name}_s_interval"] = [r["seconds"]["lo"], r["seconds"]["hi"]]
            metrics[f"t{n}_{name}_speedup"] = r["speedup"]["median"]
            metrics[f"t{n}_{name}_speedup_interval"] = [r["speedup"]["lo"], r["speedup"]["hi"]]
            rows.append([n, name, timing.fmt(r["seconds"], ".2f", " s"),
                         timing.fmt(r["speedup"], ".2f", "x")])
    args.threads = args.thread_counts  # recorded in the row's config as a list
    table = format_table(["threads", "arm", "seconds, median [interval]",
                          f"speedup over {REFERENCE}"], rows)
    headline = [f"t{n}_{name}_speedup" for n in args.thread_counts for name in ARMS]
    return finish("sun_speed", args, bench_config("sun_speed", args), metrics, meter.wall,
                  table, headline=headline)


if __name__ == "__main__":
    main()
