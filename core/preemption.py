"""Preemption: on SIGTERM / SIGUSR1 (as SLURM sends them) checkpoint at a step boundary and exit.

Usage (once, around everything a job does, in the main thread of every rank):

    from core.preemption import PreemptionGuard
    with PreemptionGuard():   # handlers for SIGTERM and SIGUSR1; the old ones are restored on exit
        run(cfg)              # train() inside notices the request at its next step boundary

What a signal does:
  * during `train()`: it is only recorded. train() finishes the current step, writes
    `checkpoint.pt` (rank 0; under DDP all ranks agree on the step through one all-reduce of the
    flag per step), then calls `hand_back()`. A rerun with the same out_dir resumes from it.
  * anywhere else (data scan, evaluation): `hand_back()` runs at once; there is nothing to save.

`hand_back()` calls the handler that was installed before the guard, if it is a function (e.g.
submitit's: on SIGUSR1 it requeues the job and exits with SystemExit(-1); on SIGTERM it only logs).
When there is none, or it returns, `Preempted` is raised. `Preempted` is a `SystemExit` with exit
code `PREEMPTED_EXIT_CODE` = 75 (EX_TEMPFAIL, "try again later"): uncaught it ends the process
quietly with status 75, `except Exception` blocks do not swallow it, and an sbatch script
without submitit can requeue on it:

    python ablations/run.py ... || { [ $? -eq 75 ] && scontrol requeue "$SLURM_JOB_ID"; }

Give SLURM time for one step plus one checkpoint: `#SBATCH --signal=USR1@120` (submitit's
`slurm_signal_delay_s`) sends SIGUSR1 that many seconds before the end; SIGTERM is followed by
SIGKILL after the cluster's KillWait (often 30 s). A kill -9 before the checkpoint is complete
leaves the previous one intact (see core/checkpoint.py).

API for training loops: `current()` (the innermost active guard or None), `stop_requested(device)`
(the pending signal number, agreed across DDP ranks, or 0), `hand_back()`, and the
`@defers_preemption` decorator that marks a function (train) as one that checks at step
boundaries.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
from typing import Callable, Iterable, List, Optional

PREEMPTED_EXIT_CODE = 75  # os.EX_TEMPFAIL
DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
_ACTIVE: List["PreemptionGuard"] = []


class Preempted(SystemExit):
    """Raised after the checkpoint when a preemption signal asks the job to stop (exit code 75)."""

    def __init__(self, signum: int):
        super().__init__(PREEMPTED_EXIT_CODE)
        self.signum = signum

    def __str__(self) -> str:
        return (f"preempted by {signal.Signals(self.signum).name}: exiting with status "
                f"{PREEMPTED_EXIT_CODE} for requeue; a rerun resumes from the last checkpoint")


def _say(message: str) -> None:
    """Write to stderr without Python's buffered streams (safe inside a signal handler)."""
    try:
        os.write(2, f"[preemption] {message}\n".encode())
    except OSError:
        pass


class PreemptionGuard:
    """Context manager: record SIGTERM/SIGUSR1 and turn them into checkpoint-then-exit."""

    def __init__(self, signals: Iterable[int] = DEFAULT_SIGNALS):
        self.signals = tuple(signals)
        self.requested: Optional[int] = None  # the signal number received and not yet handled
        self.received: List[int] = []  # every distinct signal since the last hand-back, in order
        self._previous: dict = {}
        self._defer_depth = 0

    def __enter__(self) -> "PreemptionGuard":
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("PreemptionGuard must be entered in the main thread (Python only "
                               "delivers signals there)")
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        _ACTIVE.append(self)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        _ACTIVE.remove(self)
        for sig, prev in self._previous.items():
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        if exc_type is None and self.requested is not None:  # arrived after the last boundary
            self.hand_back()

    @property
    def deferring(self) -> bool:
        return self._defer_depth > 0

    def _on_signal(self, signum: int, frame) -> None:
        if signum not in self.received:  # each one is handed back (submitit: TERM, then USR2)
            self.received.append(signum)
        if self.requested is not None:
            return  # already on the way out
        self.requested = signum
        if self.deferring:
            _say(f"received {signal.Signals(signum).name}: checkpointing at the next step boundary")
        else:
            self.hand_back()

    def hand_back(self) -> None:
        """Give every signal received to its previous handler, in arrival order; raise Preempted
        if they all return. (submitit emulates a preemption as SIGTERM, which its handler only
        logs, then SIGUSR2, which requeues: the second must not be lost to the first.)"""
        signum = self.requested if self.requested is not None else signal.SIGTERM
        pending = self.received or [signum]  # another DDP rank's signal: none received here
        self.requested, self.received = None, []
        for sig in pending:
            previous = self._previous.get(sig)
            if callable(previous):
                _say(f"{signal.Signals(sig).name}: calling the previously installed handler")
                previous(sig, None)
        _say(f"{signal.Signals(signum).name}: exiting with status {PREEMPTED_EXIT_CODE} "
             "for requeue")
        raise Preempted(signum)


def current() -> Optional[PreemptionGuard]:
    """The innermost active guard, or None."""
    return _ACTIVE[-1] if _ACTIVE else None


def stop_requested(device=None) -> int:
    """The pending signal number (0: none). Under torch.distributed the ranks agree (MAX)."""
    guard = current()
    if guard is None:
        return 0
    flag = guard.requested or 0
    import torch.distributed as dist  # lazy: this module does not need torch otherwise

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        import torch

        agreed = torch.tensor([flag], dtype=torch.int64, device=device)
        dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
        flag = int(agreed.item())
        if flag and guard.requested is None:  # another rank got the signal
            guard.requested = flag
    return flag


def hand_back() -> None:
    """hand_back() of the current guard (called by train() after the checkpoint)."""
    guard = current()
    if guard is not None and guard.requested is not None:
        guard.hand_back()


def defers_preemption(fn: Callable) -> Callable:
    """Decorator: while `fn` runs, signals only set the flag (fn checks stop_requested())."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        guard = current()
        if guard is None:
            return fn(*args, **kwargs)
        guard._defer_depth += 1
        try:
            result = fn(*args, **kwargs)
        finally:
            guard._defer_depth -= 1
        if guard.requested is not None and not guard.deferring:
            guard.hand_back()  # arrived during fn's last step: fn's final checkpoint is on disk
        return result

    return wrapper
