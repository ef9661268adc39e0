"""Stand-in SLURM tools for the launcher tests (not a test module).

`fake_slurm(tmp_path)` writes small Python scripts named sbatch, srun, sinfo, sacct, scontrol and
scancel into tmp_path/bin and returns an environment with that directory first on PATH. They keep
their state in files under tmp_path/slurm (FAKE_SLURM_DIR):

* sbatch records the script (sbatch_<id>.sh) and starts fake_runner.py in the background, which
  runs each array task's `srun` command with the SLURM_* variables a real allocation sets.
* `scontrol requeue <jobid>` marks the job; when its process exits the runner starts it again
  with the same job id and environment plus SLURM_RESTART_COUNT (1, 2, ...), as SLURM does. (Real
  SLURM also ends a job that keeps running; submitit exits by itself right after requeueing.)
* `scancel --signal SIG <jobid>` sends SIG to the job's process (pid_<jobid>), as submitit's
  `_interrupt()` and `scancel --signal` users do; a plain scancel is only logged.
* sacct reports each job's state (PENDING, RUNNING, REQUEUED, COMPLETED, FAILED); sinfo lists
  the partitions `gpu` and `cpu`.

Every call, and every start of a job with its restart count, is appended to slurm/calls.log.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

_LOG = r'''
import os, sys
from pathlib import Path
LOG = Path(os.environ["FAKE_SLURM_DIR"])


def note(line):
    with open(LOG / "calls.log", "a") as f:
        f.write(line + "\n")


def set_state(jid, state):  # atomic: sacct never reads a half-written state
    tmp = LOG / f".state_{jid}.tmp"
    tmp.write_text(state)
    os.replace(tmp, LOG / f"state_{jid}")
'''

SBATCH = r'''
import re, subprocess
note("sbatch " + " ".join(sys.argv[1:]))
script = Path(sys.argv[-1]).read_text()
counter = LOG / "next_id"
job = int(counter.read_text()) if counter.exists() else 1000
counter.write_text(str(job + 1))
(LOG / f"sbatch_{job}.sh").write_text(script)
array = re.search(r"#SBATCH --array=(\d+)-(\d+)", script)
tasks = [str(t) for t in range(int(array[1]), int(array[2]) + 1)] if array else []
runner = [sys.executable, str(Path(__file__).with_name("fake_runner.py")), str(job),
          str(LOG / f"sbatch_{job}.sh"), *tasks]
subprocess.Popen(runner, start_new_session=True, stdout=subprocess.DEVNULL,
                 stderr=open(LOG / f"runner_{job}.err", "w"))
print(f"Submitted batch job {job}")
'''

RUNNER = r'''
import shlex, subprocess, time
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


def job_id(task):
    return f"{job}_{task}" if task is not None else job


def run(task):
    """Run one task until it ends without a pending `scontrol requeue`."""
    jid = job_id(task)
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
    out = Path(fill(opts.get("--output", str(LOG / "%j.out")), jid, task))
    err = Path(fill(opts.get("--error", str(out)), jid, task))
    out.parent.mkdir(parents=True, exist_ok=True)
    requeue = LOG / f"requeue_{jid}"
    restarts = 0
    while True:
        if restarts:  # SLURM sets it on requeued jobs only
            env["SLURM_RESTART_COUNT"] = str(restarts)
        note(f"start {jid} restart={restarts}")
        set_state(jid, "RUNNING")
        with open(out, "a") as o, open(err, "a") as e:
            proc = subprocess.Popen(words, env=env, stdout=o, stderr=e)
            (LOG / f"pid_{jid}").write_text(str(proc.pid))
            code = proc.wait()
        if not requeue.exists():
            set_state(jid, "COMPLETED" if code == 0 else "FAILED")
            return
        requeue.unlink()
        set_state(jid, "REQUEUED")
        restarts += 1


for task in tasks:
    set_state(job_id(task), "PENDING")
for task in tasks:
    run(task)
'''

SACCT = r'''
ids = sys.argv[sys.argv.index("-j") + 1].split(",") if "-j" in sys.argv else []
print("JobID|State|NodeList")
for path in sorted(LOG.glob("state_*")):
    jid = path.name[len("state_"):]
    if not ids or any(jid == i or jid.startswith(i.split("_")[0] + "_") for i in ids):
        print(f"{jid}|{path.read_text()}|fakenode")
'''

SINFO = r'''
note("sinfo " + " ".join(sys.argv[1:]))
print("gpu\ncpu")
'''

SCONTROL = r'''
note("scontrol " + " ".join(sys.argv[1:]))
if sys.argv[1:2] == ["requeue"]:
    for jid in sys.argv[2].split(","):
        if not (LOG / f"state_{jid}").exists():
            sys.exit(f"scontrol: error: Invalid job id specified: {jid}")
        (LOG / f"requeue_{jid}").touch()
'''

SCANCEL = r'''
import signal
note("scancel " + " ".join(sys.argv[1:]))
args, name = sys.argv[1:], None
for i, arg in enumerate(args):
    if arg.startswith("--signal="):
        name = arg.split("=", 1)[1]
    elif arg in ("--signal", "-s"):
        name = args[i + 1]
if name is not None:
    number = getattr(signal, name if name.startswith("SIG") else "SIG" + name)
    for jid in (a for a in args if a[0].isdigit()):
        os.kill(int((LOG / f"pid_{jid}").read_text()), number)
'''

SRUN = r'''
note("srun " + " ".join(sys.argv[1:]))
'''

SCRIPTS = {"sbatch": SBATCH, "fake_runner.py": RUNNER, "sacct": SACCT, "sinfo": SINFO,
           "scontrol": SCONTROL, "scancel": SCANCEL, "srun": SRUN}


def fake_slurm(tmp_path: Path) -> dict:
    """Write the stand-ins under tmp_path and return an environment that puts them first on PATH."""
    bin_dir, log = tmp_path / "bin", tmp_path / "slurm"
    bin_dir.mkdir()
    log.mkdir()
    for name, body in SCRIPTS.items():
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(_LOG) + textwrap.dedent(body))
        path.chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                FAKE_SLURM_DIR=str(log), OMP_NUM_THREADS="1")


def calls(tmp_path: Path) -> list[str]:
    """The stand-ins' log lines: 'sbatch ...', 'scontrol requeue 1000_0', 'start 1000_0 restart=0'."""
    path = tmp_path / "slurm" / "calls.log"
    return path.read_text().splitlines() if path.exists() else []


def job_starts(tmp_path: Path) -> list[str]:
    """'<jobid> restart=<n>' for every start of a job, in order."""
    return [line[len("start "):] for line in calls(tmp_path) if line.startswith("start ")]


class PreemptedOnce:
    """A checkpointable submitit job: on its first start it sends itself submitit's preemption
    signal and waits to be ended; submitit's handler calls `checkpoint()` (which records that it
    ran) and `scontrol requeue`. The requeued start finds that state and returns what it saw."""

    def __init__(self) -> None:
        self.checkpointed_by: str | None = None

    def __call__(self) -> dict:
        import signal
        import time

        import submitit

        env = submitit.JobEnvironment()
        if self.checkpointed_by is None:
            os.kill(os.getpid(), env._usr_sig())
            time.sleep(60)
            raise RuntimeError("submitit's preemption handler did not end the job")
        return {"job_id": env.job_id, "checkpointed_by": self.checkpointed_by,
                "restart_count": os.environ.get("SLURM_RESTART_COUNT"),
                "signal": signal.Signals(env._usr_sig()).name}

    def checkpoint(self):
        import submitit

        self.checkpointed_by = submitit.JobEnvironment().job_id
        return submitit.helpers.DelayedSubmission(self)
