"""KV-cache throughput: cached vs recompute-all-frames (causal) vs joint full-attention sampling.

    python bench/kv_cache.py                       # 16 generated latent frames, tiny preset
    python bench/kv_cache.py --sweep               # + frames 4..32 and tokens per frame 16..144
    python bench/kv_cache.py --frames 32 --grid 12 --batch 4 --modes cached,recompute
    python bench/kv_cache.py --window 2            # every causal mode with model.temporal_window=2

Runs `core.sampler.sample_latents` on an untrained model (speed does not depend on the weights)
and times every backbone call and every diffusion-head call apart, by wrapping the model's
`backbone` and `head.sample` on the instance. Reported per mode: backbone and head seconds,
generated tokens/s, ms per frame by frame index (causal modes), peak memory, and the analytic
FLOPs of core/flops.py. Modes are interleaved over `--repeats` rounds and per-call medians taken,
so a burst of load on a shared machine hits all modes alike; the ratios are the result.

JSON keys (no-arg run): kv_cache_backbone_speedup (recompute / cached backbone seconds),
analytic_flop_ratio (recompute / cached backbone FLOPs), speedup_vs_analytic (their ratio; goal
>= 0.8), last_over_first_frame (backbone ms of the last generated frame's K masked passes over
the first one's; goal <= 1.25), plus per-mode figures. These are for model.temporal_window =
--window (default 0, unlimited context, VideoMAR). With full context the goal cannot be met: the
last frame attends to num_frames cached frames, the first to 2. So the run also times cached
generation under a temporal window with an anchor on the conditioning frames (--window-check W,
default 2; 0 skips it), interleaved with the other modes: last_over_first_frame_window (its
measured ratio), analytic_last_over_first_window (the same in FLOPs), window (W),
cached_window_backbone_s and cached_window_backbone_ms_per_frame.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections import defaultdict

from pathlib import Path


from bench._common import (CpuMeter, base_parser, bench_config, finish, format_table, peak_memory_mb,
                     setup_threads)

import torch

from core.config import SamplerConfig, preset
from core.flops import attended_frames, generate_frame_breakdown, generate_video_flops
from core.model import VideoMAR
from core.sampler import sample_latents

MODES = ("cached", "recompute", "joint")
WINDOW_MODE = "cached_window"  # cached sampling under --window-check (added to the main point)
SWEEP_FRAMES = (4, 8, 16, 32)
SWEEP_GRIDS = (4, 8, 12)


# The columns of paper_tables/kv_cache.md (the question this bench answers); every metric goes
# to paper_tables/kv_cache.csv.
HEADLINE = ("kv_cache_total_speedup", "kv_cache_backbone_speedup", "analytic_flop_ratio",
            "speedup_vs_analytic", "cached_ms_per_frame", "last_over_first_frame",
            "joint_over_cached_wall", "kv_cache_mb", "window_backbone_speedup")


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * (4096 / 2**20)
    except OSError:
        return float("nan")


class Recorder:
    """Wraps model.backbone / model.head.sample on the instance and records each call's time."""

    def __init__(self, model: VideoMAR):
        self.model, self.calls = model, []
        self._backbone, self._head = model.backbone, model.head.sample
        self._frame, self.rss0, self.rss_peak = -1, 0.0, 0.0
        cuda = model.mask_token.device.type == "cuda"
        self._sync = torch.cuda.synchronize if cuda else (lambda: None)
        model.backbone, model.head.sample = self._timed_backbone, self._timed_head

    def start(self) -> None:
        self.calls, self._frame = [], -1
        self.rss0 = self.rss_peak = _rss_mb()

    def _timed_backbone(self, tokens, mask, frame_offset, *args, **kwargs):
        self._sync()
        t0 = time.perf_counter()
        out = self._backbone(tokens, mask, frame_offset, *args, **kwargs)
        self._sync()
        elapsed = time.perf_counter() - t0
        self._frame = frame_offset + tokens.shape[1] - 1
        commit = bool(kwargs.get("commit", False) or (len(args) > 3 and args[3]))
        self.calls.append(("backbone", self._frame, commit, elapsed))
        self.rss_peak = max(self.rss_peak, _rss_mb())
        return out

    def _timed_head(self, *args, **kwargs):
        self._sync()
        t0 = time.perf_counter()
        out = self._head(*args, **kwargs)
        self._sync()
        self.calls.append(("head", self._frame, False, time.perf_counter() - t0))
        self.rss_peak = max(self.rss_peak, _rss_mb())
        return out

    def restore(self) -> None:
        self.model.backbone, self.model.head.sample = self._backbone, self._head


