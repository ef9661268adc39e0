"""Fault injection (issue 7): each fault a cluster job meets, injected for real, and what survives.

kill -9 mid-step and mid-checkpoint-write, SIGTERM/SIGUSR1 preemption, damaged checkpoints,
NaN losses and gradients, 8 concurrent writers of the results table with one dying mid-line, a
crashed run, a folder of broken videos, invalid configs and missing pretrained weights. Every test
fails when its protection is taken out (the comment above each says which).

Child processes run this file as a script (`python tests/test_faults.py MODE ...`) so that they
train exactly the model and data of the in-process reference run: one tiny VideoMAR (width 32,
depth 1) on 12 random 3-frame 16x16 clips, one torch thread.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import av  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

from core import checkpoint as ckpt_mod  # noqa: E402
from core import preemption, results  # noqa: E402
from core.checkpoint import (HEADER_BYTES, CheckpointError, CheckpointWarning,  # noqa: E402
                             inspect_checkpoint, previous_path, read_checkpoint, save_checkpoint)
from core.config import (ConfigError, DataConfig, ModelConfig, RunConfig,  # noqa: E402
                         SamplerConfig, TokenizerConfig, TrainConfig)
from core.data import build_dataset, write_data_report  # noqa: E402
from core.model import VideoMAR  # noqa: E402
from core.preemption import PREEMPTED_EXIT_CODE, Preempted, PreemptionGuard  # noqa: E402
from core.tokenizers import check_pretrained, missing_pretrained_files  # noqa: E402
from core.train import NonFiniteLossError, load_checkpoint, train  # noqa: E402
from core.video_folder import VideoFolder  # noqa: E402

SEED = 3
NUM_CLIPS = 12
BATCH = 4
STEPS = 20
CHILD_TIMEOUT_S = 120
CHILD_ITEM_DELAY_S = 0.05  # children sleep per clip so that a signal lands mid-run


# ----------------------------------------------------------------------------- shared setup


class RecordingVideos(Dataset):
    """Clip i is noise from generator(500 + i); every read index is recorded (data order)."""

    def __init__(self, log: Path | None = None, delay: float = 0.0, on_item=None):
        self.seen: list[int] = []
        self.log, self.delay, self.on_item = log, delay, on_item

    def __len__(self) -> int:
        return NUM_CLIPS

    def __getitem__(self, i: int) -> dict:
        self.seen.append(i)
        if self.log is not None:
            with open(self.log, "a") as f:
                f.write(f"{i}\n")
        if self.on_item is not None:
            self.on_item(len(self.seen))
        if self.delay:
            time.sleep(self.delay)
        g = torch.Generator().manual_seed(500 + i)
        return {"video": torch.rand(3, 3, 16, 16, generator=g), "caption": f"clip {i}"}


def tiny_model() -> VideoMAR:
    cfg = ModelConfig(width=32, depth=1, num_heads=2, text_dim=16, text_len=4, text_vocab=64,
                      head_depth=1, head_width=32, diffusion_batch_mul=1)
    return VideoMAR(cfg, seed=0)


def tiny_cfg(**kw) -> TrainConfig:
    base = dict(steps=STEPS, batch_size=BATCH, lr=2e-3, warmup_steps=2, ckpt_every=4,
                log_every=1, ema_decay=0.9, grad_clip=1.0)
    return TrainConfig(**{**base, **kw})


def fit(out_dir, dataset=None, model=None, **kw):
    model = model if model is not None else tiny_model()
    dataset = dataset if dataset is not None else RecordingVideos()
    summary = train(model, dataset, tiny_cfg(**kw), seed=SEED, out_dir=out_dir, progress=False)
    return model, summary, dataset


def assert_close_params(a: dict, b: dict, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for name in a:
        diff = (a[name].float() - b[name].float()).abs().max().item()
        assert diff <= atol, f"{name}: max abs diff {diff:.3g} > {atol}"



@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: final weights, losses and the order clips were read in."""
    torch.set_num_threads(1)
    model, summary, data = fit(tmp_path_factory.mktemp("reference"))
    return {"params": model.state_dict(), "losses": summary["losses"], "order": data.seen}


