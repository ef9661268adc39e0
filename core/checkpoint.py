"""Training checkpoints that survive kill -9, full disks and bit rot: checksummed, atomic, rotated.

File format. A checkpoint is a 256-byte text header followed by an ordinary `torch.save` payload:

    VIDEOMAR-CKPT v1 sha256=<64 hex> bytes=<payload size> step=<step or -1>   (space padded, "\\n")

`read_checkpoint` checks the size (a truncated file is named as truncated) and the SHA-256 of the
payload before anything is unpickled, so a flipped bit that `torch.load` would happily load is
caught too. Files without the header (plain `torch.save` zips from before this format) are still
read, unverified. `inspect_checkpoint` verifies a file and returns its header (step included)
without unpickling it.

Writing (`save_checkpoint`): the payload is streamed to a temporary file in the same directory
while being hashed, the header is filled in, the file is fsynced and only then renamed over
`checkpoint.pt` (os.replace is atomic on POSIX); the directory is fsynced after the renames.
Before the rename the current `checkpoint.pt` becomes `checkpoint.prev.pt` (a hard link, so that
`checkpoint.pt` never disappears; a rename where links are not supported). A process killed at any
moment therefore leaves the old checkpoint, or the new one, plus at worst a stale `.*.tmp` file
(removed by the next successful save) -- never a half-written `checkpoint.pt`. The current file is
only rotated when its header and size look complete, so a damaged current file never pushes out
the good previous one.

Reading for resume (`read_latest_checkpoint`): `checkpoint.pt` if it verifies, else the previous
one with a `CheckpointWarning` naming both, else a `CheckpointError` listing what is wrong with
each. `read_checkpoint(path)` alone raises a `CheckpointError` naming the file and, when there is
one, the last good checkpoint next to it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

CHECKPOINT_NAME = "checkpoint.pt"
PREVIOUS_SUFFIX = ".prev"  # checkpoint.pt -> checkpoint.prev.pt
MAGIC = b"VIDEOMAR-CKPT"
FORMAT_VERSION = 1
HEADER_BYTES = 256
HASH_CHUNK = 1 << 22  # bytes read at a time when verifying
_HEADER_RE = re.compile(
    rb"^VIDEOMAR-CKPT v(\d+) sha256=([0-9a-f]{64}) bytes=(\d+) step=(-?\d+) *\n$")
_ZIP_MAGIC = b"PK\x03\x04"  # a plain torch.save file


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit this run; the message names the file."""


class CheckpointWarning(UserWarning):
    """Resuming from the previous checkpoint because the latest one is missing or damaged."""


def previous_path(path: str | Path) -> Path:
    """Where the checkpoint before `path` is kept: checkpoint.pt -> checkpoint.prev.pt."""
    path = Path(path)
    return path.with_name(f"{path.stem}{PREVIOUS_SUFFIX}{path.suffix}")


def _header(digest: str, size: int, step: int) -> bytes:
    text = f"{MAGIC.decode()} v{FORMAT_VERSION} sha256={digest} bytes={size} step={step}"
    return text.encode().ljust(HEADER_BYTES - 1) + b"\n"


class _HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to `f`."""

    def __init__(self, f):
        super().__init__()
        self.f, self.sha, self.size = f, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        self.sha.update(data)
        self.size += len(data)
        self.f.write(data)
        return len(data)


class _Window(io.RawIOBase):
    """A read-only view of `f` from byte `offset` on (torch.load sees the payload alone)."""

    def __init__(self, f, offset: int):
        super().__init__()
        self.f, self.offset = f, offset
        self.f.seek(offset)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        return self.f.readinto(buf)

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos += self.offset
        return self.f.seek(pos, whence) - self.offset

    def tell(self) -> int:
        return self.f.tell() - self.offset


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _parse_header(path: Path, head: bytes) -> dict:
    match = _HEADER_RE.match(head)
    if match is None:
        raise CheckpointError(f"checkpoint {path} has a damaged header")
    version, digest, size, step = match.groups()
    if int(version) > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format v{int(version)}, newer than this "
                              f"code's v{FORMAT_VERSION}: update the code")
    return {"format": int(version), "sha256": digest.decode(), "bytes": int(size),
            "step": int(step)}


def _check_complete(path: Path) -> dict:
    """Header + size check (cheap, no hashing) -> header dict; CheckpointError if it fails."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
            total = os.fstat(f.fileno()).st_size
    except OSError as err:
        raise CheckpointError(f"cannot open checkpoint {path}: {err}") from err
    if head[:4] == _ZIP_MAGIC:
        return {"format": 0, "sha256": None, "bytes": total, "step": None}
    if total == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    if not head.startswith(MAGIC):
        raise CheckpointError(f"{path} is not a training checkpoint (unknown file format)")
    info = _parse_header(path, head)
    if total != HEADER_BYTES + info["bytes"]:
        state = "truncated" if total < HEADER_BYTES + info["bytes"] else "longer than written"
        raise CheckpointError(f"checkpoint {path} is {state}: {total} bytes on disk, "
                              f"{HEADER_BYTES + info['bytes']} written")
    return info


