"""Hydra entry point: one run = train, sample, evaluate on held-out clips, write one results row.

    python ablations/run.py                          # tiny preset, causal attention
    python ablations/run.py -m attn=causal,full      # the attention ablation (paper_tables/attn)
    python ablations/run.py preset=small train.steps=2000 seed=1

The schemas are the dataclasses of core/config.py (registered below), so a mistyped key or a
wrong type fails at compose time, and `RunConfig.__post_init__` rejects impossible combinations
before any work. `run(cfg)` is plain Python and is what tests and other programs call.
A rerun with the same resolved config and commit is skipped when its ok row exists
(`force=true` reruns it); a crashed run writes a failed row with its error, then re-raises.
Every finished run also makes sure its trivial baseline exists: a kind="baseline",
variant="copy" row (the conditioning frame repeated, scored by the same core.evaluate code on the
same test clips) per table, seed, data/eval settings and code version (`ensure_baselines`).

Training is keyed apart from evaluation: runs that differ only in sampler/eval knobs (the
temperature and sampler ablations, Optuna trials) share one trained checkpoint in
out_dir/train-<key>/, trained once (under a file lock) and reused. A preempted or requeued job
resumes from that checkpoint. Under SLURM with several tasks (or torchrun) the job joins a
torch.distributed group and trains with DDP; rank 0 evaluates and writes the row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import signal
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# `python ablations/run.py` puts ablations/ first on sys.path; the repo root is needed for `core`,
# and ablations/plugins for its hydra_plugins portion (the SLURM launcher with a preflight). The
# editable install adds both for every process, submitted jobs included (pyproject dev-mode-dirs).
for _path in (ROOT / "ablations" / "plugins", ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import hydra  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from hydra.core.config_store import ConfigStore  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from core.config import PRESETS, RunConfig  # noqa: E402
from core.data import build_dataset, describe_dataset, write_data_report  # noqa: E402
from core.evaluate import heldout_loss, sample_spread, score_baseline, score_samples  # noqa: E402
from core.model import VideoMAR  # noqa: E402
from core.preemption import PreemptionGuard  # noqa: E402
from core.results import (FLAT_KEYS, append_row, find_ok_row, git_info, make_row,  # noqa: E402
                          portable_path, run_id)
from core.tokenizers import check_pretrained  # noqa: E402
from core.train import EMA, rank_device, train  # noqa: E402

RUN_IDS_FILE = "run_ids.txt"  # per sweep: which rows belong to it (read by ablations/summary.py)
ROW_COLUMNS = {**FLAT_KEYS, "variant": "variant"}  # top-level columns copied from the config


def register_configs() -> None:
    """Register RunConfig as the schema and one `preset` group option per core PRESETS entry."""
    cs = ConfigStore.instance()
    cs.store(name="base_run", node=RunConfig)
    for name, model in PRESETS.items():
        cs.store(group="preset", name=name, package="_global_",
                 node={"preset": name, "model": dataclasses.asdict(model)})


def _resolve(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else ROOT / p


def _save_contact_sheet(videos: torch.Tensor, path: Path, max_clips: int = 8) -> None:
    """Write clips (B, T, C, H, W) in [0, 1] as one PNG: a row per clip, a column per frame."""
    from PIL import Image

    clips = videos[:max_clips]
    grid = clips.permute(0, 3, 1, 4, 2).flatten(2, 3).flatten(0, 1)  # (B*H, T*W, C)
    Image.fromarray((grid.clamp(0, 1) * 255).round().to(torch.uint8).numpy()).save(path)


def training_key(cfg: RunConfig, code: str) -> str:
    """Hash of everything that determines the trained weights (and the validation curve)."""
    resolved = dataclasses.asdict(cfg)
    part = {k: resolved[k] for k in ("model", "data", "train", "seed")}
    part["val"] = {"use_ema": cfg.eval.use_ema, "num_loss_batches": cfg.eval.num_loss_batches}
    return run_id(part, code, ignore=())


@contextlib.contextmanager
def _exclusive(directory: Path):
    """Hold an exclusive lock on directory/.lock: parallel jobs sharing a training key wait."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sun_adapter(model, cfg: RunConfig, train_dir: Path, train_set, code: str):
    """Distil the one-pass student the sampler asks for without a given file: the SUN head
    adapter (sampler.head=sun), the SUN backbone adapter (guidance=sun) or a guidance-distilled
    student (guidance=distilled); once per training key and distillation config, cached next to
    the training checkpoint under the training lock. Returns (the model to sample: `model` with
    the adapter installed, or the student; info)."""
    from core.sun import backbone_adapter, backbone_distill, guided_student, head_adapter
    from core.sun import head_distill

    s = cfg.sampler
    kind = s.guidance if s.guidance in ("sun", "distilled") else "head"
    # Everything that shapes the teacher's runs and the targets: the whole sampler config except
    # what selects the student (the teacher always samples with the DDPM head and plain CFG).
    student = {"sun": ("guidance", "backbone_adapter"), "distilled": ("guidance", "guided_student"),
               "head": ("head", "head_adapter")}[kind]
    teacher = {k: v for k, v in dataclasses.asdict(s).items() if k not in student}
    part = {"head_distill": dataclasses.asdict(cfg.head_distill), "sampler": teacher,
            "seed": cfg.seed}
    name = {"sun": "sun_backbone", "distilled": "guided_student", "head": "sun_head"}[kind]
    path = train_dir / f"{name}-{run_id(part, code, ignore=())}.safetensors"
    with _exclusive(train_dir):
        if path.is_file():
            info = {"reused": True}
            if kind == "distilled":
                student_path = portable_path(str(path))
                return guided_student.load(model, path), {**info, "student": student_path}
            adapter = (backbone_adapter.load(model, path) if kind == "sun"
                       else head_adapter.load_adapter(model.head, path))
        else:
            distill = head_distill if kind == "head" else backbone_distill
            adapter, info = distill.distill_for_model(model, train_set, s, cfg.head_distill,
                                                      seed=cfg.seed)
            if kind == "distilled":
                guided_student.installed(adapter).save(adapter, path, info)
                return adapter, {**info, "reused": False, "student": portable_path(str(path))}
            adapter.save(path, info, **({} if kind == "sun" else {"head": model.head}))
            info = {**info, "reused": False}
    (backbone_adapter if kind == "sun" else head_adapter).install(model, adapter)
    return model, {**info, "adapter": portable_path(str(path))}