def start_child(mode: str, out_dir: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(Path(__file__)), mode, str(out_dir), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=ROOT)


def wait_for_step(proc: subprocess.Popen, step: int) -> None:
    """Read the child's 'step N' lines until step `step` has started."""
    deadline = time.time() + CHILD_TIMEOUT_S
    for line in proc.stdout:
        if line.strip() == f"step {step}":
            return
        assert time.time() < deadline, "child too slow"
    proc.wait(timeout=CHILD_TIMEOUT_S)
    pytest.fail(f"child ended (rc {proc.returncode}) before step {step}: "
                f"{proc.stderr.read()[-2000:]}")


def check_resume_matches(out_dir: Path, reference: dict, order_before: list[int]) -> dict:
    """Resume in this process; the result must equal the uninterrupted run."""
    ckpt_step = inspect_checkpoint(out_dir / "checkpoint.pt")["step"]
    model, summary, data = fit(out_dir)
    assert summary["resumed_from"] == ckpt_step and summary["steps"] == STEPS
    assert summary["losses"] == pytest.approx(reference["losses"], abs=1e-6)
    assert_close_params(model.state_dict(), reference["params"])
    # same data order: what the killed run read before its checkpoint, then the resumed reads
    assert order_before[:BATCH * ckpt_step] + data.seen == reference["order"]
    return summary


# ----------------------------------------------------------------------------- 1. kill -9


@pytest.mark.slow
def test_kill_9_mid_step_then_resume_equals_uninterrupted(tmp_path, reference):
    # Protection: periodic checkpoints that hold everything a step depends on (weights, EMA,
    # optimizer, losses) + batches and draws that are pure functions of (seed, step).
    log = tmp_path / "order.txt"
    proc = start_child("run", tmp_path, str(log))
    wait_for_step(proc, 10)  # the checkpoint of step 8 is on disk, step 12's is ~0.2 s away
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=CHILD_TIMEOUT_S)
    assert proc.returncode == -signal.SIGKILL
    step = inspect_checkpoint(tmp_path / "checkpoint.pt")["step"]
    assert step in (8, 12)  # 8 unless the machine stalled the kill by a whole step
    order = [int(x) for x in log.read_text().split()]
    assert len(order) > step * BATCH  # it had read past its checkpoint when it died
    check_resume_matches(tmp_path, reference, order)


@pytest.mark.slow
def test_kill_9_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, reference):
    # Protection: temp file + fsync + rename. Writing checkpoint.pt in place would leave half a
    # file here; the checksum would then catch it, but the newest good state would be lost.
    log = tmp_path / "order.txt"
    proc = start_child("kill-mid-save", tmp_path, str(log), "2")  # dies inside the 2nd save
    proc.wait(timeout=CHILD_TIMEOUT_S)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]
    stale = list(tmp_path.glob(".checkpoint.pt.*.tmp"))
    assert len(stale) == 1 and stale[0].stat().st_size > 0  # it really died mid-write
    assert inspect_checkpoint(tmp_path / "checkpoint.pt")["step"] == 4
    summary = check_resume_matches(tmp_path, reference, [int(x) for x in log.read_text().split()])
    assert summary["resumed_from"] == 4
    assert not list(tmp_path.glob(".checkpoint.pt.*.tmp"))  # cleaned by the next save


# ----------------------------------------------------------------------------- 2. preemption


