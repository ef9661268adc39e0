"""`make sun`: train and evaluate the SpeedUpNet CPU testbed, then write paper_tables/sun.{md,tex}.

    python bench/sun.py [--quick] [--seeds 0,1,2] [--threads 2] [--results PATH] [--out DIR]
                        [--timing-threads 1,2] [--timing-repeats 5] [--timing-batch 64]

Pipeline (core/sun/): train the tiny text-to-image teacher and its text encoder; fine-tune a
copy on the "stripes" style (the community-model stand-in); train the evaluation classifier;
then per seed: cache teacher 25-step CFG trajectories, train the adapter variants (SUN, without
MSC, without attention normalisation), save each as safetensors, reload it with load_sun and
evaluate every method on held-out prompt combinations. The style model gets every *base-trained*
variant file, unchanged, and `sun_retrained`, the upper bound: the `sun` configuration trained
on the style model's own 25-step CFG trajectories (same prompt pairs, noise and training seed).
Each domain also runs `teacher2_cfg`, the teacher with CFG at SUN's cost in UNet evaluations
(SunConfig.equal_cost_steps: 2 steps x 2 passes = 4 steps x 1 pass). One kind="sun" row per
(domain, method, seed) is appended to the results table; the Markdown/LaTeX table is rendered
from exactly the rows this invocation wrote, and every verdict under it comes from `claims()`
(paired t-tests across seeds, bench/tables/stats.py; the >10x line from pooled timing rounds).
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
from bench.tables import readings  # noqa: E402
from bench.tables.stats import Paired  # noqa: E402
from core.results import append_row, git_info, make_row  # noqa: E402
from core.sun import adapter as sun_adapter  # noqa: E402
from core.sun import classifier as sun_classifier  # noqa: E402
from core.sun import distill as sun_distill  # noqa: E402
from core.sun import evaluate as sun_eval  # noqa: E402
from core.sun import teacher as sun_teacher  # noqa: E402
from core.sun import testbed  # noqa: E402
from core.sun.config import CFG_PASSES, SUN_PASSES, VARIANTS, SunConfig  # noqa: E402

REF = "teacher25_cfg"
FEW_CFG = "teacher4_cfg"  # the teacher with CFG at SUN's step count (twice SUN's NFE)
EQUAL_COST = "teacher2_cfg"  # the teacher with CFG at SUN's NFE (SunConfig.equal_cost_steps)
NO_CFG = "teacher4_nocfg"
RETRAINED = "sun_retrained"  # style only: `sun` trained on the fine-tuned teacher's trajectories
DOMAINS = ("base", "style")
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
    "teacher4_cfg": "teacher, 4 steps, CFG",
    "teacher2_cfg": "teacher, 2 steps, CFG: 4 UNet evaluations, SUN's cost (the equal-cost "
                    "baseline)",
    "teacher4_nocfg": "teacher, 4 steps, no CFG",
    "sun": "SUN adapter, 4 steps", "sun_no_msc": "SUN without MSC loss, 4 steps",
    "sun_no_attn_norm": "SUN without attention normalisation, 4 steps",
    "sun_retrained": "style only: SUN trained on the fine-tuned teacher's own 25-step CFG "
                     "trajectories, 4 steps (the plug-in upper bound)",
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


@dataclass(frozen=True)
class Method:
    """One sampling method of a domain: `kind` "cfg" (the teacher with CFG, CFG_PASSES UNet
    evaluations per step), "plain" (the teacher, negative ignored) or "sun" (the domain's UNet
    with the adapter file trained as `adapter`, SUN_PASSES per step)."""
    kind: str
    steps: int
    adapter: str | None = None

    @property
    def nfe(self) -> int:
        return self.steps * (CFG_PASSES if self.kind == "cfg" else SUN_PASSES)


def domain_methods(cfg: SunConfig, domain: str) -> dict[str, Method]:
    """The methods a domain evaluates and times, in table order. The style domain runs every
    base-trained variant file unchanged, then RETRAINED."""
    if domain not in DOMAINS:
        raise ValueError(f"domain={domain!r}: choose one of {DOMAINS}")
    steps = cfg.distill.student_steps
    methods = {REF: Method("cfg", cfg.distill.teacher_steps), FEW_CFG: Method("cfg", steps),
               EQUAL_COST: Method("cfg", cfg.equal_cost_steps), NO_CFG: Method("plain", steps)}
    methods |= {name: Method("sun", steps, name) for name in cfg.variants}
    if domain == "style":
        methods[RETRAINED] = Method("sun", steps, RETRAINED)
    return methods


def sampler_for(unet, method: Method, guidance: float) -> sun_eval.Sampler:
    if method.kind == "cfg":
        return sun_eval.teacher_cfg_sampler(unet, method.steps, guidance)
    if method.kind == "plain":
        return sun_eval.teacher_plain_sampler(unet, method.steps)
    return sun_eval.sun_sampler(unet, method.steps)


def train_on_teacher(cfg: SunConfig, unet, encoder, seed: int, out_dir: Path,
                     runs: dict[str, dict], label: str) -> dict[str, Path]:
    """Cache `unet`'s 25-step CFG trajectories for this seed and train one adapter per entry of
    `runs` (file name -> DistillConfig overrides) on them. The cache and training generators
    depend on the seed only, so every teacher sees the same prompt pairs and noise."""
    g = torch.Generator().manual_seed(1000 + seed)
    train_combos, _ = testbed.split_combinations()
    t0 = time.perf_counter()
    cache = sun_distill.build_trajectory_cache(unet, encoder, train_combos, cfg.distill, g)
    log(f"seed {seed}: {cfg.distill.pool_size} {label} teacher trajectories cached in "
        f"{time.perf_counter() - t0:.0f}s")
    paths = {}
    for name, overrides in runs.items():
        dcfg = dataclasses.replace(cfg.distill, **overrides)
        adapter = sun_adapter.install_sun(unet, add_pos=dcfg.add_pos, attn_norm=dcfg.attn_norm)
        t0 = time.perf_counter()
        sun_distill.train_adapter(unet, adapter, encoder, cache, dcfg,
                                  torch.Generator().manual_seed(2000 + seed), log=log)
        paths[name] = out_dir / f"{name}_seed{seed}.safetensors"
        adapter.save(paths[name])
        adapter.remove()
        log(f"seed {seed}: adapter {name} trained in {time.perf_counter() - t0:.0f}s")
    return paths


def train_adapters(cfg: SunConfig, models: dict, seed: int, out_dir: Path) -> dict[str, Path]:
    """Every adapter variant on the base teacher's trajectories, and RETRAINED (the `sun`
    configuration) on the style teacher's own: adapter name -> saved file."""
    paths = train_on_teacher(cfg, models["unet"], models["encoder"], seed, out_dir,
                             {name: VARIANTS[name] for name in cfg.variants}, "base")
    paths |= train_on_teacher(cfg, models["style"], models["encoder"], seed, out_dir,
                              {RETRAINED: VARIANTS["sun"]}, "style")
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
    """All methods of domain_methods on one teacher (base or style); returns method -> metrics.
    `adapters`: adapter name -> file, from train_adapters."""
    unet = models["unet"] if domain == "base" else models["style"]
    style = "base" if domain == "base" else "stripes"
    enc, clf, w = models["encoder"], models["clf"], cfg.distill.guidance
    table = domain_methods(cfg, domain)
    methods = {name: (sampler_for(unet, m, w), adapters[m.adapter] if m.adapter else None)
               for name, m in table.items()}
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
        metrics["nfe"] = table[name].nfe
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