def _remove_sun_adapters(model) -> None:
    """Adapters belong to the EMA weights they were distilled from: detach them after scoring."""
    from core.sun import backbone_adapter, head_adapter

    head_adapter.remove(model)
    backbone_adapter.remove(model)


def _sampling_model(model, cfg: RunConfig, train_dir: Path, train_set, code: str):
    """The model the evaluation samples (`model`, with any SUN adapter installed, or a
    guidance-distilled student) and what distilling it recorded."""
    from core.sun import guided_student

    s, extra = cfg.sampler, {}
    if s.head == "sun" and not s.head_adapter:
        model, extra["head_distill"] = _sun_adapter(model, cfg, train_dir, train_set, code)
    if s.guidance == "sun" and not s.backbone_adapter:
        model, extra["backbone_distill"] = _sun_adapter(model, cfg, train_dir, train_set, code)
    if s.guidance == "distilled":
        if s.guided_student:
            model = guided_student.load(model, _resolve(s.guided_student))
        else:
            model, extra["guidance_distill"] = _sun_adapter(model, cfg, train_dir, train_set, code)
    return model, extra


def _val_loss(model, cfg: RunConfig) -> float:
    val = build_dataset(cfg.data, "val", seed=cfg.seed)
    return heldout_loss(model, val, batch_size=cfg.train.batch_size,
                        num_batches=cfg.eval.num_loss_batches, seed=cfg.seed)