def run_once(model, rec: Recorder, cond, num_frames: int, sampler: SamplerConfig, seed: int,
             captions) -> dict:
    """One generation; returns this round's calls and wall time."""
    rec.start()
    if torch.cuda.is_available() and cond.is_cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    sample_latents(model, cond, num_frames, sampler, torch.Generator().manual_seed(seed), captions)
    wall = time.perf_counter() - t0
    return {"calls": list(rec.calls), "wall": wall, "rss_delta_mb": rec.rss_peak - rec.rss0,
            "peak_mb": peak_memory_mb(cond.device)}


def summarise(rounds: list[dict], num_cond: int, num_frames: int, tokens: int, mode: str) -> dict:
    """Median over rounds of each call position, then totals and per-frame sums."""
    n_calls = len(rounds[0]["calls"])
    med = [statistics.median(r["calls"][i][3] for r in rounds) for i in range(n_calls)]
    calls = [(kind, frame, commit, t) for (kind, frame, commit, _), t in zip(rounds[0]["calls"], med)]
    backbone = sum(t for k, _, _, t in calls if k == "backbone")
    head = sum(t for k, _, _, t in calls if k == "head")
    out = {"backbone_s": backbone, "head_s": head, "total_s": backbone + head,
           "wall_s": statistics.median(r["wall"] for r in rounds),
           "tokens_per_s": tokens / statistics.median(r["wall"] for r in rounds),
           "rss_delta_mb": max(r["rss_delta_mb"] for r in rounds),
           "peak_mb": max((r["peak_mb"] or 0.0) for r in rounds)}
    if mode != "joint":
        per = defaultdict(lambda: {"backbone_ms": 0.0, "masked_ms": 0.0, "commit_ms": 0.0,
                                   "head_ms": 0.0, "passes": 0})
        for kind, frame, commit, t in calls:
            if frame < num_cond:
                continue  # the prefill of the conditioning frames
            row = per[frame]
            if kind == "head":
                row["head_ms"] += 1e3 * t
            else:
                row["backbone_ms"] += 1e3 * t
                row["commit_ms" if commit else "masked_ms"] += 1e3 * t
                row["passes"] += 0 if commit else 1
        out["per_frame"] = [dict(frame=f, **per[f]) for f in range(num_cond, num_frames)]
        out["prefill_ms"] = 1e3 * sum(t for k, f, _, t in calls if k == "backbone" and f < num_cond)
    return out


def mode_config(cfg, mode: str, args):
    """(model config, core.flops generation mode) of a bench mode.

    joint: full attention (no window); cached/recompute: causal with --window; cached_window:
    causal, cached, with --window-check. Same seed, same weights: the window has no parameters.
    """
    if mode == "joint":
        return dataclasses.replace(cfg, attn="full", temporal_window=0), "joint"
    window = args.window_check if mode == WINDOW_MODE else args.window
    sampling = "cached" if mode == WINDOW_MODE else mode
    return dataclasses.replace(cfg, attn="causal", temporal_window=window), sampling


def kv_cache_mb(model_cfg, args, num_frames: int, per_frame: int) -> float:
    """Size of the sampler's K and V buffers (fp32), windowed caches holding fewer frames."""
    slots = num_frames
    if model_cfg.temporal_window > 0:
        slots = min(num_frames, model_cfg.num_cond_frames + model_cfg.temporal_window + 1)
    rows = args.batch * (2 if args.cfg_scale != 1 else 1)
    return 2 * model_cfg.depth * rows * model_cfg.width * slots * per_frame * 4 / 2**20