# ----------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Comparison:
    """Method a against method b on one metric, paired by seed (`compare`)."""
    verdict: str  # "holds", "does not hold" or "inconclusive" (for "a is better than b")
    a: float  # mean of a over the seeds both have
    b: float  # mean of b over the same seeds
    evidence: str  # "diff +0.74 [+0.42, +1.06], p = 0.003, paired over 3 seeds"
    test: Paired  # the per-seed differences a - b: n, mean, 95 % interval, p

    def said(self) -> str:
        if self.verdict != "inconclusive":
            return self.verdict
        if self.test.lo == self.test.hi == 0:
            return "inconclusive (the difference is 0 on every seed)"
        return "inconclusive (the 95 % interval of the difference straddles 0)"


def by_seed(rows: list[dict]) -> dict[tuple[str, str], dict[str, dict]]:
    """(domain, method) -> metric -> seed -> value, from ok rows (a later row of a seed wins)."""
    out: dict[tuple[str, str], dict[str, dict]] = {}
    for row in rows:
        if row.get("status") != "ok":
            continue
        cell = out.setdefault((row["domain"], row["method"]), {})
        for key, value in row["metrics"].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                cell.setdefault(key, {})[row.get("seed")] = float(value)
    return out


def compare(values: dict, a: tuple[str, str], b: tuple[str, str], metric: str,
            lower_is_better: bool = False, metric_b: str | None = None) -> Comparison | None:
    """Does (domain, method) `a` beat `b` on `metric`? Paired by seed (bench/tables/stats.py via
    readings.paired): holds when the 95 % t-interval of the mean per-seed difference a - b lies
    on the better side of 0, does not hold when it lies on the other side, inconclusive when it
    straddles 0. With one shared seed there is no test and the sign of the difference decides.
    None when no seed has both. `values`: by_seed(rows); `metric_b`: b's metric if not `metric`."""
    va = values.get(a, {}).get(metric, {})
    vb = values.get(b, {}).get(metric_b or metric, {})
    test, seeds = readings.paired(va, vb)
    if test.n == 0:
        return None
    if test.n == 1:
        better = test.mean < 0 if lower_is_better else test.mean > 0
        verdict = "holds" if better else "does not hold"
        evidence = f"{readings.describe(test)}, 1 seed"
    else:
        verdict = {"supports": "holds", "contradicts": "does not hold",
                   "inconclusive": "inconclusive"}[readings.verdict(test, lower_is_better)]
        evidence = f"{readings.describe(test)}, paired over {test.n} seeds"
    return Comparison(verdict, statistics.fmean(va[s] for s in seeds),
                      statistics.fmean(vb[s] for s in seeds), evidence, test)


