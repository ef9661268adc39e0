"""SUN's ">10x" where the paper claims it: the denoising loop of an SD-1.5-layout UNet on a CPU.

    python bench/sun_sd15.py                  # SD-1.5 UNet, random weights, 32x32 latents (256 px),
                                              # batch 1, 1 and 2 threads, 5 interleaved rounds
    python bench/sun_sd15.py --latent 16 --threads 1
    python bench/sun_sd15.py --tiny --no-results   # a toy UNet of the same layout (the tests)

Compared from the same latents and the same random 77-token "text embeddings" (text encoder and
VAE excluded), with diffusers' DPMSolverMultistepScheduler (DPM-Solver++ 2M, SD-1.5's
scaled-linear betas), the UNet in fp32:
- `ref`: 25 steps with CFG (w = --guidance), negative and positive prompt in one doubled batch
  per step as diffusers' pipelines do: 50 UNet evaluations;
- `sun`: 4 steps with trailing spacing (as SUN's wrapper sets), the SUN adapter (add_pos, 38.4 M
  parameters on SD-1.5) installed, one pass per step on the joint [positive | negative] context.
The cost of a pass does not depend on the weights, so random weights time the real thing.
Timing (bench/timing.py): one warm-up round, then --repeats interleaved rounds (ref sun ref
sun ...) at each --threads count; medians with order-statistic intervals of each method's
seconds and of the per-round speedup ref / sun. FLOPs: FlopCounterMode over one UNet call of each
kind on a `meta` copy of the UNet (free at any size; on CPU tensors it counts no FLOPs for the
fused attention kernel), the adapter included; flop_ratio = 25 * ref call / (4 * sun call),
also at SD-1.5's native 64x64 latents. Prints a table, then one JSON object (last line), and
appends a kind="bench" row (table sun_sd15) to the results table unless --no-results.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from diffusers import DPMSolverMultistepScheduler, UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode

from bench import timing
from bench._common import DEFAULT_RESULTS, CpuMeter, bench_config, finish, format_table
from core.sun.adapter import install_sun, joint_context
from core.sun.teacher import guided_eps_fn, plain_eps_fn

SD15_UNET = dict(  # SD-1.5's unet/config.json; the keys not given are diffusers' defaults
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
TINY_UNET = SD15_UNET | dict(sample_size=8, layers_per_block=1, norm_num_groups=8,
                             block_out_channels=(16, 32, 32, 32), cross_attention_dim=16)
SD15_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                      beta_schedule="scaled_linear", prediction_type="epsilon",
                      algorithm_type="dpmsolver++", solver_order=2)
SD15_TEXT_TOKENS, TINY_TEXT_TOKENS = 77, 8
REF_STEPS, SUN_STEPS = 25, 4
HEADLINE = ("image_px", "flop_ratio", "adapter_flop_overhead", "speedup_t1", "speedup_t1_lo",
            "speedup_t1_hi", "speedup_t2", "speedup_t2_lo", "speedup_t2_hi")


def denoise(scheduler: DPMSolverMultistepScheduler, steps: int, latents: torch.Tensor,
            eps_fn) -> torch.Tensor:
    """A diffusers-style loop: set the steps, scale the input, predict eps, step."""
    scheduler.set_timesteps(steps)
    x = latents * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        eps = eps_fn(scheduler.scale_model_input(x, t), t.expand(x.shape[0]))
        x = scheduler.step(eps, t, x).prev_sample
    return x


def call_flops(config: dict, batch: int, latent: int, tokens: int) -> dict[str, int]:
    """UNet FLOPs of one call: plain (batch B, L tokens), CFG (2B, L), SUN (B, 2L, adapter on)."""
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config).eval()
    dim = config["cross_attention_dim"]

    def count(b: int, context_len: int) -> int:
        x = torch.empty(b, config["in_channels"], latent, latent, device="meta")
        ctx = torch.empty(b, context_len, dim, device="meta")
        with FlopCounterMode(display=False) as counter:
            unet(x, torch.full((b,), 500, device="meta"), ctx)
        return counter.get_total_flops()
    plain, cfg = count(batch, tokens), count(2 * batch, tokens)
    install_sun(unet)
    return {"plain": plain, "cfg": cfg, "sun": count(batch, 2 * tokens)}


def flop_summary(config: dict, batch: int, latent: int, tokens: int) -> dict:
    f = call_flops(config, batch, latent, tokens)
    return {"flops_call_plain": f["plain"], "flops_call_cfg": f["cfg"], "flops_call_sun": f["sun"],
            "adapter_flop_overhead": f["sun"] / f["plain"] - 1,
            "flop_ratio": REF_STEPS * f["cfg"] / (SUN_STEPS * f["sun"])}


def build(config: dict, seed: int) -> UNet2DConditionModel:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return UNet2DConditionModel(**config).eval()


def measure(args, config: dict, tokens: int, threads: list[int]) -> dict:
    """Build the UNet and adapter, then the interleaved timing at each thread count."""
    unet = build(config, args.seed)
    unet_params = sum(p.numel() for p in unet.parameters())
    adapter = install_sun(unet)
    g = torch.Generator().manual_seed(args.seed)
    latents = torch.randn(args.batch, config["in_channels"], args.latent, args.latent, generator=g)
    pos, neg = torch.randn(2, args.batch, tokens, config["cross_attention_dim"], generator=g)
    scheduler = DPMSolverMultistepScheduler(**SD15_SCHEDULER)
    sun_scheduler = DPMSolverMultistepScheduler(**SD15_SCHEDULER, timestep_spacing="trailing")
    outputs = {}
    methods = {
        "ref": lambda: outputs.__setitem__("ref", denoise(
            scheduler, REF_STEPS, latents, guided_eps_fn(unet, pos, neg, args.guidance))),
        "sun": lambda: outputs.__setitem__("sun", denoise(
            sun_scheduler, SUN_STEPS, latents, plain_eps_fn(unet, joint_context(pos, neg)))),
    }
    attached = [True]

    def prepare(name: str) -> None:  # untimed: the plain UNet for ref, the adapter for sun
        want = name == "sun"
        if want and not attached[0]:
            adapter.attach()
        elif attached[0] and not want:
            adapter.remove()
        attached[0] = want
    result = {}
    with torch.inference_mode():
        for n in threads:
            print(f"timing at {n} thread(s): {args.warmup} warm-up + {args.repeats} rounds",
                  file=sys.stderr, flush=True)
            result |= timing.time_methods(methods, "ref", threads=(n,), repeats=args.repeats,
                                          warmup=args.warmup, prepare=prepare)
    return {"timing": result, "unet_params": unet_params,
            "adapter_params": sum(p.numel() for p in adapter.parameters()),
            "cross_attention_layers": len(adapter.names),
            "finite": all(bool(torch.isfinite(o).all()) for o in outputs.values())}


def flatten(timed: dict[int, dict[str, dict]], flop_ratio: float) -> dict:
    """Scalar metrics per thread count: seconds and speedup, median/lo/hi, plus the rounds."""
    out = {}
    for n, by_method in timed.items():
        for name in ("ref", "sun"):
            s = by_method[name]["seconds"]
            out |= {f"{name}_s_t{n}": s["median"], f"{name}_s_t{n}_lo": s["lo"],
                    f"{name}_s_t{n}_hi": s["hi"]}
        sp = by_method["sun"]["speedup"]
        out |= {f"speedup_t{n}": sp["median"], f"speedup_t{n}_lo": sp["lo"],
                f"speedup_t{n}_hi": sp["hi"], f"speedup_t{n}_coverage": sp["coverage"],
                f"speedup_t{n}_rounds": by_method["sun"]["speedup_rounds"],
                f"speedup_over_flop_ratio_t{n}": sp["median"] / flop_ratio,
                f"ms_per_eval_ref_t{n}": 1000 * out[f"ref_s_t{n}"] / (2 * REF_STEPS),
                f"ms_per_eval_sun_t{n}": 1000 * out[f"sun_s_t{n}"] / SUN_STEPS}
    return out


def _interval(metrics: dict, key: str) -> dict:
    return {"median": metrics[key], "lo": metrics[f"{key}_lo"], "hi": metrics[f"{key}_hi"]}


def report(metrics: dict, threads: list[int]) -> str:
    rows = [[f"{n} thread{'s' * (n > 1)}",
             timing.fmt(_interval(metrics, f"ref_s_t{n}"), ".3g", " s"),
             timing.fmt(_interval(metrics, f"sun_s_t{n}"), ".3g", " s"),
             timing.fmt(_interval(metrics, f"speedup_t{n}"), ".2f", "x"),
             f"{metrics[f'speedup_t{n}_coverage']:.3f}"] for n in threads]
    head = (f"{metrics['layout']} UNet, latents {metrics['latent_shape']} "
            f"({metrics['image_px']} px), "
            f"{metrics['text_tokens']} text tokens; ref = {REF_STEPS}-step DPM-Solver++ + CFG "
            f"({2 * REF_STEPS} evals), sun = {SUN_STEPS} steps, 1 pass each; "
            f"{metrics['repeats']} interleaved rounds after {metrics['warmup']} warm-up")
    flops = (f"FLOP ratio {metrics['flop_ratio']:.2f}x (adapter "
             f"+{100 * metrics['adapter_flop_overhead']:.2f} % of a pass); at 64x64 latents "
             f"{metrics['flop_ratio_native64']:.2f}x "
             f"(+{100 * metrics['adapter_flop_overhead_native64']:.2f} %)")
    table = format_table(["threads", "ref median [lo, hi]", "sun median [lo, hi]",
                          "speedup median [lo, hi]", "coverage"], rows)
    return "\n".join([head, table, flops])


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="toy widths, 8x8 latents, 8 text tokens")
    p.add_argument("--latent", type=int, help="latent side (default 32; tiny: 8)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    p.add_argument("--repeats", type=int, default=5, help="timed interleaved rounds (>= 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", default=DEFAULT_RESULTS)
    p.add_argument("--no-results", action="store_true", help="do not append a row")
    args = p.parse_args(argv)
    args.latent = args.latent or (8 if args.tiny else 32)
    try:
        args.thread_counts = [int(n) for n in args.threads.split(",")]
    except ValueError:
        p.error(f"--threads {args.threads!r}: give comma-separated integers, e.g. 1,2")
    if (min(args.thread_counts) < 1 or args.latent < 8 or args.latent % 8 or args.batch < 1
            or args.repeats < 1 or args.warmup < 0):
        p.error("--threads >= 1 each, --latent a multiple of 8 (SD-1.5 downsamples 3 times), "
                "--batch and --repeats >= 1, --warmup >= 0")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    config = TINY_UNET if args.tiny else SD15_UNET
    tokens = TINY_TEXT_TOKENS if args.tiny else SD15_TEXT_TOKENS
    with CpuMeter() as meter:
        flops = flop_summary(config, args.batch, args.latent, tokens)
        native = flop_summary(config, args.batch, 64, tokens)
        measured = measure(args, config, tokens, args.thread_counts)
    metrics = {
        "layout": "tiny" if args.tiny else "sd15",
        "latent_shape": [args.batch, 4, args.latent, args.latent],
        "image_px": 8 * args.latent, "batch": args.batch, "text_tokens": tokens,
        "text_dim": config["cross_attention_dim"], "guidance": args.guidance,
        "ref_steps": REF_STEPS, "ref_unet_evals": 2 * REF_STEPS, "sun_steps": SUN_STEPS,
        "sun_unet_evals": SUN_STEPS, "repeats": args.repeats, "warmup": args.warmup,
        "threads": args.thread_counts, "unet_params": measured["unet_params"],
        "adapter_params": measured["adapter_params"],
        "adapter_param_fraction": measured["adapter_params"] / measured["unet_params"],
        "cross_attention_layers": measured["cross_attention_layers"],
        "finite": measured["finite"], **flops,
        "flop_ratio_native64": native["flop_ratio"],
        "adapter_flop_overhead_native64": native["adapter_flop_overhead"],
        **flatten(measured["timing"], flops["flop_ratio"]),
        **meter.info(), "cpu_count": os.cpu_count(), "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    args.threads = args.thread_counts  # recorded in the row's config as a list
    variant = f"{metrics['layout']} {args.latent}x{args.latent}"
    config_row = bench_config("sun_sd15", args, variant=variant)
    return finish("sun_sd15", args, config_row, metrics, meter.wall,
                  report(metrics, args.thread_counts), headline=HEADLINE)


if __name__ == "__main__":
    main()
