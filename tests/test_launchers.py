"""Launchers end to end: presets, SLURM through stand-in tools, requeue after preemption.

No cluster is needed. For SLURM, the stand-in tools of tests/slurm_standins.py (sbatch, srun,
sinfo, sacct, scontrol, scancel) are put first on PATH: sbatch records each submitted script and
runs the array's tasks in the background with the SLURM_* variables a real allocation sets, sacct
reports their state, and `scontrol requeue` runs a job again under the same id. The launcher,
submitit and the jobs themselves run unchanged. The requeue tests send submitit's preemption
signal mid-training, to a `slurm` job (through `scancel --signal`) and to a `submitit_local` job,
and check that the requeued job resumes from its own checkpoint (for submitit_local: with the
weights of an uninterrupted run). Every launcher preset is composed with Hydra's compose API.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.slurm_standins import calls, fake_slurm, job_starts

ROOT = Path(__file__).resolve().parents[1]
RUN = [sys.executable, str(ROOT / "ablations" / "run.py")]
TINY = ["train.steps=2", "train.batch_size=2", "train.ckpt_every=0", "data.height=16",
        "data.width=16", "data.num_frames=3", "curriculum=off",
        "resolution=fixed", "eval.num_clips=2", "eval.num_loss_batches=1",
        "sampler.num_iter=2", "model.num_sampling_steps=3", "model.width=32", "model.num_heads=2",
        "model.depth=1", "model.head_width=32", "threads=1"]


def _rows(path: Path) -> list[dict]:
    """The model rows (the copy-baseline rows each run adds are left out)."""
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r for r in rows if r.get("kind") != "baseline"]


def _sweep(tmp_path: Path, *overrides: str) -> list[str]:
    return [f"results={tmp_path / 'runs.jsonl'}", f"out_dir={tmp_path / 'runs'}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides]


# Every launcher preset and what it must resolve to (README, "On a SLURM cluster"). One task per
# GPU: a run's DDP ranks are nodes x tasks_per_node.
SLURM_COMMON = dict(_target_="hydra_plugins.videomar_launchers.slurm.SlurmLauncher",  # preflight
                    partition="gpu", cpus_per_task=8, timeout_min=240, signal_delay_s=120,
                    max_num_timeout=3)
LAUNCHER_PRESETS = {
    "slurm": dict(SLURM_COMMON, nodes=1, gpus_per_node=1, tasks_per_node=1, mem_gb=64,
                  array_parallelism=32),
    "slurm_8gpu": dict(SLURM_COMMON, nodes=1, gpus_per_node=8, tasks_per_node=8, mem_gb=480,
                       array_parallelism=4),
    "slurm_2node": dict(SLURM_COMMON, nodes=2, gpus_per_node=8, tasks_per_node=8, mem_gb=480,
                        array_parallelism=2),
    "submitit_local": dict(
        _target_="hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
        nodes=1, tasks_per_node=1, timeout_min=60),
}


def _launcher(*overrides: str):
    from hydra import compose, initialize_config_dir

    import ablations.run  # noqa: F401  (registers the structured configs the defaults list needs)

    with initialize_config_dir(config_dir=str(ROOT / "ablations" / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides),
                       return_hydra_config=True).hydra.launcher


def test_every_slurm_preset_file_has_expected_fields():
    presets = {p.stem for p in (ROOT / "ablations" / "conf" / "hydra" / "launcher").glob("*.yaml")}
    assert presets == set(LAUNCHER_PRESETS) - {"submitit_local"}


@pytest.mark.parametrize("name", sorted(LAUNCHER_PRESETS))
def test_launcher_preset_composes_to_its_resources(name):
    from hydra.utils import get_class

    launcher = _launcher(f"hydra/launcher={name}")
    assert {key: launcher[key] for key in LAUNCHER_PRESETS[name]} == LAUNCHER_PRESETS[name]
    assert callable(get_class(launcher._target_).launch)
    if name.startswith("slurm"):  # one task (DDP rank) per GPU
        assert launcher.tasks_per_node == launcher.gpus_per_node


def test_launcher_preset_fields_can_be_overridden():
    launcher = _launcher("hydra/launcher=slurm_2node", "hydra.launcher.partition=a100",
                         "hydra.launcher.account=myproj", "hydra.launcher.timeout_min=720")
    assert (launcher.partition, launcher.account, launcher.timeout_min) == ("a100", "myproj", 720)
    assert (launcher.nodes, launcher.tasks_per_node) == (2, 8)  # the rest of the preset is kept


def test_slurm_without_sbatch_fails_before_submitting(tmp_path):
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    env = dict(os.environ, PATH=f"{empty}{os.pathsep}{Path(sys.executable).parent}")
    env["PATH"] += os.pathsep + os.pathsep.join(
        p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "sbatch").exists())
    proc = subprocess.run(RUN + ["-m", "hydra/launcher=slurm"] + _sweep(tmp_path) + TINY,
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode != 0
    assert "needs SLURM's sbatch" in proc.stderr and "nothing was submitted" in proc.stderr
    assert not (tmp_path / "sweep" / ".submitit").exists()
    assert not (tmp_path / "runs.jsonl").exists()


def test_slurm_unknown_partition_fails_before_submitting(tmp_path):
    env = fake_slurm(tmp_path)
    proc = subprocess.run(RUN + ["-m", "hydra/launcher=slurm", "hydra.launcher.partition=a100"]
                          + _sweep(tmp_path) + TINY,
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode != 0
    assert "'a100' is not a partition" in proc.stderr and "cpu, gpu" in proc.stderr
    assert not list((tmp_path / "slurm").glob("sbatch_*.sh"))


@pytest.mark.slow
def test_slurm_sweep_with_stand_in_tools(tmp_path):
    env = fake_slurm(tmp_path)
    proc = subprocess.run(RUN + ["-m", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                 "hydra.launcher.array_parallelism=1", "attn=causal,full"]
                          + _sweep(tmp_path) + TINY,
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scripts = sorted((tmp_path / "slurm").glob("sbatch_*.sh"))
    assert len(scripts) == 1  # one job array for the whole sweep
    script = scripts[0].read_text()
    for line in ("--partition=gpu", "--array=0-1%1", "--gpus-per-node=1", "--ntasks-per-node=1",
                 "--nodes=1", "--time=240", "--signal=USR2@120", "--cpus-per-task=8",
                 "--mem=64GB"):
        assert f"#SBATCH {line}" in script, (line, script)
    assert "sinfo" in (tmp_path / "slurm" / "calls.log").read_text()  # the preflight ran
    rows = _rows(tmp_path / "runs.jsonl")
    assert sorted((r["attn"], r["status"]) for r in rows) == [("causal", "ok"), ("full", "ok")]


def _checkpoint_step(path: Path) -> int:
    from core.checkpoint import read_checkpoint

    try:
        return int(read_checkpoint(path)["step"])
    except Exception:  # not there yet, or being replaced
        return -1


def _wait_for_checkpoint(proc: subprocess.Popen, runs: Path, step: int, timeout_s: float) -> Path:
    """The training checkpoint under `runs` once it holds `step` or later, while `proc` runs."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None:
        found = list(runs.glob("train-*/checkpoint.pt"))
        if found and _checkpoint_step(found[0]) >= step:
            return found[0]
        time.sleep(0.05)
    ended = "" if proc.poll() is None else f"; the sweep exited: {proc.stdout.read()[-3000:]}"
    raise AssertionError(f"training never wrote a checkpoint of step >= {step}{ended}")


