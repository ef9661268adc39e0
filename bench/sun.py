"""`make sun`: train and evaluate the SpeedUpNet CPU testbed, then write paper_tables/sun.{md,tex}.

    python bench/sun.py [--quick] [--seeds 0,1,2] [--threads 2] [--results PATH] [--out DIR]
                        [--timing-threads 1,2] [--timing-repeats 5] [--timing-batch 64]

Pipeline (core/sun/): train the tiny text-to-image teacher and its text encoder; fine-tune a
copy on the "stripes" style (the community-model stand-in); train the evaluation classifier;
then per seed: cache teacher 25-step CFG trajectories, train the adapter variants (SUN, without
MSC, without attention normalisation), save each as safetensors, reload it with load_sun and
evaluate every method on held-out prompt combinations. The style model gets the *base-trained*
SUN file, unchanged. One kind="sun" row per (domain, method, seed) is appended to the results
table; the Markdown/LaTeX table is rendered from exactly the rows this invocation wrote.
Wall-clock (bench/timing.py): after the quality metrics, every method of a domain samples the
same first --timing-batch prompts of the suite in interleaved rounds (one warm-up round, then
--timing-repeats rounds) at each --timing-threads count; rows get the median ms/img and speedup
vs the reference (median of per-round ratios) with order-statistic intervals per thread count,
and the per-round ratios, which the table pools over seeds. `ms_per_image` and `speedup` are
the figures at --threads.
--quick shrinks every size (a couple of minutes) and writes under runs/sun_quick/ by default,
so development never touches paper_tables/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import torch  # noqa: E402

from bench import timing  # noqa: E402
from core.results import append_row, git_info, make_row  # noqa: E402
from core.sun import adapter as sun_adapter  # noqa: E402
from core.sun import classifier as sun_classifier  # noqa: E402
from core.sun import distill as sun_distill  # noqa: E402
from core.sun import evaluate as sun_eval  # noqa: E402
from core.sun import teacher as sun_teacher  # noqa: E402
from core.sun import testbed  # noqa: E402
from core.sun.config import VARIANTS, SunConfig  # noqa: E402

REF = "teacher25_cfg"
FLAT = {"ablation": "ablation", "table": "table", "preset": "preset", "seed": "seed",
        "method": "method", "domain": "domain"}
COLUMNS = (  # metric, header, format, lower is better (None: no direction)
    ("nfe", "NFE", "{:.0f}", None), ("ms_per_image", "ms/img", "{:.2f}", True),
    ("speedup", "speedup", "{:.1f}x", False), ("psnr_vs_ref", "PSNR vs ref (dB)", "{:.2f}", False),
    ("feat_l2_vs_ref", "feat L2 vs ref", "{:.2f}", True), ("fd_real", "FD real", "{:.1f}", True),
    ("fd_teacher", "FD teacher", "{:.1f}", True), ("attr_acc", "attr acc", "{:.3f}", False),
    ("neg_hit", "neg hit", "{:.3f}", True), ("neg_hit_empty", "neg hit (no neg)", "{:.3f}", None))
METHOD_NOTES = {
    "teacher25_cfg": "teacher, DPM-Solver++ 25 steps, CFG (reference)",
    "teacher4_cfg": "teacher, 4 steps, CFG", "teacher4_nocfg": "teacher, 4 steps, no CFG",
    "sun": "SUN adapter, 4 steps", "sun_no_msc": "SUN without MSC loss, 4 steps",
    "sun_no_attn_norm": "SUN without attention normalisation, 4 steps",
}


SPEEDUP_CLAIM = 10.0  # SUN's ">10x vs 25-step DPM-Solver++ with CFG"


@dataclass(frozen=True)
class TimingOptions:
    """How the methods are timed: interleaved rounds at each thread count (bench/timing.py)."""
    threads: tuple[int, ...] = (1, 2)
    repeats: int = 5
    warmup: int = 1
    batch: int = 64  # prompts of the suite per timed sampling call (the generation chunk)
    headline: int = 2  # the thread count whose figures fill `ms_per_image` and `speedup`

    def __post_init__(self):
        if self.headline not in self.threads or min(self.threads) < 1:
            raise ValueError(f"timing threads {self.threads} must be >= 1 and include the run's "
                             f"--threads {self.headline}")
        if self.repeats < 1 or self.warmup < 0 or self.batch < 1:
            raise ValueError("timing repeats and batch >= 1, warmup >= 0")


def log(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------- stages


def train_base_models(cfg: SunConfig) -> dict:
    """Teacher + text encoder, the style fine-tune and the classifier (trained once)."""
    g = torch.Generator().manual_seed(cfg.base_seed)
    unet = sun_teacher.build_unet(cfg.teacher, g)
    encoder = sun_teacher.build_text_encoder(cfg.teacher, g)
    t0 = time.perf_counter()
    sun_teacher.train_denoiser(unet, encoder, cfg.teacher, style="base",
                               num_steps=cfg.teacher.num_steps, lr=cfg.teacher.lr, generator=g,
                               log=log)
    t1 = time.perf_counter()
    style = sun_teacher.finetune_style(unet, encoder, cfg.teacher, g, log=log)
    t2 = time.perf_counter()
    clf = sun_classifier.train_classifier(cfg.classifier_steps, g, log=log)
    t3 = time.perf_counter()
    log(f"base models: teacher {t1 - t0:.0f}s, style fine-tune {t2 - t1:.0f}s, "
        f"classifier {t3 - t2:.0f}s")
    return {"unet": unet, "style": style, "encoder": encoder, "clf": clf,
            "times": {"teacher_s": t1 - t0, "style_s": t2 - t1, "classifier_s": t3 - t2}}


def train_adapters(cfg: SunConfig, models: dict, seed: int, out_dir: Path) -> dict[str, Path]:
    """Cache the teacher trajectories for this seed and train every adapter variant on them."""
    g = torch.Generator().manual_seed(1000 + seed)
    train_combos, _ = testbed.split_combinations()
    t0 = time.perf_counter()
    cache = sun_distill.build_trajectory_cache(models["unet"], models["encoder"], train_combos,
                                               cfg.distill, g)
    log(f"seed {seed}: {cfg.distill.pool_size} teacher trajectories cached in "
        f"{time.perf_counter() - t0:.0f}s")
    paths = {}
    for name in cfg.variants:
        dcfg = dataclasses.replace(cfg.distill, **VARIANTS[name])
        adapter = sun_adapter.install_sun(models["unet"], add_pos=dcfg.add_pos,
                                          attn_norm=dcfg.attn_norm)
        t0 = time.perf_counter()
        sun_distill.train_adapter(models["unet"], adapter, models["encoder"], cache, dcfg,
                                  torch.Generator().manual_seed(2000 + seed), log=log)
        paths[name] = out_dir / f"{name}_seed{seed}.safetensors"
        adapter.save(paths[name])
        adapter.remove()
        log(f"seed {seed}: adapter {name} trained in {time.perf_counter() - t0:.0f}s")
    return paths


def time_domain(unet, methods: dict, encoder, suites, opts: TimingOptions) -> dict[str, dict]:
    """Interleaved timing of every method on the suite's first `opts.batch` prompts: per method,
    ms/img and speedup vs REF (median, lo, hi) and the per-round speedups, per thread count."""
    n = min(opts.batch, suites.labels.shape[0])
    with torch.no_grad():
        pos, neg = encoder(suites.labels[:n]), encoder(suites.neg[:n])
    calls = {name: partial(sampler, pos, neg, suites.noise[:n])
             for name, (sampler, _) in methods.items()}
    adapters = {}
    for name, (_, path) in methods.items():
        if path:
            adapters[name] = sun_adapter.load_sun(unet, path)
            adapters[name].remove()
    attached = [None]

    def prepare(name: str) -> None:  # untimed: the method's adapter on, any other off
        if attached[0] is not adapters.get(name):
            if attached[0] is not None:
                attached[0].remove()
            attached[0] = adapters.get(name)
            if attached[0] is not None:
                attached[0].attach()
    try:
        with torch.no_grad():
            timed = timing.time_methods(calls, REF, threads=opts.threads, repeats=opts.repeats,
                                        warmup=opts.warmup, prepare=prepare)
    finally:
        if attached[0] is not None:
            attached[0].remove()
    out: dict[str, dict] = {name: {"timing_batch": n} for name in methods}
    for threads, by_method in timed.items():
        for name, t in by_method.items():
            ms, sp = t["seconds"], t["speedup"]
            out[name] |= {f"ms_per_image_t{threads}{sfx}": 1000 * ms[k] / n
                          for k, sfx in (("median", ""), ("lo", "_lo"), ("hi", "_hi"))}
            out[name] |= {f"speedup_t{threads}{sfx}": sp[k]
                          for k, sfx in (("median", ""), ("lo", "_lo"), ("hi", "_hi"))}
            out[name][f"speedup_t{threads}_rounds"] = t["speedup_rounds"]
    for metrics in out.values():
        metrics["ms_per_image"] = metrics[f"ms_per_image_t{opts.headline}"]
        metrics["speedup"] = metrics[f"speedup_t{opts.headline}"]
    return out


def evaluate_domain(cfg: SunConfig, models: dict, domain: str, suites, adapters: dict,
                    seed: int, timing_opts: TimingOptions = TimingOptions()) -> dict[str, dict]:
    """All methods on one teacher (base or style); returns method -> metrics."""
    unet = models["unet"] if domain == "base" else models["style"]
    style = "base" if domain == "base" else "stripes"
    enc, clf, w = models["encoder"], models["clf"], cfg.distill.guidance
    steps = cfg.distill.student_steps
    methods = {REF: (sun_eval.teacher_cfg_sampler(unet, cfg.distill.teacher_steps, w), None),
               "teacher4_cfg": (sun_eval.teacher_cfg_sampler(unet, steps, w), None),
               "teacher4_nocfg": (sun_eval.teacher_plain_sampler(unet, steps), None)}
    for name in (adapters if domain == "base" else ["sun"]):  # style: the base-trained file
        methods[name] = (sun_eval.sun_sampler(unet, steps), adapters[name])
    g = torch.Generator().manual_seed(3000 + seed)
    real = testbed.render(suites.labels, g, style)
    empty = testbed.empty_captions(suites.neg_pos.shape[0])
    results, ref, indep = {}, None, None
    for name, (sampler, adapter_file) in methods.items():
        adapter = sun_adapter.load_sun(unet, adapter_file) if adapter_file else None
        try:
            images = sun_eval.generate(sampler, enc, suites.labels, suites.neg, suites.noise)
            if name == REF:
                ref = images
                indep = sun_eval.generate(sampler, enc, suites.labels, suites.neg,
                                          suites.noise_indep)
            neg_images = sun_eval.generate(sampler, enc, suites.neg_pos, suites.neg_neg,
                                           suites.neg_noise)
            no_neg = sun_eval.generate(sampler, enc, suites.neg_pos, empty, suites.neg_noise)
        finally:
            if adapter is not None:
                adapter.remove()
        metrics = sun_eval.prompt_metrics(clf, images, suites.labels, ref, real, indep)
        metrics["neg_hit"] = sun_eval.negative_hit_rate(clf, neg_images, suites.neg_neg,
                                                        suites.neg_slot)
        metrics["neg_hit_empty"] = sun_eval.negative_hit_rate(clf, no_neg, suites.neg_neg,
                                                              suites.neg_slot)
        nfe_per_step = 2 if name.endswith("_cfg") else 1
        metrics["nfe"] = nfe_per_step * (cfg.distill.teacher_steps if name == REF else steps)
        results[name] = metrics
    timed = time_domain(unet, methods, enc, suites, timing_opts)
    for name, metrics in results.items():
        metrics |= timed[name]
        log(f"  [{domain}] {name:18s} " + " ".join(f"{k}={v:.3g}" for k, v in metrics.items()
                                                   if isinstance(v, (int, float))))
    return results


# ----------------------------------------------------------------------------- table


def _cell(values: list[float], fmt: str) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(statistics.stdev(values))}"


def aggregate(rows: list[dict]) -> dict[tuple[str, str], dict[str, list[float]]]:
    """(domain, method) -> metric -> per-seed values, from ok rows, in first-seen order."""
    out: dict[tuple[str, str], dict[str, list[float]]] = {}
    for row in rows:
        if row.get("status") != "ok":
            continue
        cell = out.setdefault((row["domain"], row["method"]), {})
        for key, value in row["metrics"].items():
            if isinstance(value, (int, float)) and value is not None:
                cell.setdefault(key, []).append(float(value))
    return out


def pooled_speedups(rows: list[dict]) -> dict[tuple[str, str], dict[int, dict]]:
    """(domain, method) -> thread count -> median_interval of the per-round speedups of all ok
    rows (seeds pooled: every seed times the same work on its own suite)."""
    rounds: dict[tuple[str, str], dict[int, list[float]]] = {}
    for row in rows:
        if row.get("status") != "ok":
            continue
        for key, value in row["metrics"].items():
            if key.startswith("speedup_t") and key.endswith("_rounds"):
                threads = int(key.removeprefix("speedup_t").removesuffix("_rounds"))
                cell = rounds.setdefault((row["domain"], row["method"]), {})
                cell.setdefault(threads, []).extend(value)
    return {k: {n: timing.median_interval(v) for n, v in sorted(by.items())}
            for k, by in rounds.items()}


def speedup_lines(rows: list[dict]) -> list[str]:
    """The wall-clock table: pooled per-round speedups vs REF, median [lo, hi], per thread count."""
    pooled = pooled_speedups(rows)
    counts = sorted({n for by in pooled.values() for n in by})
    if not counts:
        return []
    lines = ["", f"Wall-clock speedup vs `{REF}` (median [lo, hi] of per-round ratios from "
             "interleaved rounds, seeds pooled; order-statistic interval, coverage in brackets):",
             "", "| domain | method | " + " | ".join(f"{n} thread{'s' * (n > 1)}" for n in counts)
             + " |", "|---|---|" + "---:|" * len(counts)]
    for (domain, method), by in pooled.items():
        cells = [f"{timing.fmt(by[n], '.1f', 'x')} ({by[n]['coverage']:.3f}, n={by[n]['n']})"
                 if n in by else "n/a" for n in counts]
        lines.append(f"| {domain} | {method} | " + " | ".join(cells) + " |")
    return lines


def speedup_claim(rows: list[dict], agg: dict) -> str | None:
    """The >10x verdict: from the pooled intervals at every thread count when the rows have
    per-round speedups (holds only if every lower end is above 10x), else from the mean."""
    by = pooled_speedups(rows).get(("base", "sun"))
    if by:
        parts = "; ".join(f"{n} thread{'s' * (n > 1)}: {timing.fmt(s, '.1f', 'x')}"
                          for n, s in by.items())
        if all(s["lo"] > SPEEDUP_CLAIM for s in by.values()):
            verdict = "holds"
        elif all(s["hi"] < SPEEDUP_CLAIM for s in by.values()):
            verdict = "does not hold"
        else:
            verdict = "inconclusive (an interval straddles 10x or the thread counts disagree)"
        return (f"- >10x wall-clock vs 25-step DPM-Solver++ with CFG: {verdict} ({parts}; "
                "median [lo, hi] of per-round speedups).")
    s = mean(agg, "base", "sun", "speedup")
    if s is None:
        return None
    return (f"- >10x wall-clock vs 25-step DPM-Solver++ with CFG: "
            f"{'holds' if s > SPEEDUP_CLAIM else 'does not hold'} ({s:.1f}x).")


def mean(agg: dict, domain: str, method: str, metric: str) -> float | None:
    values = agg.get((domain, method), {}).get(metric)
    return statistics.mean(values) if values else None


def claims(agg: dict, rows: list[dict] = ()) -> list[str]:
    """Which SUN claims hold here, decided from the numbers (means over seeds; the speedup
    from the pooled per-round intervals when `rows` carry them)."""
    m = lambda d, k, x: mean(agg, d, k, x)  # noqa: E731
    lines = [line for line in [speedup_claim(list(rows), agg)] if line]
    if None not in (m("base", "sun", "psnr_vs_ref"), m("base", "teacher4_cfg", "psnr_vs_ref")):
        a, b = m("base", "sun", "psnr_vs_ref"), m("base", "teacher4_cfg", "psnr_vs_ref")
        lines.append(f"- Fidelity at 4 steps: SUN {a:.2f} dB vs the teacher's own 4-step CFG "
                     f"{b:.2f} dB (same noise, vs 25-step CFG): "
                     f"{'SUN is closer' if a > b else 'SUN is not closer'}.")
    if None not in (m("base", "sun", "neg_hit"), m("base", "sun", "neg_hit_empty")):
        a, b = m("base", "sun", "neg_hit"), m("base", "sun", "neg_hit_empty")
        r = m("base", REF, "neg_hit")
        lines.append(f"- Negative prompt stays controllable: negated attribute appears in "
                     f"{a:.3f} of SUN samples vs {b:.3f} with an empty negative (teacher 25-step "
                     f"CFG: {r:.3f}): {'holds' if a < b else 'does not hold'}.")
    if None not in (m("style", "sun", "psnr_vs_ref"), m("style", "teacher4_cfg", "psnr_vs_ref")):
        a, b = m("style", "sun", "psnr_vs_ref"), m("style", "teacher4_cfg", "psnr_vs_ref")
        lines.append(f"- Plug-in to the fine-tuned model without retraining: SUN {a:.2f} dB vs "
                     f"that model's own 4-step CFG {b:.2f} dB against its 25-step CFG: "
                     f"{'holds' if a > b else 'does not hold'}.")
    if None not in (m("base", "sun", "psnr_vs_ref"), m("base", "sun_no_msc", "psnr_vs_ref")):
        a, b = m("base", "sun", "psnr_vs_ref"), m("base", "sun_no_msc", "psnr_vs_ref")
        lines.append(f"- MSC matters: {a:.2f} dB with vs {b:.2f} dB without: "
                     f"{'holds' if a > b else 'does not hold'}.")
    return lines


def render_markdown(rows: list[dict], header: str) -> str:
    agg = aggregate(rows)
    seeds = sorted({r["seed"] for r in rows if r.get("status") == "ok"})
    lines = [header, "", f"Mean ± sample std over seeds {seeds}; held-out prompt combinations. "
             "Reference = the domain's teacher, 25-step DPM-Solver++ with CFG; 'style' = the "
             "fine-tuned teacher running the base-trained SUN file unchanged.", "",
             "| domain | method | " + " | ".join(c[1] for c in COLUMNS) + " |",
             "|---|---|" + "---:|" * len(COLUMNS)]
    for (domain, method), metrics in agg.items():
        cells = [_cell(metrics.get(k, []), fmt) for k, _, fmt, _ in COLUMNS]
        lines.append(f"| {domain} | {method} | " + " | ".join(cells) + " |")
    failed = [r for r in rows if r.get("status") != "ok"]
    if failed:
        lines += ["", f"{len(failed)} failed row(s), not averaged: " +
                  ", ".join(f"seed {r.get('seed')}: {str(r.get('error', ''))[:80]}"
                            for r in failed)]
    lines += speedup_lines(rows)
    lines += ["", "Methods: " + "; ".join(f"`{k}` {v}" for k, v in METHOD_NOTES.items()) + ".",
              "", "Claims at this scale (decided from the numbers above):", *claims(agg, rows)]
    return "\n".join(lines) + "\n"


def render_latex(rows: list[dict], header: str) -> str:
    agg = aggregate(rows)
    esc = lambda s: s.replace("_", r"\_").replace("%", r"\%")  # noqa: E731
    out = [f"% {header}", r"\begin{tabular}{ll" + "r" * len(COLUMNS) + "}", r"\toprule",
           "domain & method & " + " & ".join(esc(c[1]) for c in COLUMNS) + r" \\", r"\midrule"]
    for (domain, method), metrics in agg.items():
        cells = [_cell(metrics.get(k, []), fmt).replace("±", r"$\pm$") for k, _, fmt, _ in COLUMNS]
        out.append(f"{domain} & {esc(method)} & " + " & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- main


def run_seed(cfg: SunConfig, models: dict, seed: int, art_dir: Path,
             timing_opts: TimingOptions = TimingOptions()) -> dict[str, dict]:
    adapters = train_adapters(cfg, models, seed, art_dir)
    _, held_out = testbed.split_combinations()
    suites = sun_eval.make_suites(held_out, cfg.num_prompt, cfg.num_negative,
                                  torch.Generator().manual_seed(4000 + seed))
    return {domain: evaluate_domain(cfg, models, domain, suites, adapters, seed, timing_opts)
            for domain in ("base", "style")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, a couple of minutes")
    p.add_argument("--seeds", help="comma-separated seeds (default: 0,1,2; quick: 0,1)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--results", help="results table (default paper_tables/runs.jsonl; quick: "
                   "runs/sun_quick/runs.jsonl)")
    p.add_argument("--out", help="where sun.md/sun.tex go (default paper_tables; quick: "
                   "runs/sun_quick)")
    p.add_argument("--timing-threads", default="1,2",
                   help="thread counts the methods are timed at (default 1,2; --threads is added)")
    p.add_argument("--timing-repeats", type=int, default=5, help="interleaved timed rounds")
    p.add_argument("--timing-batch", type=int, default=64, help="prompts per timed call")
    args = p.parse_args(argv)
    try:
        counts = {int(n) for n in args.timing_threads.split(",")} | {args.threads}
        timing_opts = TimingOptions(threads=tuple(sorted(counts)), repeats=args.timing_repeats,
                                    batch=args.timing_batch, headline=args.threads)
    except ValueError as e:
        p.error(f"--timing-threads {args.timing_threads!r} / --timing-*: {e}")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    cfg = SunConfig.quick() if args.quick else SunConfig()
    if args.seeds:
        cfg = dataclasses.replace(cfg, seeds=tuple(int(s) for s in args.seeds.split(",")))
    default_dir = ROOT / ("runs/sun_quick" if args.quick else "paper_tables")
    results = Path(args.results) if args.results else default_dir / "runs.jsonl"
    out = Path(args.out) if args.out else default_dir
    art_dir = ROOT / "runs" / ("sun_quick" if args.quick else "sun") / "adapters"
    art_dir.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    git = git_info()
    invocation = f"{time.strftime('%Y%m%dT%H%M%S')}-{git['commit'][:7]}"
    models = train_base_models(cfg)
    written = []
    for seed in cfg.seeds:
        seed_start = time.perf_counter()
        base = dataclasses.asdict(cfg) | {"seed": seed, "invocation": invocation}
        try:
            per_domain = run_seed(cfg, models, seed, art_dir, timing_opts)
        except Exception as e:  # a failed seed is a visible row, the other seeds still run
            tb = "".join(traceback.format_exception(e)[-3:])
            row = make_row(base | {"method": "sun", "domain": "base"}, kind="sun", status="failed",
                           error=f"{type(e).__name__}: {e}\n{tb}", git=git, flat=FLAT,
                           wall_time_s=time.perf_counter() - seed_start, factor="method")
            written.append(append_row(results, row))
            log(f"seed {seed} FAILED: {e}")
            continue
        for domain, methods in per_domain.items():
            for method, metrics in methods.items():
                row = make_row(base | {"method": method, "domain": domain}, kind="sun",
                               status="ok", metrics=metrics, git=git, flat=FLAT, factor="method",
                               wall_time_s=time.perf_counter() - seed_start,
                               base_times=models["times"])
                written.append(append_row(results, row))
    total = time.perf_counter() - start
    command = "python bench/sun.py " + " ".join(argv if argv is not None else sys.argv[1:])
    header = (f"Generated by `{command.strip()}` at commit {git['commit'][:7]}"
              f"{' (dirty)' if git['dirty'] else ''} from {len(written)} rows "
              f"(invocation {invocation}, {total / 60:.1f} min, {args.threads} threads; timed at "
              f"{', '.join(map(str, timing_opts.threads))} threads, {timing_opts.repeats} "
              f"interleaved rounds of {timing_opts.batch} prompts).")
    md = render_markdown(written, header)
    (out / "sun.md").write_text(md)
    (out / "sun.tex").write_text(render_latex(written, header))
    print(md)
    agg = aggregate(written)
    summary = {f"{d}/{m}": {k: round(statistics.mean(v), 4) for k, v in ms.items()}
               for (d, m), ms in agg.items()}
    ok = all(r["status"] == "ok" for r in written)
    print(json.dumps({"table": str(out / "sun.md"), "results": str(results), "rows": len(written),
                      "ok": ok, "wall_time_s": round(total, 1), "summary": summary}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
