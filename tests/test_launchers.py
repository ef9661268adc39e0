"""Launchers end to end: SLURM through stand-in tools, requeue through submitit's local executor.

No cluster is needed. For SLURM, small Python scripts named sbatch/srun/sinfo/sacct/scancel are
put first on PATH: sbatch records each submitted script and runs the array's tasks in the
background with the SLURM_* variables a real allocation sets, sacct reports their state. The
launcher, submitit and the jobs themselves run unchanged. The requeue test sends submitit's
preemption signal to a real submitit_local job mid-training and checks that the requeued job
resumes from its own checkpoint and ends with the weights of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
RUN = [sys.executable, str(ROOT / "ablations" / "run.py")]
TINY = ["train.steps=2", "train.batch_size=2", "train.ckpt_every=0", "data.height=16",
        "data.width=16", "data.num_frames=3", "curriculum=off",
        "resolution=fixed", "eval.num_clips=2", "eval.num_loss_batches=1",
        "sampler.num_iter=2", "model.num_sampling_steps=3", "model.width=32", "model.num_heads=2",
        "model.depth=1", "model.head_width=32", "threads=1"]

FAKE_SBATCH = r'''
import os, re, shlex, subprocess, sys, time
from pathlib import Path
log = Path(os.environ["FAKE_SLURM_DIR"])
script = Path(sys.argv[-1]).read_text()
counter = log / "next_id"
job = int(counter.read_text()) if counter.exists() else 1000
counter.write_text(str(job + 1))
(log / f"sbatch_{job}.sh").write_text(script)
with open(log / "calls.log", "a") as f:
    f.write("sbatch " + " ".join(sys.argv[1:]) + "\n")
array = re.search(r"#SBATCH --array=(\d+)-(\d+)", script)
tasks = list(range(int(array[1]), int(array[2]) + 1)) if array else [None]
runner = [sys.executable, str(Path(__file__).with_name("fake_runner.py")), str(job),
          str(log / f"sbatch_{job}.sh")]
runner += [str(t) for t in tasks if t is not None]
subprocess.Popen(runner, start_new_session=True, stdout=subprocess.DEVNULL,
                 stderr=open(log / f"runner_{job}.err", "w"))
print(f"Submitted batch job {job}")
'''

FAKE_RUNNER = r'''
import os, shlex, subprocess, sys, time
from pathlib import Path
log = Path(os.environ["FAKE_SLURM_DIR"])
job, script, tasks = sys.argv[1], Path(sys.argv[2]).read_text(), sys.argv[3:] or [None]
exports = dict(shlex.split(line.strip())[1].split("=", 1) for line in script.splitlines()
               if line.strip().startswith("export ") and "=" in line)
srun = next(line for line in script.splitlines() if line.strip().startswith("srun"))
words, opts = shlex.split(srun)[1:], {}
while words and words[0].startswith("--"):  # srun's own options
    flag = words.pop(0)
    if "=" in flag:
        flag, value = flag.split("=", 1)
        opts[flag] = value
    elif flag in ("--output", "--error", "--ntasks", "--cpus-per-task"):
        opts[flag] = words.pop(0)


def fill(pattern, jid, task):
    return (pattern.replace("%j", jid).replace("%A", job).replace("%a", str(task))
            .replace("%t", "0"))

for task in tasks:
    jid = f"{job}_{task}" if task is not None else job
    (log / f"state_{jid}").write_text("PENDING")
for task in tasks:
    jid = f"{job}_{task}" if task is not None else job
    pickle = Path(fill(words[-1], jid, task)) / f"{jid}_submitted.pkl"
    for _ in range(600):  # submitit renames the pickles after sbatch returns
        if pickle.exists():
            break
        time.sleep(0.1)
    env = dict(os.environ, **exports, SLURM_JOB_ID=jid, SLURM_NTASKS="1", SLURM_JOB_NUM_NODES="1",
               SLURM_NODEID="0", SLURM_PROCID="0", SLURM_LOCALID="0",
               SLURM_JOB_NODELIST="fakenode")
    if task is not None:
        env.update(SLURM_ARRAY_JOB_ID=job, SLURM_ARRAY_TASK_ID=task)
    (log / f"state_{jid}").write_text("RUNNING")
    out = Path(fill(opts.get("--output", str(log / "%j.out")), jid, task))
    err = Path(fill(opts.get("--error", str(out)), jid, task))
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as o, open(err, "a") as e:
        code = subprocess.call(words, env=env, stdout=o, stderr=e)
    (log / f"state_{jid}").write_text("COMPLETED" if code == 0 else "FAILED")
'''

FAKE_SACCT = r'''
import os, sys
from pathlib import Path
log = Path(os.environ["FAKE_SLURM_DIR"])
ids = sys.argv[sys.argv.index("-j") + 1].split(",") if "-j" in sys.argv else []
print("JobID|State|NodeList")
for path in sorted(log.glob("state_*")):
    jid = path.name[len("state_"):]
    if not ids or any(jid == i or jid.startswith(i.split("_")[0] + "_") for i in ids):
        print(f"{jid}|{path.read_text()}|fakenode")
'''

FAKE_SINFO = r'''
import os, sys
from pathlib import Path
with open(Path(os.environ["FAKE_SLURM_DIR"]) / "calls.log", "a") as f:
    f.write("sinfo " + " ".join(sys.argv[1:]) + "\n")
print("gpu\ncpu")
'''

FAKE_NOOP = r'''
import os, sys
from pathlib import Path
with open(Path(os.environ["FAKE_SLURM_DIR"]) / "calls.log", "a") as f:
    f.write(Path(sys.argv[0]).name + " " + " ".join(sys.argv[1:]) + "\n")
'''


def _fake_slurm(tmp_path: Path) -> dict:
    bin_dir, log = tmp_path / "bin", tmp_path / "slurm"
    bin_dir.mkdir()
    log.mkdir()
    scripts = {"sbatch": FAKE_SBATCH, "fake_runner.py": FAKE_RUNNER, "sacct": FAKE_SACCT,
               "sinfo": FAKE_SINFO, "srun": FAKE_NOOP, "scancel": FAKE_NOOP, "scontrol": FAKE_NOOP}
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
        path.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               FAKE_SLURM_DIR=str(log), OMP_NUM_THREADS="1")
    return env


def _rows(path: Path) -> list[dict]:
    """The model rows (the copy-baseline rows each run adds are left out)."""
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r for r in rows if r.get("kind") != "baseline"]


def _sweep(tmp_path: Path, *overrides: str) -> list[str]:
    return [f"results={tmp_path / 'runs.jsonl'}", f"out_dir={tmp_path / 'runs'}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides]


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
    env = _fake_slurm(tmp_path)
    proc = subprocess.run(RUN + ["-m", "hydra/launcher=slurm", "hydra.launcher.partition=a100"]
                          + _sweep(tmp_path) + TINY,
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode != 0
    assert "'a100' is not a partition" in proc.stderr and "cpu, gpu" in proc.stderr
    assert not list((tmp_path / "slurm").glob("sbatch_*.sh"))


@pytest.mark.slow
def test_slurm_sweep_with_stand_in_tools(tmp_path):
    env = _fake_slurm(tmp_path)
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

    steps = 150
    longer = [o for o in TINY if not o.startswith(("train.steps", "train.ckpt_every"))]
    longer += [f"train.steps={steps}", "train.ckpt_every=10"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(RUN + ["-m", "hydra/launcher=submitit_local",
                                   "hydra.launcher.timeout_min=10"] + _sweep(tmp_path) + longer,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=tmp_path)
    try:
        deadline = time.time() + 240
        ckpt = None
        while time.time() < deadline and proc.poll() is None:
            found = list((tmp_path / "runs").glob("train-*/checkpoint.pt"))
            if found and _checkpoint_step(found[0]) >= 10:
                ckpt = found[0]
                break
            time.sleep(0.05)
        assert ckpt is not None, "training never wrote its first checkpoint"
        pids = _job_pids(tmp_path / "sweep")
        assert pids, "no submitit job process found"
        for pid in pids:
            os.kill(pid, signal.SIGUSR2)  # submitit's preemption / timeout signal
        out, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    rows = _rows(tmp_path / "runs.jsonl")
    assert [r["status"] for r in rows] == ["ok"]  # the preempted attempt wrote no row
    resumed = rows[0]["metrics"]["train_resumed_from"]
    assert resumed is not None and 10 <= resumed < steps, resumed
    assert rows[0]["metrics"]["train_steps"] == steps
    # resumed_from in [10, steps) with a single job and a single ok row: the job was requeued by
    # submitit and the new attempt continued from the preempted attempt's checkpoint.
    interrupted = read_checkpoint(ckpt)

    # The same run without interruption: same weights (fp32 tolerance) and the same loss curve.
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from ablations import run as run_app

    with initialize_config_dir(config_dir=str(ROOT / "ablations" / "conf"), version_base="1.3"):
        cfg = OmegaConf.to_object(compose(config_name="config", overrides=longer + [
            f"results={tmp_path / 'plain.jsonl'}", f"out_dir={tmp_path / 'plain'}"]))
    run_app.run(cfg)
    plain = read_checkpoint(next((tmp_path / "plain").glob("train-*/checkpoint.pt")))
    assert plain["step"] == interrupted["step"] == steps
    for name, tensor in plain["model"].items():
        torch.testing.assert_close(interrupted["model"][name], tensor, rtol=1e-5, atol=1e-6,
                                   msg=lambda m: f"{name}: {m}")
    assert interrupted["losses"] == pytest.approx(plain["losses"], rel=1e-5, abs=1e-6)


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