def mean(agg: dict, domain: str, method: str, metric: str) -> float | None:
    values = agg.get((domain, method), {}).get(metric)
    return statistics.mean(values) if values else None


def _name(agg: dict, domain: str, method: str) -> str:
    """`teacher2_cfg`, 4 NFE (the NFE from the rows, when they have it)."""
    nfe = mean(agg, domain, method, "nfe")
    return f"`{method}`" + (f", {nfe:g} NFE" if nfe is not None else "")


def _context(agg: dict, values: dict, domain: str, what: str, who: str) -> str:
    """The context sentence: the domain's 4-step CFG (twice SUN's NFE) against SUN."""
    c = compare(values, (domain, "sun"), (domain, FEW_CFG), "psnr_vs_ref")
    if c is None:
        return ""
    return (f" Context: {what} ({_name(agg, domain, FEW_CFG)}) {c.b:.2f} dB; {who} minus it: "
            f"{c.evidence}.")


def fidelity_claim(agg: dict, values: dict) -> list[str]:
    """Base SUN against the teacher's CFG at the same NFE; the 4-step CFG (twice the NFE) as
    context."""
    context = _context(agg, values, "base", "the teacher's 4-step CFG at twice the cost", "SUN")
    c = compare(values, ("base", "sun"), ("base", EQUAL_COST), "psnr_vs_ref")
    if c is None:
        return [f"- Fidelity at equal cost: not computed (no `{EQUAL_COST}` rows: these rows "
                f"predate the equal-cost baseline).{context}"] if context else []
    return [f"- Fidelity at equal cost: SUN ({_name(agg, 'base', 'sun')}) is closer to the "
            f"25-step CFG output (PSNR, same noise) than the teacher's CFG at the same cost "
            f"({_name(agg, 'base', EQUAL_COST)}): {c.said()} — {c.a:.2f} vs {c.b:.2f} dB "
            f"({c.evidence}).{context}"]


def negative_claim(agg: dict, values: dict) -> list[str]:
    """SUN's negated-attribute rate with the negative prompt against the same prompts with an
    empty negative (lower is better), paired by seed."""
    c = compare(values, ("base", "sun"), ("base", "sun"), "neg_hit", lower_is_better=True,
                metric_b="neg_hit_empty")
    if c is None:
        return []
    ref = mean(agg, "base", REF, "neg_hit")
    teacher = f"; teacher 25-step CFG: {ref:.3f}" if ref is not None else ""
    return [f"- Negative prompt stays controllable: {c.said()} — the negated attribute appears "
            f"in {c.a:.3f} of SUN samples with the negative prompt vs {c.b:.3f} with an empty "
            f"one ({c.evidence}{teacher})."]


