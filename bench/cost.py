"""GPU-hour model: what training the paper-size VideoMAR costs on a target GPU, and the efficiency
table VideoMAR vs Cosmos I2V vs this harness's presets.

    python bench/cost.py                                  # H100, 5e10 clip tokens, measured MFU
    python bench/cost.py --gpu a100 --mfu 0.35 --token-budget 2e11
    python bench/cost.py --stages "3x16x16:0.4,5x20x32:0.3,7x30x48:0.3"

GPU-hours = sum over stages of (clips in the stage) x (analytic FLOPs of one training clip,
core.flops.train_step_flops, expected over the random target frame and mask ratio) /
(target peak x MFU) / 3600. The token budget counts latent tokens of the clips fed to training
(frames x tokens per frame per clip); a stage gets its fraction of it. MFU: `--mfu F`, or
`--mfu measured` = the train_mfu of the newest bench/flops.py row in the results table (an
fp32-on-CPU fraction used as a stand-in for the target's bf16 fraction; say so when quoting),
falling back to 0.40 when there is none.

Sources (VideoMAR, arXiv 2506.14168, its project page and released code): paper shape 49x480x768 -> 7 latent frames of 30x48 =
1440 tokens, width 1536, depth 36, 300 text tokens [VM-CODE + arithmetic]; VideoMAR needs 9.3 %
of the parameters, 0.5 % of the training data and 0.2 % of the GPU resources of Cosmos I2V
[PAPER-ABS]; Cosmos: 100M clips, 10,000 H100 GPUs for about 3 months [2ND]; absolute VideoMAR
figures are NOT in the paper's readable part, so the derived ones below are marked inferred.
The curriculum stages are our assumption (the paper's are unknown). GPU peaks are the vendors'
dense bf16 tensor-core figures (vendor datasheets).
"""

from __future__ import annotations

import dataclasses

from pathlib import Path


from bench._common import CpuMeter, base_parser, bench_config, finish, format_table

import torch

from core.config import preset
from core.flops import train_step_flops
from core.model import VideoMAR
from core.results import read_rows

GPU_PEAK_TFLOPS = {  # dense bf16, vendor datasheets (SXM parts)
    "h100": 989.0, "h200": 989.0, "a100": 312.0, "l40s": 362.0,
}
DEFAULT_MFU = 0.40
PAPER_FRAMES, PAPER_GRID = 7, (30, 48)  # 49 x 480 x 768 through Cosmos CV8x16x16
# Our assumption for "short-to-long + low-to-high resolution" (stages unknown in the paper):
# (latent frames, grid h, grid w, fraction of the token budget).
DEFAULT_STAGES = "3x16x16:0.4,5x20x32:0.3,7x30x48:0.3"
# Paper ratios vs Cosmos I2V [PAPER-ABS] and Cosmos figures [2ND].
PARAM_RATIO, DATA_RATIO, GPU_RATIO = 0.093, 0.005, 0.002
COSMOS_CLIPS, COSMOS_GPUS, COSMOS_MONTHS = 100e6, 10_000, 3.0
HOURS_PER_MONTH = 730.0


# The columns of paper_tables/cost.md (the question this bench answers); every metric goes
# to paper_tables/cost.csv.
HEADLINE = ("params", "train_flops_curriculum", "train_flops_no_curriculum", "curriculum_saving",
            "mfu", "gpu_hours_curriculum", "gpu_hours_no_curriculum",
            "videomar_gpu_hours_implied")


def parse_stages(text: str) -> list[tuple[int, int, int, float]]:
    stages = []
    for part in text.split(","):
        try:
            shape, frac = part.split(":")
            frames, h, w = (int(v) for v in shape.lower().split("x"))
            stages.append((frames, h, w, float(frac)))
        except ValueError:
            raise SystemExit(f"--stages: cannot read {part!r}; write FRAMESxHxW:FRACTION items, "
                             f"e.g. {DEFAULT_STAGES}") from None
    total = sum(s[3] for s in stages)
    if abs(total - 1.0) > 1e-6 or any(s[0] < 2 or min(s[1:3]) < 1 for s in stages):
        raise SystemExit(f"--stages: fractions must sum to 1 (got {total:.3f}) and each stage "
                         "needs >= 2 latent frames and a positive grid")
    return stages


