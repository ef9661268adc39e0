"""End-of-sweep comparison table, printed by a Hydra callback after `python ablations/run.py -m ...`.

Each job notes its run id in `<sweep dir>/run_ids.txt` (works for every launcher, since jobs and
launcher share the file system); the callback reads those rows back from the results table and
prints one line per run plus mean +- std per value of the swept factor.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from core.results import read_rows

SUMMARY_METRICS = ("val_loss", "mse_mean", "psnr_first", "train_loss", "sample_time_s")


def comparison_table(rows: list[dict], factor: str) -> str:
    """Plain-text table: factor value -> mean +- std (n) of each summary metric."""
    groups = defaultdict(list)
    for row in rows:
        groups[str(row.get(factor))].append(row)
    header = f"{factor:>8} {'n':>3} " + " ".join(f"{m:>20}" for m in SUMMARY_METRICS)
    lines = [header, "-" * len(header)]
    for value, members in sorted(groups.items()):
        cells = []
        for metric in SUMMARY_METRICS:
            vals = [r["metrics"][metric] for r in members
                    if isinstance(r.get("metrics", {}).get(metric), (int, float))]
            if not vals:
                cells.append(f"{'-':>20}")
                continue
            std = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.mean(vals):>12.4f} ± {std:<6.4f}")
        lines.append(f"{value:>8} {len(members):>3} " + " ".join(cells))
    return "\n".join(lines)


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        ids_file = sweep_dir / "run_ids.txt"
        if not ids_file.exists():
            print(f"[summary] no runs recorded in {sweep_dir}")
            return
        wanted = set(ids_file.read_text().split())
        results = Path(config.results)
        if not results.is_absolute():
            results = Path(__file__).resolve().parents[1] / results
        rows = [r for r in read_rows(results) if r.get("run_id") in wanted]
        ok = [r for r in rows if r.get("status") == "ok"]
        failed = [r for r in rows if r.get("status") != "ok"]
        factor = ok[0].get("factor", "attn") if ok else "attn"
        print(f"\n[summary] {len(ok)} ok / {len(failed)} failed runs from {sweep_dir}")
        if ok:
            print(comparison_table(ok, factor))
        for row in failed:
            print(f"[summary] FAILED {row['run_id']}: {row.get('error')}")