def measure(args, cfg, frames: int, grid: int, modes, steps: int | None) -> dict:
    """All requested modes for one (generated frames, grid) point."""
    device = torch.device(args.device)
    num_frames = frames + cfg.num_cond_frames
    per_frame = grid * grid
    configs = {mode: mode_config(cfg, mode, args) for mode in modes}
    models = {}  # one model per distinct config (same weights)
    for mode_cfg, _ in configs.values():
        key = mode_cfg.pattern
        if key not in models:
            models[key] = VideoMAR(mode_cfg, seed=args.seed).to(device).eval()
    model_of = {m: models[c.pattern] for m, (c, _) in configs.items()}
    gen = torch.Generator().manual_seed(args.seed)
    cond = torch.randn(args.batch, cfg.num_cond_frames, grid, grid, cfg.token_dim, generator=gen)
    cond = cond.clamp(-1, 1).to(device)
    captions = ["a red ball bounces"] * args.batch if cfg.text_dim > 0 else None
    samplers = {m: SamplerConfig(num_iter=args.num_iter, cfg_scale=args.cfg_scale,
                                 num_sampling_steps=steps, use_kv_cache=(s == "cached"))
                for m, (_, s) in configs.items()}
    recorders = {key: Recorder(m) for key, m in models.items()}
    recorder_of = {m: recorders[c.pattern] for m, (c, _) in configs.items()}
    rounds = defaultdict(list)
    try:
        with torch.no_grad():
            for r in range(args.repeats + 1):  # round 0 warms up (allocator, memoised tables)
                for mode in modes:
                    res = run_once(model_of[mode], recorder_of[mode], cond, num_frames,
                                   samplers[mode], args.seed, captions)
                    if r > 0:
                        rounds[mode].append(res)
    finally:
        for rec in recorders.values():
            rec.restore()
    generated_tokens = args.batch * frames * per_frame
    out = {}
    for mode in modes:
        mode_cfg, sampling = configs[mode]
        res = summarise(rounds[mode], cfg.num_cond_frames, num_frames, generated_tokens, sampling)
        flops = generate_video_flops(mode_cfg, num_frames, (grid, grid),
                                     mode=sampling, num_iter=args.num_iter, batch=args.batch,
                                     cfg_scale=args.cfg_scale, num_sampling_steps=steps)
        res["backbone_gflop"] = flops["backbone"] / 1e9
        res["head_gflop"] = flops["head"] / 1e9
        res["backbone_gflops_per_s"] = flops["backbone"] / 1e9 / res["backbone_s"]
        res["head_gflops_per_s"] = flops["head"] / 1e9 / res["head_s"] if res["head_s"] else None
        res["head_share"] = res["head_s"] / res["total_s"]
        if sampling == "cached":  # analytic backbone FLOPs of each frame's K masked passes
            res["analytic_masked_gflop"] = [generate_frame_breakdown(
                mode_cfg, f, (grid, grid), num_iter=args.num_iter, batch=args.batch,
                cfg_scale=args.cfg_scale, num_sampling_steps=steps, commit=False)["backbone"] / 1e9
                for f in range(cfg.num_cond_frames, num_frames)]
            res["attended_frames"] = [attended_frames(mode_cfg, f)
                                      for f in range(cfg.num_cond_frames, num_frames)]
            res["kv_cache_mb"] = kv_cache_mb(mode_cfg, args, num_frames, per_frame)
        out[mode] = res
    return out


def last_over_first(cached: dict) -> tuple[float, float]:
    """(measured, analytic) backbone cost of the last generated frame's masked pass over the first's."""
    frames = cached["per_frame"]
    first, last = frames[0], frames[-1]
    measured = (last["masked_ms"] / last["passes"]) / (first["masked_ms"] / first["passes"])
    flops = cached["analytic_masked_gflop"]
    return measured, flops[-1] / flops[0]


def ratios(point: dict) -> dict:
    """Headline ratios of one measured point (needs cached and recompute)."""
    c, r = point.get("cached"), point.get("recompute")
    if not (c and r):
        return {}
    out = {"kv_cache_backbone_speedup": r["backbone_s"] / c["backbone_s"],
           "analytic_flop_ratio": r["backbone_gflop"] / c["backbone_gflop"],
           "kv_cache_total_speedup": r["wall_s"] / c["wall_s"]}
    out["speedup_vs_analytic"] = out["kv_cache_backbone_speedup"] / out["analytic_flop_ratio"]
    # Measured and in FLOPs: attention to the growing cache makes it > 1 even without copies.
    out["last_over_first_frame"], out["analytic_last_over_first_frame"] = last_over_first(c)
    if "joint" in point:
        out["joint_over_cached_wall"] = point["joint"]["wall_s"] / c["wall_s"]
    return out