@pytest.mark.slow
def test_sigterm_checkpoints_exits_75_and_the_requeued_job_resumes(tmp_path, reference):
    # Protection: PreemptionGuard + the step-boundary check in train(). Without them SIGTERM
    # kills the process at once (rc -15) and nothing after the last periodic checkpoint is kept.
    log = tmp_path / "order.txt"
    proc = start_child("preempt", tmp_path, str(log))
    wait_for_step(proc, 6)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=CHILD_TIMEOUT_S)
    assert proc.returncode == PREEMPTED_EXIT_CODE, err[-2000:]
    assert "SIGTERM" in err and "checkpointing at the next step boundary" in err
    step = inspect_checkpoint(tmp_path / "checkpoint.pt")["step"]
    assert 6 <= step < STEPS  # saved at the boundary after the signal (ckpt_every is off)
    check_resume_matches(tmp_path, reference, [int(x) for x in log.read_text().split()])


def _send_at(item: int, sig: int):
    def on_item(count: int) -> None:
        if count == item:
            os.kill(os.getpid(), sig)
    return on_item


def test_sigusr1_checkpoints_then_calls_the_previous_handler(tmp_path):
    # Protection: the guard defers the signal to the step boundary, saves, then calls submitit's
    # (here: a stand-in) handler, which requeues and exits.
    calls = []

    def submitit_like(signum, frame):
        calls.append((signum, inspect_checkpoint(tmp_path / "checkpoint.pt")["step"]))
        raise SystemExit(-1)

    old = signal.signal(signal.SIGUSR1, submitit_like)
    try:
        data = RecordingVideos(on_item=_send_at(5 * BATCH + 2, signal.SIGUSR1))  # during step 5
        with pytest.raises(SystemExit) as exit_info, PreemptionGuard():
            fit(tmp_path, dataset=data, ckpt_every=0)
        assert exit_info.value.code == -1 and not isinstance(exit_info.value, Preempted)
        assert calls == [(signal.SIGUSR1, 6)]  # the checkpoint was on disk before the hand-back
        assert signal.getsignal(signal.SIGUSR1) is submitit_like  # restored on exit
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_sigterm_without_previous_handler_raises_preempted(tmp_path):
    data = RecordingVideos(on_item=_send_at(3 * BATCH + 1, signal.SIGTERM))
    with pytest.raises(Preempted) as info, PreemptionGuard():
        fit(tmp_path, dataset=data, ckpt_every=2)
    assert info.value.code == PREEMPTED_EXIT_CODE and info.value.signum == signal.SIGTERM
    assert "SIGTERM" in str(info.value)
    assert inspect_checkpoint(tmp_path / "checkpoint.pt")["step"] == 4
    # no double save at a step that already had its periodic checkpoint: the previous one is 2
    assert inspect_checkpoint(previous_path(tmp_path / "checkpoint.pt"))["step"] == 2
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_every_signal_reaches_its_previous_handler_in_order(tmp_path):
    # submitit emulates a preemption with SIGTERM (its handler only logs) and then SIGUSR2 (its
    # handler requeues): both arrive before the step boundary, both must be handed back.
    calls = []

    def log_only(signum, frame):
        calls.append(signum)

    def requeue(signum, frame):
        calls.append(signum)
        raise SystemExit(-1)

    signals = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
    old = {s: signal.signal(s, h) for s, h in zip(signals, (log_only, log_only, requeue))}
    try:
        def both(count: int) -> None:
            if count == 3 * BATCH + 1:
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGUSR2)
                os.kill(os.getpid(), signal.SIGTERM)  # a repeat is handed back once

        with pytest.raises(SystemExit) as exit_info, PreemptionGuard(signals):
            fit(tmp_path, dataset=RecordingVideos(on_item=both), ckpt_every=0)
        assert exit_info.value.code == -1 and not isinstance(exit_info.value, Preempted)
        assert calls == [signal.SIGTERM, signal.SIGUSR2]
        assert inspect_checkpoint(tmp_path / "checkpoint.pt")["step"] == 4
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def test_signal_outside_training_exits_at_once():
    with pytest.raises(Preempted), PreemptionGuard():
        os.kill(os.getpid(), signal.SIGUSR1)
        for _ in range(1000):  # the handler runs at the next bytecode boundary
            time.sleep(0.001)
        pytest.fail("the signal was not acted on")


