"""VBench-I2V scores: aggregate dimension values, check staged weights, run the official evaluator.

    python bench/vbench_i2v.py score FILE.json [--unit percent|fraction] [--partial]
    python bench/vbench_i2v.py preflight [--dimensions d1 d2 ...] [--verify-hashes]
    python bench/vbench_i2v.py evaluate VIDEOS --name NAME --full-info JSON [--images DIR] ...
    python bench/vbench_i2v.py reference

`score`: FILE holds the nine dimension values under VBench's keys (i2v_subject, i2v_background,
camera_motion, subject_consistency, background_consistency, motion_smoothness, dynamic_degree,
aesthetic_quality, imaging_quality), in percent by default; VBench's own `<name>_eval_results.json`
({dim: [aggregate, per-video...]}, fractions) is recognised and read as fractions. Prints a table,
then one JSON object with quality, i2v and total in percent as the last line. A missing dimension
is an error (exit 2) unless --partial, which still gives no Total (VBench would count it as 0).
`reference` recomputes the published VBench++ Table 3 rows (paper_tables/reference/).
Synthetic (syn_*) and proxy (proxy_*) metrics are never valid input here.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from core.metrics.aggregate import (BY_KEY, DIMENSION_KEYS, MissingDimensionError,  # noqa: E402
                                    aggregate, missing_dimensions, normalised, partial_scores,
                                    to_fractions)

REFERENCE_CSV = ROOT / "paper_tables" / "reference" / "vbench_i2v.csv"


def load_scores(path: str | Path, unit: str | None) -> tuple[dict, str]:
    """({dimension: value}, unit) from a JSON file of plain numbers or VBench eval results."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{dimension: value}}, got {type(data).__name__}")
    if any(isinstance(v, list) for v in data.values()):  # VBench's <name>_eval_results.json
        data = {k: (v[0] if isinstance(v, list) and v else v) for k, v in data.items()}
        unit = unit or "fraction"
    return data, unit or "percent"


def score_table(values: dict, unit: str) -> list[str]:
    fractions = to_fractions(values, unit)
    lines = [f"{'dimension':24s} {'score %':>8s} {'min':>7s} {'max':>7s} {'weight':>6s} "
             f"{'normalised':>10s}"]
    for key in DIMENSION_KEYS:
        d = BY_KEY[key]
        if key in fractions:
            lines.append(f"{key:24s} {100 * fractions[key]:8.2f} {d.min:7.4f} {d.max:7.4f} "
                         f"{d.weight:6.1f} {normalised(key, fractions[key]):10.4f}")
        else:
            lines.append(f"{key:24s} {'missing':>8s}")
    return lines


def cmd_score(args) -> int:
    try:
        values, unit = load_scores(args.file, args.unit)
        lines = score_table(values, unit)
        scores = partial_scores(values, unit) if args.partial else aggregate(values, unit)
    except (MissingDimensionError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    for k in ("quality", "i2v", "total"):
        print(f"{k + ' score':24s} " + ("not computed" if scores[k] is None else f"{scores[k]:8.2f}"))
    result = {**{k: None if v is None else round(v, 4) for k, v in scores.items()},
              "unit": "percent", "missing": missing_dimensions(values)}
    print(json.dumps(result, sort_keys=True))
    return 0


def cmd_preflight(args) -> int:
    from core.metrics.vbench_backend import Roots, preflight

    roots = Roots.from_env()
    problems = preflight(args.dimensions, roots, args.verify_hashes)
    print(f"roots: VBENCH_CACHE_DIR={roots.vbench_cache} TORCH_HOME={roots.torch_home} "
          f"clip={roots.clip_dir} dreamsim={roots.dreamsim_dir}")
    print("\n".join(problems) if problems else "all weights staged")
    print(json.dumps({"ok": not problems, "problems": problems}, sort_keys=True))
    return 1 if problems else 0


def cmd_evaluate(args) -> int:
    from core.metrics.vbench_backend import PreflightError, evaluate_i2v

    try:
        result = evaluate_i2v(args.videos, args.name, args.output, dimensions=args.dimensions,
                              full_info_json=args.full_info, custom_image_folder=args.images,
                              device=args.device, resolution=args.ratio,
                              verify_hashes=args.verify_hashes)
    except (PreflightError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for key, value in sorted(result["dimensions"].items()):
        print(f"{key:24s} {value:8.2f}")
    print(json.dumps(result, sort_keys=True))
    return 0


def reference_rows(path: Path = REFERENCE_CSV) -> list[dict]:
    """The published per-dimension rows with their aggregates recomputed by our aggregation."""
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            values = {k: float(r[k]) if r.get(k) else None for k in DIMENSION_KEYS}
            rows.append({"model": r["model"], **partial_scores(values), "citation": r["citation"]})
    return rows


def cmd_reference(args) -> int:
    rows = reference_rows()
    print(f"{'model':22s} {'quality':>8s} {'i2v':>8s} {'total':>8s}")
    for r in rows:
        cells = ["–" if r[k] is None else f"{r[k]:.2f}" for k in ("quality", "i2v", "total")]
        print(f"{r['model']:22s} " + " ".join(f"{c:>8s}" for c in cells))
    print(json.dumps({r["model"]: {k: None if r[k] is None else round(r[k], 2)
                                   for k in ("quality", "i2v", "total")} for r in rows},
                     sort_keys=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("score", help="Quality / I2V / Total from a JSON of dimension values")
    s.add_argument("file")
    s.add_argument("--unit", choices=("percent", "fraction"),
                   help="unit of the values (default: percent; fraction for VBench eval results)")
    s.add_argument("--partial", action="store_true", help="allow missing dimensions (no Total)")
    s.set_defaults(func=cmd_score)
    s = sub.add_parser("preflight", help="list missing VBench-I2V weight files")
    s.add_argument("--dimensions", nargs="+", default=list(DIMENSION_KEYS))
    s.add_argument("--verify-hashes", action="store_true", help="check the CLIP files' SHA-256")
    s.set_defaults(func=cmd_preflight)
    s = sub.add_parser("evaluate", help="run the official VBench-I2V (CUDA, staged weights)")
    s.add_argument("videos", help="folder of `<prompt>-<i>.mp4` videos")
    s.add_argument("--name", required=True)
    s.add_argument("--full-info", required=True, help="vbench2_i2v_full_info.json of the commit")
    s.add_argument("--images", help="custom_input mode: folder of `<prompt>.png` first frames")
    s.add_argument("--output", default="vbench_results")
    s.add_argument("--dimensions", nargs="+", default=list(DIMENSION_KEYS))
    s.add_argument("--device", default="cuda")
    s.add_argument("--ratio", default="1-1", help="image crop ratio folder (1-1, 8-5, 7-4, 16-9)")
    s.add_argument("--verify-hashes", action="store_true")
    s.set_defaults(func=cmd_evaluate)
    s = sub.add_parser("reference", help="recompute the published VBench++ Table 3 aggregates")
    s.set_defaults(func=cmd_reference)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
