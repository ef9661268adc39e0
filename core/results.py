"""The one results table: append-only JSON lines, one row per finished run.

Every training, evaluation and bench job appends exactly one row to `RunConfig.results`
(default `paper_tables/runs.jsonl`); `bench/make_tables.py` and the notebooks only read it.
Pattern: lm-evaluation-harness result records + nanochat's `run_exists` idempotence
(github.com/EleutherAI/lm-evaluation-harness, github.com/karpathy/nanochat). This file uses the
standard library only (hardware_info imports torch lazily), so it can also be loaded on its own,
without core/__init__.

Row schema (keys sorted on write; `?` = optional):
    run_id       str   run_id(config, code version): 12 hex chars, same config + code => same id
    kind         str   "train" | "eval" | "bench"
    status       str   "ok" | "failed". Only finished jobs write rows; there is no "running" row,
                       a job killed before it could write leaves no trace here.
    ablation     str   ablation name (RunConfig.ablation), e.g. "attn"
    table        str   paper_tables/<table>.md this row feeds (RunConfig.table)
    factor?      str   name of the column that labels this row in its table, e.g. "variant"
                       (ablation runs: the label their table_spec gives; oldest rows: "attn")
    preset       str   model size preset, e.g. "tiny"
    seed         int   RunConfig.seed; seeds? dict of derived generator seeds
    attn, ...          flat copies of key config values (FLAT_KEYS: model.attn, ...; run.py adds
                       variant), for grep and pandas
    config       dict  the full resolved RunConfig as nested JSON
    commit       str   git commit of the code ("unknown" outside a git checkout)
    dirty        bool  uncommitted changes outside paper_tables/ when the run started
    date         str   UTC ISO 8601 time the row was written, e.g. "2026-11-21T19:40:00+00:00"
    hardware     dict  hardware_info(): cpu, cores, cuda devices, torch threads, host
    torch        str   torch.__version__
    metrics      dict  name -> number or list, e.g. val_loss, mse_mean, mse_per_frame, psnr_first
    metric_version? dict  name -> version of the metric implementation
    wall_time_s  float wall-clock seconds of the job
    error?       str   failed rows: exception type, message and the last traceback lines
    nonfinite?   list  dotted paths of values that were NaN/inf and are stored as null (see below)

JSON has no NaN or infinity. append_row stores every non-finite float as null and lists its path
(e.g. "metrics.val_loss") in `nonfinite`, so a diverged run stays visible instead of being
dropped or poisoning averages; readers treat null metrics as missing.

Concurrency: rows are written with one O_APPEND write under an exclusive fcntl.flock, then
fsync'ed, so concurrent jobs (Hydra multirun, submitit, SLURM arrays) never interleave or lose
lines. flock works across processes on local disks and on Linux NFSv4 clients; a damaged line
(e.g. a node that died mid-write on a filesystem without locks) is skipped and reported by
read_rows, never fatal.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import subprocess
import warnings
from pathlib import Path
from typing import Any, Iterable, NamedTuple

try:
    import fcntl
except ImportError:  # Windows: appends stay O_APPEND writes, but unlocked
    fcntl = None

# Top-level config keys that only say where outputs go or how fast to run: they do not change the
# result, so they are left out of the run id (moving the table or the run dir keeps the id).
IO_KEYS = frozenset({"results", "out_dir", "force", "threads"})
RUN_ID_CHARS = 12
# Changes under these paths do not make the code dirty: the results table and the tables
# generated from it change with every run.
NOT_CODE = ("paper_tables",)
_GIT_TIMEOUT_S = 10
# Path-valued keys (top-level config keys and extra row columns) that make_row stores relative to
# the checkout that ran, so committed rows carry no machine-specific absolute paths.
PATH_KEYS = ("results", "out_dir", "train_dir")
REPO_ROOT = Path(__file__).resolve().parents[1]
# Flat columns make_row copies out of the nested config: column -> dotted config path. Which
# column labels a row in its table is the writer's business (`factor`), never decided here.
FLAT_KEYS = {"ablation": "ablation", "table": "table", "preset": "preset", "seed": "seed",
             "attn": "model.attn"}


# ----------------------------------------------------------------------------- identity


def _canonical(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, tuples as lists."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def run_id(resolved_config: dict, commit: str, ignore: Iterable[str] = IO_KEYS) -> str:
    """Short sha256 of the resolved config (minus top-level I/O keys) and the code version.

    Pass git_info()["code"] as `commit` so that uncommitted edits also change the id.
    """
    config = {k: v for k, v in resolved_config.items() if k not in set(ignore)}
    payload = _canonical({"config": config, "commit": commit})
    return hashlib.sha256(payload.encode()).hexdigest()[:RUN_ID_CHARS]


def _git(repo_root: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(repo_root), *args], capture_output=True, text=True,
                         timeout=_GIT_TIMEOUT_S, check=True)
    return out.stdout


def git_info(repo_root: str | Path | None = None) -> dict:
    """{commit, dirty, code} of the checkout holding `repo_root` (default: this repository).

    commit is the full HEAD sha, or "unknown" without git, outside a repository or before the first
    commit. dirty is True when tracked or untracked (not ignored) files differ outside
    paper_tables/. code is the commit, plus "+dirty.<hash of the diff>" when dirty: two runs
    share a code version only if they ran the same source.
    """
    root = Path(repo_root) if repo_root is not None else Path(__file__).resolve().parents[1]
    exclude = [f":(exclude){p}" for p in NOT_CODE]
    try:
        commit = _git(root, "rev-parse", "HEAD").strip()
        status = _git(root, "status", "--porcelain", "--", ".", *exclude)
        diff = _git(root, "diff", "HEAD", "--", ".", *exclude) if status else ""
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": True, "code": "unknown"}
    dirty = bool(status.strip())
    code = commit
    if dirty:
        digest = hashlib.sha256((status + diff).encode(errors="replace")).hexdigest()[:8]
        code = f"{commit}+dirty.{digest}"
    return {"commit": commit, "dirty": dirty, "code": code}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_info() -> dict:
    """Where the row was produced: CPU model and cores, CUDA devices, torch version and threads."""
    import torch  # lazy: reading or writing rows does not need torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cuda = torch.cuda.is_available()
    return {
        "cpu": _cpu_model(),
        "cores": cores,
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_version": torch.version.cuda,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
    }


def utc_now() -> str:
    """Current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- writing