def window_ratios(point: dict, window: int) -> dict:
    """The last/first ratios of cached generation under the --window-check temporal window."""
    w = point.get(WINDOW_MODE)
    if not w:
        return {"window": 0}
    measured, analytic = last_over_first(w)
    out = {"window": window, "last_over_first_frame_window": measured,
           "analytic_last_over_first_window": analytic,
           "cached_window_backbone_ms_per_frame": [round(f["backbone_ms"], 3)
                                                   for f in w["per_frame"]],
           "kv_cache_mb_window": w["kv_cache_mb"]}
    if "cached" in point:
        out["window_backbone_speedup"] = point["cached"]["backbone_s"] / w["backbone_s"]
    return out


def main(argv=None) -> dict:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--frames", type=int, default=16, help="generated latent frames (default 16)")
    p.add_argument("--grid", type=int, default=8, help="latent tokens per side (default 8: 32x32 "
                   "pixels with 4x4 patches)")
    p.add_argument("--batch", type=int, default=8, help="clips generated together (default 8, the "
                   "harness's evaluation batch; at 1 per-op overhead dominates the small passes)")
    p.add_argument("--num-iter", type=int, default=8, help="masked iterations per frame (K)")
    p.add_argument("--cfg-scale", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=None, help="head sampling steps (default: model's)")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--repeats", type=int, default=1, help="timed rounds per mode (+1 warm-up)")
    p.add_argument("--sweep", action="store_true",
                   help=f"also sweep generated frames {SWEEP_FRAMES} and grids {SWEEP_GRIDS}")
    p.add_argument("--sweep-steps", type=int, default=5,
                   help="head steps in the sweep (head time is linear in them; default 5)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--window", type=int, default=0,
                   help="model.temporal_window of the cached/recompute modes (default 0: unlimited)")
    p.add_argument("--window-check", type=int, default=2, metavar="W",
                   help="also time cached generation with model.temporal_window=W for the "
                        "*_window keys (default 2; 0 skips it)")
    args = p.parse_args(argv)
    threads = setup_threads(args.threads)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if bad := [m for m in modes if m not in MODES]:
        raise SystemExit(f"--modes: unknown {bad}; choose from {MODES}")
    if args.frames < 2 or args.grid < 1 or args.batch < 1 or args.repeats < 1:
        raise SystemExit("--frames must be >= 2, --grid, --batch and --repeats >= 1")
    if args.window < 0 or args.window_check < 0:
        raise SystemExit("--window and --window-check must be >= 0 (0 = unlimited / skip)")
    main_modes = modes + ([WINDOW_MODE] if args.window_check > 0 and "cached" in modes else [])
    cfg = preset(args.preset)
    if cfg.tokenizer.kind != "patch":  # speed only needs token shapes; keep it import-free
        cfg = dataclasses.replace(cfg, tokenizer=dataclasses.replace(cfg.tokenizer, kind="patch"))
    with CpuMeter() as meter:
        main_point = measure(args, cfg, args.frames, args.grid, main_modes, args.steps)
        sweep = []
        if args.sweep:
            for frames in SWEEP_FRAMES:
                for grid in SWEEP_GRIDS:
                    if frames != 32 and grid != args.grid and frames != args.frames:
                        continue  # frames sweep at the default grid, grid sweep at 16 and 32
                    pt = measure(args, cfg, frames, grid, [m for m in modes], args.sweep_steps)
                    sweep.append({"frames": frames, "grid": grid, **ratios(pt),
                                  **{f"{m}_{k}": pt[m][k] for m in pt
                                     for k in ("backbone_s", "head_s", "tokens_per_s", "peak_mb")}})
    head = {**ratios(main_point), **window_ratios(main_point, args.window_check)}
    lines = [format_table(
        ["mode", "backbone s", "head s", "wall s", "tokens/s", "backbone GFLOP", "backbone GFLOP/s",
         "head share", "peak RSS delta MiB"],
        [[m, v["backbone_s"], v["head_s"], v["wall_s"], v["tokens_per_s"], v["backbone_gflop"],
          v["backbone_gflops_per_s"], v["head_share"], v["rss_delta_mb"]]
         for m, v in main_point.items()])]
    if "cached" in main_point:
        rec = {f["frame"]: f for f in main_point.get("recompute", {}).get("per_frame", [])}
        win = {f["frame"]: f for f in main_point.get(WINDOW_MODE, {}).get("per_frame", [])}
        nan = {"masked_ms": float("nan"), "passes": 1}
        lines.append("\nms per generated frame by frame index (backbone: K masked passes + commit)")
        lines.append(format_table(
            ["frame", "cached backbone", "cached masked/pass", "cached commit", "cached head",
             "recompute backbone", f"window {args.window_check} masked/pass"],
            [[f["frame"], f["backbone_ms"], f["masked_ms"] / max(1, f["passes"]), f["commit_ms"],
              f["head_ms"], rec.get(f["frame"], {}).get("backbone_ms", float("nan")),
              win.get(f["frame"], nan)["masked_ms"] / max(1, win.get(f["frame"], nan)["passes"])]
             for f in main_point["cached"]["per_frame"]]))
        lines.append("\nlast / first generated frame, backbone per masked pass (goal <= 1.25)")
        window_rows = [[f"model.temporal_window={window}{' (anchor + window)' if window else ''}",
                        *last_over_first(main_point[mode]), main_point[mode]["attended_frames"][-1]]
                       for mode, window in (("cached", args.window),
                                            (WINDOW_MODE, args.window_check))
                       if mode in main_point]
        lines.append(format_table(["cached", "measured", "analytic FLOPs", "last frame attends to "
                                   "frames"], window_rows))
    if sweep:
        lines.append(f"\nsweep (head steps {args.sweep_steps})")
        lines.append(format_table(
            ["frames", "grid", "backbone speedup", "analytic ratio", "vs analytic", "last/first",
             "cached tok/s", "recompute tok/s", "joint tok/s"],
            [[s["frames"], s["grid"], s.get("kv_cache_backbone_speedup", float("nan")),
              s.get("analytic_flop_ratio", float("nan")), s.get("speedup_vs_analytic", float("nan")),
              s.get("last_over_first_frame", float("nan")), s.get("cached_tokens_per_s", float("nan")),
              s.get("recompute_tokens_per_s", float("nan")), s.get("joint_tokens_per_s", float("nan"))]
             for s in sweep]))
    lines.append(f"\nthreads={threads} load/cpu: {meter.info()} (timings on a shared machine: "
                 "compare the ratios, measured in one process)")
    metrics = {**head, "preset": args.preset, "generated_frames": args.frames, "grid": args.grid,
               "batch": args.batch, "num_iter": args.num_iter, "threads": threads,
               "temporal_window": args.window,
               "goal_speedup_vs_analytic": 0.8, "goal_last_over_first_frame": 1.25,
               **{f"{m}_{k}": v[k] for m, v in main_point.items()
                  for k in ("backbone_s", "head_s", "wall_s", "tokens_per_s", "backbone_gflop",
                            "head_share", "rss_delta_mb")},
               "cached_ms_per_frame": [round(f["backbone_ms"] + f["head_ms"], 3)
                                       for f in main_point.get("cached", {}).get("per_frame", [])],
               "cached_backbone_ms_per_frame": [round(f["backbone_ms"], 3) for f in
                                                main_point.get("cached", {}).get("per_frame", [])],
               "recompute_backbone_ms_per_frame": [round(f["backbone_ms"], 3) for f in
                                                   main_point.get("recompute", {}).get("per_frame", [])],
               "kv_cache_mb": main_point.get("cached", {}).get("kv_cache_mb"),
               "process_peak_rss_mb": peak_memory_mb("cpu"), "machine": meter.info(),
               "sweep": sweep}
    variant = f"{args.preset} {args.frames} frames {args.grid}x{args.grid} batch {args.batch}"
    if args.window:
        variant += f" window {args.window}"
    config = bench_config("kv_cache", args, cfg, variant=variant)
    return finish("kv_cache", args, config, metrics, meter.wall, "\n".join(lines),
                  headline=HEADLINE)


if __name__ == "__main__":
    main()