# ----------------------------------------------------------------------------- 1. checkpoints


def _flip_tensor_byte(path: Path) -> None:
    """Flip one byte inside the largest tensor record: plain torch.load would not notice."""
    raw = bytearray(path.read_bytes())
    payload = bytes(raw[HEADER_BYTES:])
    import io

    info = max(zipfile.ZipFile(io.BytesIO(payload)).infolist(), key=lambda i: i.file_size)
    local = info.header_offset
    name_len = int.from_bytes(payload[local + 26:local + 28], "little")
    extra_len = int.from_bytes(payload[local + 28:local + 30], "little")
    where = HEADER_BYTES + local + 30 + name_len + extra_len + info.file_size // 2
    raw[where] ^= 0x40
    path.write_bytes(bytes(raw))
    torch.load(io.BytesIO(bytes(raw[HEADER_BYTES:])), weights_only=True)  # loads "fine"


def test_flipped_bit_is_caught_and_resume_falls_back_to_the_previous(tmp_path):
    # Protection: the SHA-256 in the header + the rotated checkpoint.prev.pt.
    _, clean, _ = fit(tmp_path / "clean", steps=6, ckpt_every=2)
    run_dir = tmp_path / "run"
    fit(run_dir, steps=4, ckpt_every=2)
    _flip_tensor_byte(run_dir / "checkpoint.pt")
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(run_dir / "checkpoint.pt")
    message = str(err.value)
    assert "checkpoint.pt is corrupt" in message and "SHA-256" in message
    assert f"last good checkpoint is {run_dir / 'checkpoint.prev.pt'} (step 2)" in message
    with pytest.warns(CheckpointWarning, match=r"previous checkpoint .*checkpoint\.prev\.pt"):
        _, summary, _ = fit(run_dir, steps=6, ckpt_every=2)
    assert summary["resumed_from"] == 2 and summary["losses"] == clean["losses"]