def inspect_checkpoint(path: str | Path) -> dict:
    """Verify size and SHA-256 of `path` without unpickling -> {format, sha256, bytes, step}.

    format 0 is a plain torch.save file (no checksum to check). Raises CheckpointError naming
    the file when it is missing, truncated or its payload does not match its checksum.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    info = _check_complete(path)
    if info["format"] == 0:
        return info
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(HEADER_BYTES)
        while chunk := f.read(HASH_CHUNK):
            sha.update(chunk)
    if sha.hexdigest() != info["sha256"]:
        raise CheckpointError(f"checkpoint {path} is corrupt: the SHA-256 of its payload is "
                              f"{sha.hexdigest()[:12]}..., its header says "
                              f"{info['sha256'][:12]}...")
    return info


def _last_good_hint(path: Path) -> str:
    """' The last good checkpoint is <prev> (step N): ...' or a note that there is none."""
    prev = previous_path(path)
    if prev == path or path.name.endswith(f"{PREVIOUS_SUFFIX}{path.suffix}") or not prev.exists():
        return " There is no previous checkpoint next to it: delete it to start over."
    try:
        info = inspect_checkpoint(prev)
    except CheckpointError as err:
        return f" The previous checkpoint is damaged too ({err}): delete both to start over."
    step = f" (step {info['step']})" if info.get("step") is not None else ""
    return (f" The last good checkpoint is {prev}{step}: train(resume=True) falls back to it, "
            f"or load it with load_checkpoint('{prev}').")


def save_checkpoint(path: str | Path, state: dict, keep_previous: bool = True) -> str:
    """Write `state` to `path` atomically with a checksum; returns the payload's SHA-256.

    With keep_previous the checkpoint being replaced is kept as previous_path(path). See the
    module docstring for the guarantees.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    step = state.get("step", -1) if isinstance(state, dict) else -1
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide checkpoints from the rest of a group
        with os.fdopen(fd, "wb") as f:
            f.write(_header("0" * 64, 0, -1))  # placeholder until the payload is hashed
            writer = _HashingWriter(f)
            torch.save(state, writer)
            digest = writer.sha.hexdigest()
            f.seek(0)
            f.write(_header(digest, writer.size, int(step if step is not None else -1)))
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            _rotate(path)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    _fsync_dir(path.parent)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by writers killed mid-save
        with contextlib.suppress(OSError):
            stale.unlink()
    return digest


def _rotate(path: Path) -> None:
    """Make the current checkpoint the previous one; skipped when it does not look complete."""
    try:
        _check_complete(path)
    except CheckpointError as err:
        warnings.warn(f"not keeping {path} as the previous checkpoint: {err}", CheckpointWarning,
                      stacklevel=3)
        return
    prev = previous_path(path)
    link = prev.with_name(f".{prev.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    try:
        os.link(path, link)  # checkpoint.pt stays in place until the new one replaces it
        os.replace(link, prev)
    except OSError:  # no hard links here (some network/FUSE filesystems): a plain rename
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        os.replace(path, prev)


def _read(path: Path, map_location) -> dict:
    try:
        info = inspect_checkpoint(path)
        with open(path, "rb") as f:
            source = _Window(f, HEADER_BYTES) if info["format"] else f
            ckpt = torch.load(source, map_location=map_location, weights_only=True)
    except CheckpointError:
        raise
    except Exception as err:  # unpickling errors, a zip that is not a torch file, ...
        raise CheckpointError(f"cannot read checkpoint {path}: {type(err).__name__}: "
                              f"{err}") from err
    if not isinstance(ckpt, dict) or "step" not in ckpt:
        raise CheckpointError(f"{path} is not a training checkpoint (no 'step' entry)")
    return ckpt


def read_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """The verified checkpoint dict at `path`.

    Raises CheckpointError naming the file, what is wrong with it and the last good checkpoint
    next to it (if any).
    """
    path = Path(path)
    try:
        return _read(path, map_location)
    except CheckpointError as err:
        raise CheckpointError(f"{err}.{_last_good_hint(path)}") from err


def read_latest_checkpoint(path: str | Path, map_location="cpu") -> tuple[Path, dict] | None:
    """(file, dict) of the newest good checkpoint among `path` and its previous one.

    None when neither exists. Falling back to the previous checkpoint issues a CheckpointWarning
    naming both files; a CheckpointError lists each file's problem when none can be read.
    """
    path = Path(path)
    errors = []
    for candidate in (path, previous_path(path)):
        if not candidate.exists():
            continue
        try:
            ckpt = _read(candidate, map_location)
        except CheckpointError as err:
            errors.append(str(err))
            continue
        if candidate != path:
            why = "; ".join(errors) if errors else f"{path} is missing"
            warnings.warn(f"resuming from the previous checkpoint {candidate} (step "
                          f"{ckpt['step']}) because {why}", CheckpointWarning, stacklevel=2)
        return candidate, ckpt
    if errors:
        raise CheckpointError("no usable checkpoint: " + "; ".join(errors)
                              + ". Delete them to start over, or pass resume=False.")
    return None


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def restore(ckpt: dict, path: str | Path, model: nn.Module | None = None, ema=None,
            optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Load an already read checkpoint into model / EMA / optimizer (each optional)."""
    try:
        if model is not None:
            _unwrap(model).load_state_dict(ckpt["model"])
        if ema is not None:
            ema.load_state_dict(ckpt["ema"])
        if optimizer is not None:
            optimizer.load_state_dict(ckpt["optimizer"])
    except (KeyError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} does not fit this model/run: {e}") from e
    return ckpt


def load_checkpoint(path: str | Path, model: nn.Module | None = None, ema=None,
                    optimizer: torch.optim.Optimizer | None = None, map_location="cpu") -> dict:
    """Load `path` into model / EMA / optimizer (each optional); returns the checkpoint dict."""
    return restore(read_checkpoint(path, map_location), path, model, ema, optimizer)