def measured_mfu(results: str) -> float | None:
    rows = [r for r in read_rows(results, on_damaged="ignore")
            if r.get("kind") == "bench" and r.get("table") == "flops" and r.get("status") == "ok"]
    for row in reversed(rows):
        value = row.get("metrics", {}).get("train_mfu")
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
    return None


def count_params(cfg) -> tuple[int, int]:
    with torch.device("meta"):
        model = VideoMAR(cfg)
    return model.num_params(), model.num_params(exclude_head=True)


def gpu_hours(cfg, stages, token_budget: float, peak_flops: float, mfu: float) -> dict:
    """GPU-hours and FLOPs of training `cfg` on `token_budget` clip tokens split into stages."""
    total_flops, detail = 0.0, []
    for frames, h, w, frac in stages:
        clip_tokens = frames * h * w
        clips = token_budget * frac / clip_tokens
        per_clip = train_step_flops(cfg, 1, frames, (h, w))
        flops = clips * per_clip
        total_flops += flops
        detail.append({"frames": frames, "grid": f"{h}x{w}", "fraction": frac, "clips": clips,
                       "flops_per_clip": per_clip, "flops_per_token": per_clip / clip_tokens,
                       "gpu_hours": flops / (peak_flops * mfu) / 3600})
    return {"flops": total_flops, "gpu_hours": total_flops / (peak_flops * mfu) / 3600,
            "stages": detail}