def _test_sets(cfg: RunConfig) -> list[tuple[str, object, int | None, dict]]:
    """The evaluations of a run: (metric prefix, test clips, frames to produce, extra metrics).

    "" = the rollout at the trained size, with test clips as long as the rollout so every
    generated frame has its true continuation; "extrap_" = the RoPE ablation's longer and larger
    clips (eval.extrap_frames > 0). Models and baselines are scored on exactly these.
    """
    e = cfg.eval
    frames = max(cfg.data.num_frames, e.num_frames or 0)
    test = build_dataset(dataclasses.replace(cfg.data, num_frames=frames), "test", seed=cfg.seed)
    sets = [("", test, e.num_frames, {})]
    if e.extrap_frames:  # RoPE ablation: more frames and larger frames than trained
        shape = dict(num_frames=e.extrap_frames, height=e.extrap_height or cfg.data.height,
                     width=e.extrap_width or cfg.data.width)
        test = build_dataset(dataclasses.replace(cfg.data, **shape), "test", seed=cfg.seed)
        sets.append(("extrap_", test, e.extrap_frames,
                     {"extrap_frames": shape["num_frames"], "extrap_height": shape["height"],
                      "extrap_width": shape["width"]}))
    return sets


def _prefixed(prefix: str, scores: dict) -> dict:
    """Table metrics of one evaluation under `prefix` (the extrapolation keeps numbers only)."""
    if not prefix:
        return scores
    return {f"{prefix}{k}": v for k, v in scores.items() if isinstance(v, (int, float, list))}


def _evaluate(model, cfg: RunConfig, out_dir: Path) -> dict:
    metrics = {}
    for prefix, test, frames, extra in _test_sets(cfg):
        scores = score_samples(model, test, num_clips=cfg.eval.num_clips, sampler=cfg.sampler,
                               num_frames=frames, batch_size=cfg.eval.num_clips, seed=cfg.seed)
        sheet = "samples.png" if not prefix else f"samples_{prefix.rstrip('_')}.png"
        _save_contact_sheet(scores.pop("videos"), out_dir / sheet)
        metrics.update(_prefixed(prefix, scores), **extra)
        if not prefix:
            metrics["val_loss"] = _val_loss(model, cfg)
            if cfg.eval.spread_samples:
                metrics["sample_spread"] = sample_spread(
                    model, test, num_clips=cfg.eval.spread_clips, sampler=cfg.sampler,
                    samples=cfg.eval.spread_samples, num_frames=frames,
                    batch_size=cfg.eval.spread_clips, seed=cfg.seed)
    return metrics


# ----------------------------------------------------------------------------- baselines

BASELINE_KIND = "baseline"
BASELINE_VARIANTS = ("copy",)  # core.evaluate.BASELINES drawn into every sample table
BASELINE_EVAL_KEYS = ("num_clips", "num_frames", "extrap_frames", "extrap_height", "extrap_width")


def baseline_config(cfg: RunConfig, variant: str = "copy") -> dict:
    """The config of run `cfg`'s trivial-baseline row: everything the baseline's scores depend on.

    The data settings, the eval settings that pick and shape the clips, the number of
    conditioning frames, and the run's table/ablation/seed/preset (labels: one baseline row per
    table and seed, beside that seed's model rows). Nothing of the model, sampler or training, so
    every arm of a table shares it; run_id of this dict + the code version is the row's id.
    """
    return {"baseline": variant, "variant": variant, "ablation": cfg.ablation, "table": cfg.table,
            "seed": cfg.seed, "preset": cfg.preset, "data": dataclasses.asdict(cfg.data),
            "eval": {k: getattr(cfg.eval, k) for k in BASELINE_EVAL_KEYS},
            "model": {"num_cond_frames": cfg.model.num_cond_frames}}


def _baseline_metrics(cfg: RunConfig, variant: str) -> dict:
    """The baseline scored by core.evaluate on the run's own test sets (no model, no sampling)."""
    metrics = {}
    for prefix, test, frames, extra in _test_sets(cfg):
        scores = score_baseline(test, num_clips=cfg.eval.num_clips, baseline=variant,
                                num_cond=cfg.model.num_cond_frames, num_frames=frames,
                                batch_size=cfg.eval.num_clips)
        scores.pop("videos")
        scores.pop("sample_time_s")  # copying frames is not sampling: no speed to compare
        metrics.update(_prefixed(prefix, scores), **extra)
    return metrics


