"""End-of-sweep comparison table, printed by a Hydra callback after `python ablations/run.py -m`.

Each job notes its run id in `<sweep dir>/run_ids.txt` (works for every launcher, since jobs and
launcher share the file system); the callback reads those rows back from the results table and
prints mean +- std per table line (the rows' `variant`, labelled by the ablation's table_spec).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from core.results import append_row, make_row, read_rows

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


def _set(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def record_optuna_best(config: DictConfig, results: Path) -> dict | None:
    """Append the study's best trial (params, value, trial counts) as a kind=optuna row."""
    import optuna
    from omegaconf import OmegaConf

    sweeper = config.hydra.sweeper
    study = optuna.load_study(study_name=sweeper.study_name, storage=sweeper.storage)
    states = [t.state for t in study.trials]
    count = {s.name.lower(): states.count(s) for s in optuna.trial.TrialState}
    if not count.get("complete"):
        print(f"[summary] optuna study {study.study_name}: no completed trial, nothing recorded")
        return None
    best = study.best_trial
    resolved = {key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value)
                else value for key, value in config.items() if key != "hydra"}
    for key, value in best.params.items():
        _set(resolved, key, value)
    resolved["study"] = {"name": study.study_name, "storage": sweeper.storage}
    metrics = {"best_value": best.value, "best_trial": best.number,
               "n_trials": len(study.trials), "n_complete": count.get("complete", 0),
               "n_failed": count.get("fail", 0)}
    metrics.update({f"best.{key}": value for key, value in best.params.items()})
    row = append_row(results, make_row(resolved, kind="optuna", status="ok", metrics=metrics,
                                       factor="variant", objective=resolved.get("objective")))
    print(f"[summary] optuna best ({config.get('objective')}={best.value:.4g}, trial "
          f"{best.number} of {len(study.trials)}, {metrics['n_failed']} failed): {best.params}")
    return row


class SweepSummary(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        storage = str(config.hydra.sweeper.get("storage") or "")
        if storage.startswith("sqlite:///"):  # sqlite cannot create the study's directory
            Path(storage[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)

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
        if config.hydra.sweeper.get("study_name") and config.hydra.sweeper.get("storage"):
            record_optuna_best(config, results)
        rows = [r for r in read_rows(results) if r.get("run_id") in wanted]
        ok = [r for r in rows if r.get("status") == "ok"]
        failed = [r for r in rows if r.get("status") != "ok"]
        print(f"\n[summary] {len(ok)} ok / {len(failed)} failed runs from {sweep_dir}")
        if ok:  # one line per table line: every row ablations/run.py writes has its `variant`
            print(comparison_table(ok, "variant"))
        for row in failed:
            print(f"[summary] FAILED {row['run_id']}: {row.get('error')}")