def test_truncated_missing_and_doubly_damaged_checkpoints(tmp_path):
    fit(tmp_path, steps=2, ckpt_every=1)
    current, prev = tmp_path / "checkpoint.pt", tmp_path / "checkpoint.prev.pt"
    good = current.read_bytes()
    current.write_bytes(good[:len(good) // 2])
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt is truncated.*prev\.pt \(step 1\)"):
        load_checkpoint(current)
    # a damaged current file is never rotated over the good previous one
    with pytest.warns(CheckpointWarning, match="not keeping"):
        save_checkpoint(current, {"step": 9})
    assert inspect_checkpoint(prev)["step"] == 1 and read_checkpoint(current)["step"] == 9
    # killed between the two renames on a filesystem without hard links: only prev is left
    current.unlink()
    with pytest.warns(CheckpointWarning, match="missing"):
        _, summary, _ = fit(tmp_path, steps=2, ckpt_every=1)
    assert summary["resumed_from"] == 1
    for path in (current, prev):
        path.write_bytes(b"\0" * 300)
    with pytest.raises(CheckpointError, match="no usable checkpoint.*checkpoint.pt.*prev.pt"):
        fit(tmp_path, steps=2)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt is empty.*no previous checkpoint"):
        read_checkpoint(tmp_path / "empty.pt")


def test_plain_torch_save_checkpoints_still_load(tmp_path):
    torch.save({"step": 3, "x": torch.ones(2)}, tmp_path / "old.pt")
    assert inspect_checkpoint(tmp_path / "old.pt")["format"] == 0
    assert read_checkpoint(tmp_path / "old.pt")["step"] == 3


# ----------------------------------------------------------------------------- 4. NaN / inf


def _poison(model: VideoMAR, steps: set[int], kind: str = "loss") -> None:
    """Make forward call k (= step k when training from 0) give a NaN loss or NaN gradients."""
    forward, calls = model.forward, []

    class NanGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            return grad * float("nan")

    def poisoned(*args, **kwargs):
        calls.append(1)
        loss = forward(*args, **kwargs)
        if len(calls) - 1 in steps:
            return loss * float("nan") if kind == "loss" else NanGrad.apply(loss)
        return loss

    model.forward = poisoned


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    # Protection: the finiteness check before backward/optimizer.step and no save on the way out.
    model = tiny_model()
    _poison(model, {5})
    with pytest.raises(NonFiniteLossError) as err:
        fit(tmp_path, model=model, steps=8, ckpt_every=2)
    assert "step 5" in str(err.value) and "train.nonfinite=skip" in str(err.value)
    assert str(tmp_path) in str(err.value)
    ckpt = read_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["step"] == 4 and all(torch.isfinite(t).all() for t in ckpt["model"].values())
    assert inspect_checkpoint(tmp_path / "checkpoint.prev.pt")["step"] == 2


@pytest.mark.parametrize("kind", ["loss", "grad"])
def test_skip_mode_drops_bad_steps_up_to_the_limit(tmp_path, kind):
    # Protection: train.nonfinite=skip leaves weights and EMA untouched on a bad step and counts.
    clean, _, _ = fit(tmp_path / "clean", steps=3)
    model = tiny_model()
    _poison(model, {3}, kind)
    with pytest.warns(RuntimeWarning, match="step skipped"):
        _, summary, _ = fit(tmp_path / "skip", model=model, steps=4, nonfinite="skip",
                            max_nonfinite=1)
    assert summary["nonfinite_steps"] == [3] and math.isnan(summary["losses"][3])
    assert math.isfinite(summary["train_loss"])
    assert_close_params(model.state_dict(), clean.state_dict(), atol=0.0)  # step 3 = no-op

    model = tiny_model()
    _poison(model, {1, 2}, kind)
    with pytest.raises(NonFiniteLossError, match=r"2 non-finite steps \[1, 2\] exceed "
                                                 r"train.max_nonfinite=1"):
        with pytest.warns(RuntimeWarning):
            fit(tmp_path / "limit", model=model, steps=4, nonfinite="skip", max_nonfinite=1)


# ----------------------------------------------------------------------------- 3. results table


def _append_rows(table: str, worker: int, n: int, start: float) -> None:
    while time.time() < start:
        time.sleep(0.001)
    for i in range(n):
        results.append_row(table, {"run_id": f"{worker}-{i}", "status": "ok", "worker": worker,
                                   "i": i, "pad": "y" * 5000})


def _die_mid_row(table: str, start: float) -> None:
    """A writer killed with SIGKILL after writing half of its row (holding the lock)."""
    real_write = os.write

    def half_then_die(fd, data):
        real_write(fd, bytes(data[:len(data) // 2]))
        os.kill(os.getpid(), signal.SIGKILL)

    while time.time() < start:
        time.sleep(0.001)
    os.write = half_then_die
    results.append_row(table, {"run_id": "dead", "status": "ok", "pad": "z" * 5000})


def test_eight_writers_and_one_dying_writer_lose_no_rows(tmp_path):
    # Protection: flock + one O_APPEND write per row + "start on a fresh line after a dead
    # writer's partial line" + readers that skip damaged lines.
    table = str(tmp_path / "runs.jsonl")
    ctx = multiprocessing.get_context("fork")  # workers use the stdlib only; no torch import
    start, per_worker = time.time() + 0.5, 25
    procs = [ctx.Process(target=_append_rows, args=(table, w, per_worker, start))
             for w in range(8)]
    procs.append(ctx.Process(target=_die_mid_row, args=(table, start)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() in a threaded process
        for p in procs:
            p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * 8 + [-signal.SIGKILL]
    results.append_row(table, {"run_id": "after", "status": "ok"})  # even if the dead one was last
    rows, damaged = results.scan_rows(table)
    expected = {(w, i) for w in range(8) for i in range(per_worker)} | {(None, None)}
    assert {(r.get("worker"), r.get("i")) for r in rows} == expected
    assert len(rows) == 8 * per_worker + 1 and rows[-1]["run_id"] == "after"
    assert len(damaged) == 1 and damaged[0].text.startswith('{"pad": "zzz')
    expected = rf"skipped 1 damaged line\(s\) \(line {damaged[0].lineno}\)"
    with pytest.warns(UserWarning, match=expected):
        assert len(results.read_rows(table)) == 8 * per_worker + 1
        assert results.find_ok_row(table, "dead") is None


def _compose(overrides):
    from hydra import compose, initialize_config_dir

    from ablations import run as run_app  # noqa: F401  (registers the config schemas)

    with initialize_config_dir(config_dir=str(ROOT / "ablations" / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


TINY_RUN = ["train.steps=3", "train.batch_size=2", "train.ckpt_every=1", "data.height=16",
            "data.width=16", "data.num_frames=3", "curriculum=off",
            "resolution=fixed", "eval.num_clips=2", "eval.num_loss_batches=1",
            "sampler.num_iter=2", "model.num_sampling_steps=3", "model.width=32",
            "model.num_heads=2", "model.depth=1", "model.head_width=32", "threads=1"]


def test_crashed_run_leaves_a_failed_row_with_its_error(tmp_path, monkeypatch):
    # Protection: ablations/run.py writes a failed row in `finally` and re-raises.
    from omegaconf import OmegaConf

    from ablations import run as run_app

    cfg = OmegaConf.to_object(_compose([f"results={tmp_path / 'runs.jsonl'}",
                                        f"out_dir={tmp_path / 'runs'}"] + TINY_RUN))
    forward = VideoMAR.forward
    calls = []

    def nan_at_step_2(self, *args, **kwargs):
        calls.append(1)
        loss = forward(self, *args, **kwargs)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(VideoMAR, "forward", nan_at_step_2)
    with pytest.raises(NonFiniteLossError):
        run_app.run(cfg)
    (row,) = results.read_rows(tmp_path / "runs.jsonl")
    assert row["status"] == "failed" and "NonFiniteLossError" in row["error"]
    assert "step 2" in row["error"] and "NonFiniteLossError" in row["traceback"]
    train_dir = Path(row.get("train_dir", row["out_dir"]))  # the last good checkpoint is kept
    assert read_checkpoint(train_dir / "checkpoint.pt")["step"] == 2


# ----------------------------------------------------------------------------- 5. bad input


def _write_video(path: Path, codec: str, frames: int, fmt: str | None = None) -> None:
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        stream.codec_context.gop_size = 4
        for k in range(frames):
            img = np.full((24, 32, 3), (k * 17) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture
def messy_folder(tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    _write_video(root / "good_a.mp4", "libx264", 12)
    _write_video(root / "good_b.webm", "libvpx", 12)
    _write_video(root / "good_c.mkv", "mpeg4", 12)
    rng = np.random.default_rng(0)
    (root / "corrupt.mp4").write_bytes(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    for name, codec in (("cut.mkv", "mpeg4"), ("cut.mp4", "libx264")):
        _write_video(tmp_path / name, codec, 40)
        data = (tmp_path / name).read_bytes()
        (root / f"truncated_{name}").write_bytes(data[:len(data) // 2])
    (root / "zero.mp4").write_bytes(b"")
    _write_video(root / "too_short.mp4", "libx264", 2)
    mkv = (root / "good_c.mkv").read_bytes()  # same file, codec id no FFmpeg decoder knows
    assert mkv.count(b"V_MPEG4/ISO/ASP") == 1
    (root / "unknown_codec.mkv").write_bytes(mkv.replace(b"V_MPEG4/ISO/ASP", b"V_QQQQQ/ISO/ASP"))
    with av.open(str(root / "audio_only.mp4"), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                           layout="mono")
        frame.sample_rate = 16000
        for i in range(4):
            frame.pts = i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return root


def test_broken_videos_are_skipped_reported_and_training_proceeds(messy_folder, tmp_path):
    # Protection: the folder scan (incl. the tail check that catches truncated mkv files whose
    # header still promises 40 frames) + write_data_report. Without the tail check the truncated
    # mkv is "usable" and decoding it during training raises.
    cfg = DataConfig(source="folder", folder=str(messy_folder), height=16, width=16, num_frames=3,
                     frame_stride=2)
    data = build_dataset(cfg, "train", seed=SEED)
    reasons = {Path(p).name: r for p, r in data.skipped}
    assert sorted(Path(p).name for p in data.files) == ["good_a.mp4", "good_b.webm", "good_c.mkv"]
    assert "cannot open or decode" in reasons["corrupt.mp4"]
    assert reasons["truncated_cut.mkv"].startswith("truncated: the container promises 40 frames")
    assert "cannot open or decode" in reasons["truncated_cut.mp4"]  # its index (moov) is gone
    assert "empty" in reasons["zero.mp4"] and "too short" in reasons["too_short.mp4"]
    assert "unsupported codec" in reasons["unknown_codec.mkv"]
    assert "no video stream" in reasons["audio_only.mp4"]
    report = json.loads(write_data_report(data, tmp_path / "run").read_text())
    assert report["num_used"] == 3 and report["num_skipped"] == 7
    assert {Path(s["path"]).name: s["reason"] for s in report["skipped"]} == reasons
    assert (tmp_path / "run" / "skipped_videos.json").is_file()
    assert write_data_report(build_dataset(DataConfig(num_train=4), "train"), tmp_path) is None
    model, summary, _ = fit(tmp_path / "run", dataset=data, model=tiny_model(), steps=2,
                            batch_size=3)
    assert summary["steps"] == 2 and all(math.isfinite(x) for x in summary["losses"])


def test_folder_without_usable_videos_fails_before_training(messy_folder, tmp_path):
    for good in messy_folder.glob("good_*"):
        good.unlink()
    cfg = DataConfig(source="folder", folder=str(messy_folder), height=16, width=16, num_frames=3)
    with pytest.raises(ValueError, match="no usable video among 7 files"):
        build_dataset(cfg, "train")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="is empty"):
        VideoFolder(DataConfig(source="folder", folder=str(empty)), "train")


@pytest.mark.parametrize("kwargs, message", [
    (dict(model=ModelConfig(attn="full"), sampler=SamplerConfig(use_kv_cache=True)),
     "use_kv_cache=true cannot work with model.attn=full"),
    (dict(model=ModelConfig(num_cond_frames=8), data=DataConfig(num_frames=8)),
     "num_cond_frames=8 must be smaller than data.num_frames=8"),
    (dict(data=DataConfig(height=30, width=32)), "30x32 is not divisible"),
    (dict(sampler=SamplerConfig(num_iter=65)), "num_iter=65 exceeds the 64 tokens"),
    (dict(train=dict(nonfinite="ignore")), "train.nonfinite='ignore'"),
    (dict(train=dict(max_nonfinite=-1)), "max_nonfinite"),
    (dict(train=dict(lr=0.0)), "train.lr=0.0 must be > 0"),
    (dict(data=dict(frame_stride=0)), "frame_stride=0"),
    (dict(eval=dict(num_frames=1)), "eval.num_frames=1 must exceed model.num_cond_frames"),
])
def test_invalid_configs_fail_before_any_work(kwargs, message):
    # Protection: the __post_init__ checks of core/config.py.
    from core.config import EvalConfig

    builders = {"train": TrainConfig, "data": DataConfig, "eval": EvalConfig}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        RunConfig(**{k: builders[k](**v) if isinstance(v, dict) else v
                     for k, v in kwargs.items()})


def test_unknown_config_key_fails_at_compose_time():
    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import ConfigKeyError

    with pytest.raises((ConfigCompositionException, ConfigKeyError), match="nonfinte"):
        _compose(["train.nonfinte=skip"])
    assert _compose(["train.nonfinite=skip"]).train.nonfinite == "skip"


# ----------------------------------------------------------------------------- 6. weights


def test_missing_vae_weights_list_the_files_and_where_to_put_them(tmp_path):
    # Protection: check_pretrained, called before any work (and again by VAETokenizer.load).
    cfg = TokenizerConfig(kind="vae", vae_path=str(tmp_path / "vae"), patch_size=1)
    assert missing_pretrained_files(cfg) == [str(tmp_path / "vae" / "config.json"), str(
        tmp_path / "vae" / ("diffusion_pytorch_model.safetensors or diffusion_pytorch_model.bin "
                            "or diffusion_pytorch_model.safetensors.index.json"))]
    with pytest.raises(FileNotFoundError) as err:
        check_pretrained(cfg)
    assert "does not exist" in str(err.value) and "save_pretrained" in str(err.value)
    assert str(tmp_path / "vae" / "config.json") in str(err.value)
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="lacks diffusion_pytorch_model.safetensors"):
        check_pretrained(cfg)
    assert missing_pretrained_files(TokenizerConfig()) == []
    assert missing_pretrained_files(TokenizerConfig(kind="vae")) == ["tokenizer.vae_path (not set)"]


def test_missing_vbench_weights_list_the_files_and_where_to_get_them(tmp_path):
    # Protection: core/metrics/vbench_backend.check_staged (written with the evaluation issue),
    # run before any video is generated or scored.
    vbench = pytest.importorskip("core.metrics.vbench_backend")
    roots = vbench.Roots(vbench_cache=tmp_path / "vbench", torch_home=tmp_path / "torch",
                         clip_dir=tmp_path / "clip", dreamsim_dir=tmp_path / "models")
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "ViT-L-14.pt").write_bytes(b"")  # what a failed download leaves
    with pytest.raises(vbench.PreflightError) as err:
        vbench.check_staged(["i2v_subject", "aesthetic_quality"], roots)
    message = str(err.value)
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "dino_vitbase16_pretrain.pth") in message
    assert f"empty file {tmp_path / 'clip' / 'ViT-L-14.pt'}" in message
    assert "sa_0_4_vit_l_14_linear.pth" in message and "<- https://" in message


# ----------------------------------------------------------------------------- child processes


def _child(mode: str, out_dir: str, log: str, *rest: str) -> None:
    torch.set_num_threads(1)
    model = tiny_model()
    forward, calls = model.forward, []

    def announce(*args, **kwargs):  # "step N" as step N starts its forward pass
        print(f"step {len(calls)}", flush=True)
        calls.append(1)
        return forward(*args, **kwargs)

    model.forward = announce
    if mode == "kill-mid-save":
        die_at, saves, real_save = int(rest[0]), [], torch.save

        def save_half_then_die(obj, f, *args, **kwargs):
            saves.append(1)
            if len(saves) < die_at:
                return real_save(obj, f, *args, **kwargs)
            import io

            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            f.write(buf.getvalue()[:buf.tell() // 2])
            f.f.flush()  # the half payload reaches the temp file, then the process dies
            os.kill(os.getpid(), signal.SIGKILL)

        ckpt_mod.torch.save = save_half_then_die
    data = RecordingVideos(log=Path(log), delay=CHILD_ITEM_DELAY_S)
    cfg = tiny_cfg(ckpt_every=0) if mode == "preempt" else tiny_cfg()
    if mode == "preempt":
        with PreemptionGuard():
            train(model, data, cfg, seed=SEED, out_dir=out_dir, progress=False)
    else:
        train(model, data, cfg, seed=SEED, out_dir=out_dir, progress=False)


if __name__ == "__main__":
    _child(*sys.argv[1:])