def ensure_baselines(cfg: RunConfig, git: dict) -> list[dict]:
    """Make sure the trivial-baseline rows of run `cfg` exist in its results table; return them.

    One row per BASELINE_VARIANTS entry with kind="baseline", variant=<name>, the run's table,
    ablation and seed, status "ok", and the score metrics of a model row (mse_*, psnr_first,
    syn_*, dist_energy, num_clips; extrap_* on extrapolation runs). Idempotent: the run id
    hashes `baseline_config` and the code version, and an existing ok row is returned as is
    (under a lock, so parallel jobs of one table and seed write it once). `force` does not
    apply: the baseline is deterministic.
    """
    results, rows = _resolve(cfg.results), []
    for variant in BASELINE_VARIANTS:
        config = baseline_config(cfg, variant)
        bid = run_id(config, git["code"])
        with _exclusive(_resolve(cfg.out_dir) / "baselines"):
            row = find_ok_row(results, bid)
            if row is None:
                start = time.perf_counter()
                metrics = _baseline_metrics(cfg, variant)
                row = append_row(results, make_row(
                    config, kind=BASELINE_KIND, status="ok", metrics=metrics, git=git,
                    wall_time_s=time.perf_counter() - start, factor="variant", flat=ROW_COLUMNS))
                print(f"[baseline {bid}] {cfg.table} {variant} seed={cfg.seed}: "
                      + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()
                                  if isinstance(v, float)))
        rows.append(row)
    return rows


def _init_distributed() -> tuple[int, int]:
    """Join a torch.distributed group when launched as several tasks -> (rank, world size).

    Under submitit (SLURM with tasks_per_node > 1, or submitit_local with several tasks) the ranks
    and rendezvous come from submitit's environment; under torchrun from its variables.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if "WORLD_SIZE" not in os.environ:
        try:
            import submitit

            env = submitit.JobEnvironment()
        except (ImportError, RuntimeError):
            return 0, 1
        if env.num_tasks <= 1:
            return 0, 1
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def preemption_signals() -> tuple[int, ...]:
    """SIGTERM and SIGUSR1 (SLURM) plus submitit's preemption/timeout signal (SIGUSR2 by default)."""
    signals = [signal.SIGTERM, signal.SIGUSR1]
    try:
        from submitit.core.job_environment import JobEnvironment

        signals.append(JobEnvironment._usr_sig())
    except (ImportError, RuntimeError):
        pass
    return tuple(dict.fromkeys(signals))


def run(cfg: RunConfig) -> dict:
    """Train, sample and evaluate one configuration; append and return its results row.

    SIGTERM/SIGUSR1/SIGUSR2 during training checkpoint at the next step boundary, then go to the
    previously installed handler (submitit's requeues the job) or exit with status 75; the rerun
    resumes from the checkpoint. A preempted run writes no row (it is not finished).
    """
    with PreemptionGuard(preemption_signals()):
        return _run(cfg)


