"""FLOPs per training step and per generated frame, measured and analytic, and the training MFU.

    python bench/flops.py                          # small preset, batch 8, 8 frames of 8x8 tokens
    python bench/flops.py --preset tiny --batch 4 --steps 10
    python bench/flops.py --window 2               # with model.temporal_window=2

FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode` plus formulas for the CPU
flash-attention kernels (core.flops.measured_flops; without them SDPA counts 0 on CPU) and
cross-checked against core.flops' analytic count. MFU = executed training FLOPs per second /
this machine's fp32 matmul peak, both measured in this run at the same thread count (1024^2
matmuls; the peak is re-measured right after every timed step and each step's rate is divided by
the peak next to it; train_mfu is the median of those ratios). A timed step is what core.train
runs: forward, backward, gradient clipping and the AdamW update.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

from pathlib import Path


from bench._common import (CpuMeter, base_parser, bench_config, finish, format_table,
                     matmul_peak_gflops, setup_threads)

import torch

from core.config import SamplerConfig, TrainConfig, preset
from core.flops import (generate_frame_breakdown, generate_video_flops, measured_flops,
                        train_step_breakdown)
from core.model import VideoMAR
from core.sampler import sample_latents
from core.train import build_optimizer, derive_seed


# The columns of paper_tables/flops.md (the question this bench answers); every metric goes
# to paper_tables/flops.csv.
HEADLINE = ("train_step_gflop_analytic", "train_analytic_over_measured", "train_mfu",
            "train_step_ms_median", "train_head_share", "gen_frame1_gflop_cached",
            "gen_analytic_over_measured_cached", "gen_frame1_head_share")


def make_step(model, optimizer, tokens, captions, grad_clip: float):
    def step(draws):
        loss = model(tokens, captions, draws)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        return loss.detach()
    return step


def main(argv=None) -> dict:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=8, help="latent frames per clip")
    p.add_argument("--grid", type=int, default=8, help="latent tokens per side")
    p.add_argument("--steps", type=int, default=4, help="timed training steps (after 2 warm-up)")
    p.add_argument("--gen-frames", type=int, default=4, help="frames of the counted generation")
    p.add_argument("--gen-steps", type=int, default=5, help="head steps of the counted generation")
    p.add_argument("--num-iter", type=int, default=8)
    p.add_argument("--peak-size", type=int, default=1024)
    p.add_argument("--window", type=int, default=0,
                   help="model.temporal_window (default 0: unlimited; causal presets only)")
    args = p.parse_args(argv)
    threads = setup_threads(args.threads)
    if args.batch < 1 or args.frames < 2 or args.grid < 1 or args.steps < 1:
        raise SystemExit("--batch, --grid, --steps must be >= 1 and --frames >= 2")
    cfg = preset(args.preset, temporal_window=args.window)
    if cfg.tokenizer.kind != "patch":  # FLOPs need token shapes only; avoid needing a VAE file
        cfg = dataclasses.replace(cfg, tokenizer=dataclasses.replace(cfg.tokenizer, kind="patch"))
    grid = (args.grid, args.grid)
    g = torch.Generator().manual_seed(args.seed)
    tokens = torch.randn(args.batch, args.frames, *grid, cfg.token_dim, generator=g).clamp(-1, 1)
    captions = ["a red ball bounces left"] * args.batch if cfg.text_dim > 0 else None
    with CpuMeter() as meter:
        model = VideoMAR(cfg, seed=args.seed).train()
        train_cfg = TrainConfig()
        optimizer = build_optimizer(model, train_cfg)
        step = make_step(model, optimizer, tokens, captions, train_cfg.grad_clip)

        def draws_for(i):
            gen = torch.Generator().manual_seed(derive_seed(args.seed, "draws", i))
            return model.sample_train_draws(args.batch, args.frames, grid, gen)

        # 1. Measured vs analytic FLOPs of one training step (pinned draws).
        d0 = draws_for(0)
        measured_train = measured_flops(step, d0)
        pinned = lambda d: train_step_breakdown(  # noqa: E731
            cfg, args.batch, args.frames, grid, num_masked=d.num_masked,
            **({"target_frame": d.target_frame} if d.target_frame >= 0 else {}))
        analytic_train = pinned(d0)
        expected = train_step_breakdown(cfg, args.batch, args.frames, grid)
        # 2. Timed steps, each followed by a short measurement of the matmul peak, so that load
        # from other processes hits both rates alike; MFU is the median of the per-step ratios.
        peak_first = matmul_peak_gflops(args.peak_size)
        for i in range(1, 3):
            step(draws_for(i))  # warm-up
        times, flops, peaks = [], [], []
        for i in range(3, 3 + args.steps):
            d = draws_for(i)
            t0 = time.perf_counter()
            step(d)
            times.append(time.perf_counter() - t0)
            flops.append(pinned(d)["total"])
            peaks.append(matmul_peak_gflops(args.peak_size, repeats=3, min_time_s=0.1)["best_gflops"])
        peak = max(peak_first["best_gflops"], *peaks)
        achieved = sum(flops) / sum(times) / 1e9
        per_step_rates = [f / t / 1e9 for f, t in zip(flops, times)]
        per_step_mfu = [r / pk for r, pk in zip(per_step_rates, peaks)]
        # 3. Generation: measured vs analytic FLOPs (cached and recompute), per frame.
        model.eval()
        gen_frames = args.gen_frames + cfg.num_cond_frames
        cond = tokens[:1, :cfg.num_cond_frames]
        gen = {}
        for mode in ("cached", "recompute"):
            sampler = SamplerConfig(num_iter=args.num_iter, num_sampling_steps=args.gen_steps,
                                    use_kv_cache=mode == "cached")
            measured = measured_flops(sample_latents, model, cond, gen_frames, sampler,
                                      torch.Generator().manual_seed(0), captions[:1] if captions else None)
            analytic = generate_video_flops(cfg, gen_frames, grid, mode=mode, num_iter=args.num_iter,
                                            num_sampling_steps=args.gen_steps)
            gen[mode] = {"measured": measured, "analytic": analytic["total"],
                         "per_frame_measured": measured / args.gen_frames}
        frame1 = generate_frame_breakdown(cfg, 1, grid, num_iter=args.num_iter)
        frame_last = generate_frame_breakdown(cfg, args.frames - 1, grid, num_iter=args.num_iter)
    rows = [
        ["train step (pinned draws)", measured_train / 1e9, analytic_train["total"] / 1e9,
         analytic_train["total"] / measured_train],
        ["train step (expected over draws)", float("nan"), expected["total"] / 1e9, float("nan")],
        *[[f"generate {args.gen_frames} frames, {m} (head {args.gen_steps} steps)",
           v["measured"] / 1e9, v["analytic"] / 1e9, v["analytic"] / v["measured"]]
          for m, v in gen.items()],
        ["generated frame 1, cached (model's head steps)", float("nan"), frame1["total"] / 1e9,
         float("nan")],
        [f"generated frame {args.frames - 1}, cached", float("nan"), frame_last["total"] / 1e9,
         float("nan")],
    ]
    table = format_table(["what", "FlopCounter GFLOP", "analytic GFLOP", "analytic/measured"], rows)
    mfu = statistics.median(per_step_mfu)
    table += "\n\n" + format_table(
        ["preset", "batch", "frames x grid", "step ms (median)", "GFLOP/s", "fp32 matmul peak",
         "MFU"],
        [[args.preset, args.batch, f"{args.frames} x {args.grid}x{args.grid}",
          1e3 * statistics.median(times), achieved, peak, mfu]])
    # FlexAttention (model.attn_backend=flex, GPU training) computes only the frame tiles with a
    # visible key; SDPA with the dense mask computes every tile of the attention scores.
    per_frame = grid[0] * grid[1]
    frames = cfg.pattern.frame_mask(args.frames)
    skipped = (cfg.pattern.block_mask(frames, per_frame).sparsity() / 100
               if frames is not None else 0.0)
    table += (f"\n\nattention-score tiles of a {args.frames}-frame training pass that "
              f"model.attn_backend=flex skips: {skipped:.0%}")
    table += (f"\n\nbackward/forward FLOPs {analytic_train['backward'] / analytic_train['forward']:.2f}; "
              f"head share of training FLOPs {analytic_train['head'] / analytic_train['total']:.2f}"
              f"\nthreads={threads} load/cpu: {meter.info()} (a shared machine: the MFU compares "
              "two rates measured in this process)")
    metrics = {
        "train_mfu": mfu, "goal_train_mfu": 0.4, "peak_gflops": peak,
        "peak_gflops_per_step": peaks, "train_mfu_per_step": per_step_mfu,
        "train_mfu_aggregate": achieved / peak,
        "train_gflops_per_s": achieved,
        "train_gflops_per_s_median_step": statistics.median(per_step_rates),
        "train_step_ms_median": 1e3 * statistics.median(times),
        "train_step_gflop_measured": measured_train / 1e9,
        "train_step_gflop_analytic": analytic_train["total"] / 1e9,
        "train_step_gflop_expected": expected["total"] / 1e9,
        "train_analytic_over_measured": analytic_train["total"] / measured_train,
        "train_head_share": analytic_train["head"] / analytic_train["total"],
        "flex_attention_tiles_skipped": skipped,
        "gen_frame_gflop_cached_measured": gen["cached"]["per_frame_measured"] / 1e9,
        "gen_frame_gflop_recompute_measured": gen["recompute"]["per_frame_measured"] / 1e9,
        "gen_analytic_over_measured_cached": gen["cached"]["analytic"] / gen["cached"]["measured"],
        "gen_analytic_over_measured_recompute":
            gen["recompute"]["analytic"] / gen["recompute"]["measured"],
        "gen_frame1_gflop_cached": frame1["total"] / 1e9,
        "gen_frame1_head_share": frame1["head"] / frame1["total"],
        "preset": args.preset, "batch": args.batch, "frames": args.frames, "grid": args.grid,
        "temporal_window": args.window,
        "threads": threads, "machine": meter.info(),
    }
    variant = f"{args.preset} batch {args.batch} {args.frames}x{args.grid}x{args.grid}"
    if args.window:
        variant += f" window {args.window}"
    config = bench_config("flops", args, cfg, variant=variant)
    return finish("flops", args, config, metrics, meter.wall, table,
                  headline=HEADLINE)


if __name__ == "__main__":
    main()