def main(argv=None) -> dict:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--gpu", default="h100", choices=sorted(GPU_PEAK_TFLOPS))
    p.add_argument("--peak-tflops", type=float, default=None, help="override the GPU's peak")
    p.add_argument("--mfu", default="default", help="a fraction; 'default' (DEFAULT_MFU, a typical "
                   "bf16 MFU for large-model training on H100-class GPUs); or 'measured': the newest "
                   "bench/flops.py train_mfu in the results table (meaningful when that row was "
                   "measured on the target GPU, not on this CPU)")
    p.add_argument("--token-budget", type=float, default=5e10,
                   help="latent clip tokens seen in training (default 5e10 = 10 epochs over "
                        "0.5M clips of 7x1440 tokens, the 0.5%%-of-Cosmos data scale)")
    p.add_argument("--stages", default=DEFAULT_STAGES)
    p.add_argument("--preset", default="paper")
    args = p.parse_args(argv)
    with CpuMeter() as meter:
        if args.mfu == "measured":
            mfu_value = measured_mfu(args.results)
            mfu_source = "bench/flops.py train_mfu (CPU fp32)" if mfu_value else "default"
            mfu = mfu_value or DEFAULT_MFU
        elif args.mfu == "default":
            mfu, mfu_source = DEFAULT_MFU, "default"
        else:
            try:
                mfu, mfu_source = float(args.mfu), "--mfu"
            except ValueError:
                raise SystemExit(f"--mfu={args.mfu!r}: give a fraction like 0.4 or 'measured'") from None
        if not 0 < mfu <= 1:
            raise SystemExit(f"--mfu={mfu}: must be a fraction in (0, 1]")
        peak = (args.peak_tflops or GPU_PEAK_TFLOPS[args.gpu]) * 1e12
        cfg = preset(args.preset)
        stages = parse_stages(args.stages)
        flat = gpu_hours(cfg, [(PAPER_FRAMES, *PAPER_GRID, 1.0)], args.token_budget, peak, mfu)
        curriculum = gpu_hours(cfg, stages, args.token_budget, peak, mfu)
        # Efficiency table rows.
        params, backbone = count_params(cfg)
        presets = {}
        for name in ("tiny", "small", "base"):
            pc = preset(name)
            n, _ = count_params(pc)
            cost = gpu_hours(pc, [(PAPER_FRAMES, *PAPER_GRID, 1.0)], args.token_budget, peak, mfu)
            demo = gpu_hours(pc, [(8, 8, 8, 1.0)], 500 * 8 * 8 * 64, peak, mfu)
            presets[name] = {"params": n, "gpu_hours_paper_budget": cost["gpu_hours"],
                             "gpu_hours_demo": demo["gpu_hours"]}
    cosmos_params = params / PARAM_RATIO
    cosmos_gpu_hours = COSMOS_GPUS * COSMOS_MONTHS * HOURS_PER_MONTH
    implied_gpu_hours = GPU_RATIO * cosmos_gpu_hours  # if "GPU resources" means GPU-hours
    lines = [f"GPU-hour model: {args.gpu} peak {peak / 1e12:.0f} TFLOP/s x MFU {mfu:.3f} "
             f"({mfu_source}); token budget {args.token_budget:.3g} clip tokens; preset {args.preset} "
             f"({params / 1e9:.2f} B parameters)",
             format_table(["schedule", "stage", "fraction", "clips", "GFLOP/clip", "MFLOP/token",
                           "GPU-hours"],
                          [[name, s["frames"] and f"{s['frames']} x {s['grid']}", s["fraction"],
                            s["clips"], s["flops_per_clip"] / 1e9, s["flops_per_token"] / 1e6,
                            s["gpu_hours"]]
                           for name, res in (("no curriculum", flat), ("curriculum + prog. res.",
                                                                       curriculum))
                           for s in res["stages"]]),
             f"total: no curriculum {flat['gpu_hours']:.4g} GPU-h; curriculum + progressive "
             f"resolution {curriculum['gpu_hours']:.4g} GPU-h "
             f"({curriculum['gpu_hours'] / flat['gpu_hours']:.2f}x)",
             "\nEfficiency table (paper ratios vs Cosmos I2V: 9.3 % parameters, 0.5 % data, 0.2 % "
             "GPU resources [PAPER-ABS]; Cosmos absolutes [2ND]; 'inferred' = arithmetic on those)",
             format_table(["model", "parameters", "training data", "GPU resources", "source"], [
                 ["Cosmos I2V", f"~{cosmos_params / 1e9:.0f} B (inferred: ours / 0.093)",
                  "100M clips", f"{COSMOS_GPUS} H100 x ~3 months (~{cosmos_gpu_hours / 1e6:.0f}M GPU-h)",
                  "2ND + inferred"],
                 ["VideoMAR (paper)", f"{params / 1e9:.2f} B (our count of the released config)",
                  "0.5 % of Cosmos (~0.5M clips, inferred)",
                  f"0.2 % of Cosmos (~{implied_gpu_hours:,.0f} H100-h if GPU-hours, inferred)",
                  "PAPER-ABS ratios"],
                 [f"VideoMAR, this model ({args.gpu})", f"{params / 1e9:.2f} B",
                  f"{args.token_budget:.3g} clip tokens",
                  f"{flat['gpu_hours']:,.0f} GPU-h flat / {curriculum['gpu_hours']:,.0f} curriculum",
                  "core/flops.py"],
                 *[[f"harness {n}", f"{v['params'] / 1e6:.2f} M", "same budget / demo 4k clips",
                    f"{v['gpu_hours_paper_budget']:.3g} GPU-h / demo {v['gpu_hours_demo']:.2g}",
                    "core/flops.py"] for n, v in presets.items()],
             ])]
    metrics = {
        "gpu": args.gpu, "peak_tflops": peak / 1e12, "mfu": mfu, "mfu_source": mfu_source,
        "token_budget": args.token_budget, "params": params, "params_backbone": backbone,
        "gpu_hours_no_curriculum": flat["gpu_hours"], "gpu_hours_curriculum": curriculum["gpu_hours"],
        "curriculum_saving": 1 - curriculum["gpu_hours"] / flat["gpu_hours"],
        "train_flops_no_curriculum": flat["flops"], "train_flops_curriculum": curriculum["flops"],
        "paper_flops_per_clip": flat["stages"][0]["flops_per_clip"],
        "stages": curriculum["stages"], "cosmos_params_implied": cosmos_params,
        "cosmos_gpu_hours": cosmos_gpu_hours, "videomar_gpu_hours_implied": implied_gpu_hours,
        "presets": presets,
    }
    variant = f"{args.preset} on {args.gpu}, MFU {mfu:.2f}"
    config = bench_config("cost", args, dataclasses.replace(cfg), variant=variant)
    return finish("cost", args, config, metrics, meter.wall, "\n".join(lines),
                  headline=HEADLINE)


if __name__ == "__main__":
    main()