def _run(cfg: RunConfig) -> dict:
    resolved = dataclasses.asdict(cfg)
    git = git_info(ROOT)
    rid = run_id(resolved, git["code"])  # config minus I/O keys + commit (+ hash of a dirty diff)
    results = _resolve(cfg.results)
    existing = None if cfg.force else find_ok_row(results, rid)
    if existing is not None:
        print(f"[run {rid}] ok row exists in {results}: skipped (force=true reruns it)")
        ensure_baselines(cfg, git)  # rows of this code version written before baselines existed
        _record_in_sweep(rid)
        return existing
    out_dir = _resolve(cfg.out_dir) / rid
    train_dir = _resolve(cfg.out_dir) / f"train-{training_key(cfg, git['code'])}"
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    rank, world = _init_distributed()
    start = time.perf_counter()
    status, metrics, extra = "failed", {}, {"out_dir": str(out_dir), "train_dir": str(train_dir)}
    try:
        check_pretrained(cfg.model.tokenizer)  # missing VAE weights: list them before any work
        device = rank_device()  # LOCAL_RANK's GPU before anything is built (not GPU 0 for all)
        model = VideoMAR(cfg.model, seed=cfg.seed).to(device)
        ema = EMA(model, cfg.train.ema_decay)
        train_set = build_dataset(cfg.data, "train", seed=cfg.seed)
        extra["data"] = describe_dataset(train_set)
        if rank == 0:  # skipped (corrupt, short, undecodable) videos, listed next to the run
            write_data_report(train_set, train_dir)

        def val_fn() -> float:
            with ema.swapped(model) if cfg.eval.use_ema else contextlib.nullcontext():
                return _val_loss(model, cfg)

        lock = _exclusive(train_dir) if rank == 0 else contextlib.nullcontext()
        with lock:  # a second job with this training key waits, then reuses the checkpoint
            summary = train(model, train_set, cfg.train, seed=cfg.seed, out_dir=train_dir,
                            device=device, ema=ema, val_fn=val_fn)
        if rank != 0:  # rank 0 evaluates and writes the row
            return {"status": "ok", "run_id": rid, "rank": rank}
        out_dir.mkdir(parents=True, exist_ok=True)
        with ema.swapped(model) if cfg.eval.use_ema else contextlib.nullcontext():
            sampling_model, distilled = _sampling_model(model, cfg, train_dir, train_set,
                                                        git["code"])
            extra.update(distilled)
            metrics = _evaluate(sampling_model, cfg, out_dir)
            del sampling_model
        _remove_sun_adapters(model)
        reused = summary["resumed_from"] is not None and summary["resumed_from"] >= summary["steps"]
        metrics.update(train_loss=summary["train_loss"], train_steps=summary["steps"],
                       steps_per_s=None if reused else summary["steps_per_s"],
                       params=model.num_params(), train_flops=summary["train_flops"],
                       val_curve=summary["val_curve"], stages=summary["stages"],
                       train_reused=reused, train_resumed_from=summary["resumed_from"],
                       world_size=world)
        status = "ok"
    except SystemExit:  # preempted (or requeued by submitit): no row, the rerun writes it
        status = "preempted"
        raise
    except Exception as exc:  # the sweep keeps a row for every run, failed ones included
        extra.update(error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(limit=8))
        raise
    finally:
        if rank == 0 and status != "preempted":
            row = make_row(resolved, kind="train", status=status, metrics=metrics, git=git,
                           wall_time_s=time.perf_counter() - start, factor="variant",
                           flat=ROW_COLUMNS, **extra)
            row = append_row(results, row)
            _record_in_sweep(rid)
    ensure_baselines(cfg, git)  # the copy baseline beside this row (milliseconds, once per seed)
    print(f"[run {rid}] {cfg.ablation}={cfg.variant} seed={cfg.seed}: "
          + ", ".join(f"{k}={v:.4g}" for k, v in row["metrics"].items() if isinstance(v, float)))
    return row


def _record_in_sweep(rid: str) -> None:
    """Note this run id in the sweep directory so the end-of-sweep summary can find its row."""
    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:  # called without Hydra
        return
    if hydra_cfg.mode.name == "MULTIRUN":
        sweep_dir = Path(hydra_cfg.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        with open(sweep_dir / RUN_IDS_FILE, "a") as f:
            f.write(rid + "\n")


register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(dict_cfg: DictConfig) -> float:
    cfg: RunConfig = OmegaConf.to_object(dict_cfg)  # runs the dataclass checks
    row = run(cfg)
    value = row["metrics"].get(cfg.objective)
    if not isinstance(value, (int, float)):
        raise KeyError(f"objective={cfg.objective!r} is not a scalar metric of this run; choose one "
                       f"of {sorted(k for k, v in row['metrics'].items() if isinstance(v, float))}")
    return float(value)


if __name__ == "__main__":
    main()
