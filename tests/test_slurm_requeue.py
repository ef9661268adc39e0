"""SLURM requeue through the stand-in tools of tests/slurm_standins.py.

On a cluster, submitit's handler for its preemption/timeout signal (SIGUSR2) checkpoints the job
and calls `scontrol requeue <jobid>`; SLURM then runs the job again under the same job id and the
new start resumes from its checkpoint. The stand-ins do the same on one CPU machine, so these tests
exercise submitit's SLURM environment unchanged with a tiny checkpointable function (a whole
sweep preempted mid-training under hydra/launcher=slurm: tests/test_launchers.py).
"""

from __future__ import annotations

import subprocess
import time

from tests.slurm_standins import PreemptedOnce, calls, fake_slurm, job_starts


def test_scontrol_requeue_runs_the_job_again_with_its_id_and_checkpoint(tmp_path, monkeypatch):
    import submitit

    for key, value in fake_slurm(tmp_path).items():
        monkeypatch.setenv(key, value)
    executor = submitit.SlurmExecutor(folder=tmp_path / "jobs")
    executor.update_parameters(time=60)  # far from the time limit: a preemption, not a timeout
    job = executor.submit(PreemptedOnce())
    seen = job.result()  # waits through the requeue
    assert seen == {"job_id": job.job_id, "checkpointed_by": job.job_id, "restart_count": "1",
                    "signal": "SIGUSR2"}
    assert job_starts(tmp_path) == [f"{job.job_id} restart=0", f"{job.job_id} restart=1"]
    assert f"scontrol requeue {job.job_id}" in calls(tmp_path)
    deadline = time.time() + 30  # the result is written just before the process exits
    while job.watcher.get_state(job.job_id, mode="force") != "COMPLETED":
        assert time.time() < deadline, job.watcher.get_state(job.job_id, mode="force")
        time.sleep(0.2)


def test_scontrol_requeue_of_an_unknown_job_fails(tmp_path):
    env = fake_slurm(tmp_path)
    proc = subprocess.run(["scontrol", "requeue", "4242"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode != 0 and "Invalid job id specified: 4242" in proc.stderr
    assert not list((tmp_path / "slurm").glob("requeue_*"))