# A run long enough to be preempted mid-training, with a checkpoint every 10 steps.
STEPS = 150
LONGER = [o for o in TINY if not o.startswith(("train.steps", "train.ckpt_every"))] + [
    f"train.steps={STEPS}", "train.ckpt_every=10"]


def _check_resumed_once(rows: list[dict]) -> None:
    """One ok row (a preempted start writes none) whose training resumed mid-run and finished."""
    assert [r["status"] for r in rows] == ["ok"]
    resumed = rows[0]["metrics"]["train_resumed_from"]
    assert resumed is not None and 10 <= resumed < STEPS, resumed
    assert rows[0]["metrics"]["train_steps"] == STEPS


def _job_pids(sweep_dir: Path) -> list[int]:
    """PIDs of submitit job processes working for this sweep (python -m submitit.core._submit)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"submitit.core._submit" in cmd and any(str(sweep_dir).encode() in c for c in cmd):
            pids.append(int(proc.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").exists(), reason="finds the job process through /proc")
def test_preempted_submitit_job_is_requeued_and_resumes(tmp_path):
    from core.checkpoint import read_checkpoint

    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(RUN + ["-m", "hydra/launcher=submitit_local",
                                   "hydra.launcher.timeout_min=10"] + _sweep(tmp_path) + LONGER,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=tmp_path)
    try:
        ckpt = _wait_for_checkpoint(proc, tmp_path / "runs", 10, timeout_s=240)
        pids = _job_pids(tmp_path / "sweep")
        assert pids, "no submitit job process found"
        for pid in pids:
            os.kill(pid, signal.SIGUSR2)  # submitit's preemption / timeout signal
        out, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    # resumed_from in [10, steps) with a single job and a single ok row: the job was requeued by
    # submitit and the new attempt continued from the preempted attempt's checkpoint.
    _check_resumed_once(_rows(tmp_path / "runs.jsonl"))
    interrupted = read_checkpoint(ckpt)

    # The same run without interruption: same weights (fp32 tolerance) and the same loss curve.
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from ablations import run as run_app

    with initialize_config_dir(config_dir=str(ROOT / "ablations" / "conf"), version_base="1.3"):
        cfg = OmegaConf.to_object(compose(config_name="config", overrides=LONGER + [
            f"results={tmp_path / 'plain.jsonl'}", f"out_dir={tmp_path / 'plain'}"]))
    run_app.run(cfg)
    plain = read_checkpoint(next((tmp_path / "plain").glob("train-*/checkpoint.pt")))
    assert plain["step"] == interrupted["step"] == STEPS
    for name, tensor in plain["model"].items():
        torch.testing.assert_close(interrupted["model"][name], tensor, rtol=1e-5, atol=1e-6,
                                   msg=lambda m: f"{name}: {m}")
    assert interrupted["losses"] == pytest.approx(plain["losses"], rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_preempted_slurm_job_is_requeued_as_the_same_job_and_resumes(tmp_path):
    """hydra/launcher=slurm through the stand-ins: `scancel --signal USR2` mid-training (submitit's
    signal, which SLURM sends signal_delay_s before the end); the run checkpoints, submitit calls
    `scontrol requeue`, the stand-in starts the same job again and it resumes from its checkpoint."""
    env = fake_slurm(tmp_path)
    proc = subprocess.Popen(RUN + ["-m", "hydra/launcher=slurm", "hydra.launcher.partition=gpu"]
                            + _sweep(tmp_path) + LONGER, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    try:
        _wait_for_checkpoint(proc, tmp_path / "runs", 10, timeout_s=300)
        [jid] = [start.split()[0] for start in job_starts(tmp_path)]
        subprocess.run(["scancel", "--signal", "USR2", jid], env=env, check=True, timeout=60)
        out, _ = proc.communicate(timeout=500)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert f"scontrol requeue {jid}" in calls(tmp_path)
    assert job_starts(tmp_path) == [f"{jid} restart=0", f"{jid} restart=1"]
    log = tmp_path / "sweep" / ".submitit" / jid / f"{jid}_0_log.out"  # submitit's own log
    assert log.read_text().count(f"Starting with JobEnvironment(job_id={jid},") == 2
    _check_resumed_once(_rows(tmp_path / "runs.jsonl"))


@pytest.mark.slow
def test_two_task_submitit_job_trains_with_ddp_like_one_process(tmp_path):
    """tasks_per_node=2: two ranks from submitit's environment join a gloo group and train with
    DDP on halves of each global batch; the weights equal a single-process run's."""
    from core.checkpoint import read_checkpoint

    overrides = [o for o in TINY if not o.startswith("train.steps")] + ["train.steps=4"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(RUN + ["-m", "hydra/launcher=submitit_local",
                                 "hydra.launcher.tasks_per_node=2"] + _sweep(tmp_path) + overrides,
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(tmp_path / "runs.jsonl")
    assert [(r["status"], r["metrics"]["world_size"]) for r in rows] == [("ok", 2)]

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from ablations import run as run_app

    with initialize_config_dir(config_dir=str(ROOT / "ablations" / "conf"), version_base="1.3"):
        cfg = OmegaConf.to_object(compose(config_name="config", overrides=overrides + [
            f"results={tmp_path / 'single.jsonl'}", f"out_dir={tmp_path / 'single'}"]))
    single = run_app.run(cfg)
    assert single["metrics"]["world_size"] == 1
    ddp = read_checkpoint(next((tmp_path / "runs").glob("train-*/checkpoint.pt")))
    one = read_checkpoint(next((tmp_path / "single").glob("train-*/checkpoint.pt")))
    for name, tensor in one["model"].items():
        torch.testing.assert_close(ddp["model"][name], tensor, rtol=1e-4, atol=1e-5,
                                   msg=lambda m: f"{name}: {m}")