def _json_default(obj: Any) -> Any:
    """JSON for the values runs tend to produce: numpy/torch scalars, paths, dataclasses."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if hasattr(obj, "tolist"):  # numpy arrays/scalars, torch tensors
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    return str(obj)  # Path, Enum, ...: a readable string beats losing the row


def _finite(obj: Any, path: str, bad: list[str]) -> Any:
    """A copy of `obj` with non-finite floats replaced by None; their dotted paths go to `bad`."""
    if isinstance(obj, dict):
        return {str(k): _finite(v, f"{path}.{k}" if path else str(k), bad) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v, f"{path}[{i}]", bad) for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        bad.append(path)
        return None
    if not isinstance(obj, (str, int, float, bool, type(None))):
        converted = _json_default(obj)
        return obj if converted is obj else _finite(converted, path, bad)
    return obj


def encode_row(row: dict) -> bytes:
    """One complete JSON line; non-finite floats become null and are listed under `nonfinite`."""
    bad: list[str] = []
    clean = _finite(row, "", bad)
    if bad:
        clean["nonfinite"] = sorted(set(clean.get("nonfinite") or []) | set(bad))
    return (json.dumps(clean, sort_keys=True, allow_nan=False) + "\n").encode()


def _lookup(config: dict, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def portable_path(value: Any, root: str | Path = REPO_ROOT) -> Any:
    """An absolute path inside `root` as a path relative to it; anything else unchanged."""
    if not isinstance(value, (str, Path)) or not Path(value).is_absolute():
        return value
    try:
        return str(Path(value).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(value)  # outside the checkout: kept as the user gave it


def make_row(config: dict, *, kind: str, status: str, metrics: dict | None = None,
             wall_time_s: float | None = None, error: str | None = None, factor: str | None = None,
             flat: dict[str, str] | None = None, git: dict | None = None, **extra: Any) -> dict:
    """A row in the schema above from a resolved RunConfig dict (dataclasses.asdict of it).

    flat maps column -> dotted config path and is copied to top-level columns (default: ablation,
    table, preset, seed, attn=model.attn). `factor` names the column that labels the row in its
    table. `git` defaults to git_info(); extra keys (e.g. seeds, metric_version) are added as is.
    Paths under PATH_KEYS that lie inside this checkout are stored relative to it.
    """
    if status not in ("ok", "failed"):
        raise ValueError(f"status={status!r}: choose ok or failed")
    git = git if git is not None else git_info()
    flat = flat if flat is not None else FLAT_KEYS
    hardware = hardware_info()
    config = {k: portable_path(v) if k in PATH_KEYS else v for k, v in config.items()}
    extra = {k: portable_path(v) if k in PATH_KEYS else v for k, v in extra.items()}
    row = {col: _lookup(config, dotted) for col, dotted in flat.items()}
    row.update(run_id=run_id(config, git["code"]), kind=kind, status=status, config=config,
               commit=git["commit"], dirty=git["dirty"], date=utc_now(), hardware=hardware,
               torch=hardware["torch"], metrics=dict(metrics or {}), wall_time_s=wall_time_s)
    if factor is not None:
        row["factor"] = factor
    if error is not None:
        row["error"] = error
    row.update(extra)
    return row


def append_row(path: str | Path, row: dict) -> dict:
    """Append `row` as one line to the JSONL table at `path` (atomic across processes).

    Creates parent directories. Returns the row as written (after the NaN/inf -> null rule).
    """
    data = encode_row(row)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        # A writer that died mid-line leaves no trailing newline: start on a fresh line so that
        # only the damaged row is lost, not ours too.
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        view = memoryview(data)
        while view:  # os.write may write less than asked (signals, huge rows)
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    return json.loads(data)


# ----------------------------------------------------------------------------- reading


class DamagedLine(NamedTuple):
    """A line of the results table that is not a JSON object."""
    path: str
    lineno: int  # 1-based
    error: str
    text: str  # the first 200 characters


def scan_rows(path: str | Path) -> tuple[list[dict], list[DamagedLine]]:
    """All rows of the table in file order, and the lines that could not be parsed.

    A missing file is an empty table. Blank lines are ignored.
    """
    path = Path(path)
    rows: list[dict] = []
    damaged: list[DamagedLine] = []
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return rows, damaged
    with f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH)  # never read a row that is half written
        data = f.read()
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        text = raw.decode("utf-8", errors="replace")
        try:
            row = json.loads(raw)
            if not isinstance(row, dict):
                raise ValueError(f"expected a JSON object, got {type(row).__name__}")
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            damaged.append(DamagedLine(str(path), lineno, str(e), text[:200]))
            continue
        rows.append(row)
    return rows, damaged


def read_rows(path: str | Path, on_damaged: str = "warn") -> list[dict]:
    """Rows of the results table; damaged lines are skipped.

    on_damaged: "warn" (warnings.warn naming the file and line numbers), "raise" (ValueError), or
    "ignore". Use scan_rows to get the damaged lines themselves.
    """
    if on_damaged not in ("warn", "raise", "ignore"):
        raise ValueError(f"on_damaged={on_damaged!r}: choose warn, raise or ignore")
    rows, damaged = scan_rows(path)
    if damaged and on_damaged != "ignore":
        lines = ", ".join(str(d.lineno) for d in damaged)
        msg = (f"{path}: skipped {len(damaged)} damaged line(s) (line {lines}); "
               f"first error: {damaged[0].error}")
        if on_damaged == "raise":
            raise ValueError(msg)
        warnings.warn(msg, stacklevel=2)
    return rows


def find_ok_row(path: str | Path, run_id: str) -> dict | None:
    """The last row with this run_id and status "ok", or None (failed rows never count)."""
    found = None
    for row in read_rows(path):
        if row.get("run_id") == run_id and row.get("status") == "ok":
            found = row
    return found