def plugin_claim(agg: dict, values: dict) -> list[str]:
    """The base-trained SUN file on the style model against that model's CFG at the same NFE,
    and the share of the retrained adapter's gain over that baseline it keeps."""
    context = _context(agg, values, "style", "the fine-tune's own 4-step CFG at twice the cost",
                       "the base-trained SUN")
    head = "- Plug-in to the fine-tuned model without retraining"
    c = compare(values, ("style", "sun"), ("style", EQUAL_COST), "psnr_vs_ref")
    if c is None:
        return [f"{head}: not computed (no `{EQUAL_COST}` rows: these rows predate the equal-cost "
                f"baseline).{context}"] if context else []
    line = (f"{head}: the base-trained SUN file on the style model ({_name(agg, 'style', 'sun')}) "
            f"is closer to that model's 25-step CFG output than its CFG at the same cost "
            f"({_name(agg, 'style', EQUAL_COST)}): {c.said()} — {c.a:.2f} vs {c.b:.2f} dB "
            f"({c.evidence}).")
    upper = compare(values, ("style", RETRAINED), ("style", EQUAL_COST), "psnr_vs_ref")
    gap = compare(values, ("style", "sun"), ("style", RETRAINED), "psnr_vs_ref")
    if upper is None or gap is None:
        line += f" Upper bound: not computed (no `{RETRAINED}` rows)."
    elif upper.a - upper.b <= 0:
        line += (f" Upper bound `{RETRAINED}` (trained on the fine-tune's own trajectories) "
                 f"{upper.a:.2f} dB gains nothing over `{EQUAL_COST}` ({upper.b:.2f} dB), so no "
                 f"share of its gain is given; base-trained minus retrained: {gap.evidence}.")
    else:
        share = (c.a - c.b) / (upper.a - upper.b)
        line += (f" Against the upper bound `{RETRAINED}` (trained on the fine-tune's own "
                 f"trajectories, {upper.a:.2f} dB), the base-trained file keeps "
                 f"{100 * share:.0f} % of its PSNR gain over `{EQUAL_COST}` (base-trained minus "
                 f"retrained: {gap.evidence}).")
    return [line + context]


ABLATIONS = (("sun_no_msc", "The MSC loss helps"),
             ("sun_no_attn_norm", "Attention normalisation helps"))


def ablation_claims(values: dict) -> list[str]:
    """Each ablated variant against `sun`, in both domains (style: the base-trained files)."""
    lines = []
    for domain in DOMAINS:
        where = "base" if domain == "base" else "style: the base-trained files on the fine-tune"
        for variant, what in ABLATIONS:
            c = compare(values, (domain, "sun"), (domain, variant), "psnr_vs_ref")
            if c is not None:
                lines.append(f"- {what} ({where}): {c.said()} — PSNR {c.a:.2f} dB with vs "
                             f"{c.b:.2f} dB without (`{variant}`; {c.evidence}).")
    return lines


def claims(rows: list[dict]) -> list[str]:
    """Every verdict of the testbed, decided from the rows (the README quotes these lines): the
    >10x speedup from the pooled per-round intervals (speedup_claim), every other comparison by
    a paired test across seeds (compare)."""
    rows = list(rows)
    agg, values = aggregate(rows), by_seed(rows)
    lines = [line for line in [speedup_claim(rows, agg)] if line]
    lines += fidelity_claim(agg, values)
    lines += negative_claim(agg, values)
    lines += plugin_claim(agg, values)
    lines += ablation_claims(values)
    return lines


def render_markdown(rows: list[dict], header: str) -> str:
    agg = aggregate(rows)
    seeds = sorted({r["seed"] for r in rows if r.get("status") == "ok"})
    retrained = (f", and `{RETRAINED}`, trained on its own trajectories (the upper bound)"
                 if any(method == RETRAINED for _, method in agg) else "")
    lines = [header, "", f"Mean ± sample std over seeds {seeds}; held-out prompt combinations. "
             "Reference = the domain's teacher, 25-step DPM-Solver++ with CFG; 'style' = the "
             f"fine-tuned teacher running the base-trained SUN files unchanged{retrained}.", "",
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
    shown = {method for _, method in agg}
    lines += ["", "Methods: " + "; ".join(f"`{k}` {v}" for k, v in METHOD_NOTES.items()
                                          if k in shown) + ".",
              "", "Claims at this scale (decided from the rows above; every comparison but the "
              ">10x is paired by seed: mean per-seed difference with its 95 % t-interval and the "
              "paired t-test's p; holds / does not hold by the side of 0 the interval lies on, "
              "inconclusive when it straddles 0; with 1 seed the sign decides, no test):",
              *claims(rows)]
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
            for domain in DOMAINS}


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
