"""Behaviour pinned bit for bit: refactors must not change what the harness computes.

Each case trains a configuration of the default run for a few steps with fixed seeds, samples
from it, and compares the per-step training losses, a digest of the sampled tokens and the
results row's metrics with values recorded in tests/pinned_behaviour.json. Cases: the default
run (`python ablations/run.py`, the training recipe), the full-attention and temporal-window
patterns, classifier-free guidance, and the SUN head (distilled, then sampled with 4 steps).

A change that is meant to alter behaviour (a new recipe, a sampler fix) re-records the values
with `python tests/test_pinned_behaviour.py --record` in the same commit and says so; a
refactor must pass unchanged. The comparison is exact when the CPU capability and torch version
match the recording (other SIMD kernels round differently); otherwise it allows 1e-5 relative.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "ablations" / "conf"
PINNED = Path(__file__).with_name("pinned_behaviour.json")

from ablations import run as run_app  # noqa: E402
from core.data import build_dataset  # noqa: E402
from core.model import VideoMAR  # noqa: E402
from core.sampler import sample_video  # noqa: E402
from core.train import train  # noqa: E402

QUICK = ["train.steps=3", "train.val_every=0", "eval.num_clips=2", "eval.num_loss_batches=1",
         "threads=1"]
SUN_QUICK = ["head_distill.steps=3", "head_distill.num_clips=2", "head_distill.pool_size=64",
             "head_distill.teacher_sampling_steps=3", "head_distill.batch_cfg=16",
             "head_distill.batch_msc=8", "head_distill.teacher_steps=8"]
CASES = {
    "default": [],
    "full": ["attn=full"],
    "window": ["model.temporal_window=1"],
    "cfg": ["sampler.cfg_scale=3.0"],
    "sun_head": ["ablation=sun_head", "head=sun4", *SUN_QUICK],
}
ROW_METRICS = ("train_loss", "val_loss", "mse_mean", "mse_per_frame", "psnr_first",
               "dist_energy", "syn_subject_consistency", "syn_dynamic_degree", "train_flops")


def _config(overrides: list[str], tmp: Path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            *overrides, *QUICK, f"results={tmp / 'runs.jsonl'}", f"out_dir={tmp / 'runs'}"])
    return OmegaConf.to_object(cfg)


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()[:16]


def measure(name: str, tmp: Path) -> dict:
    """Losses and sampled-token digest of the direct API, and the metrics of the harness's run."""
    torch.set_num_threads(1)
    cfg = _config(CASES[name], tmp)
    out = {}
    if name != "sun_head":  # the model API: train a few steps, then sample one clip
        model = VideoMAR(cfg.model, seed=cfg.seed)
        summary = train(model, build_dataset(cfg.data, "train", seed=cfg.seed), cfg.train,
                        seed=cfg.seed, out_dir=None, device="cpu", progress=False)
        clip = build_dataset(cfg.data, "test", seed=cfg.seed)[0]["video"][None]
        with torch.no_grad():
            video = sample_video(model, clip[:, 0], cfg.data.num_frames,
                                 generator=torch.Generator().manual_seed(7),
                                 num_iter=cfg.sampler.num_iter, cfg_scale=cfg.sampler.cfg_scale,
                                 temperature=cfg.sampler.temperature,
                                 captions=[build_dataset(cfg.data, "test")[0]["caption"]])
        out["losses"] = [float(x) for x in summary["losses"]]
        out["tokens"] = _digest(model.tokenizer.encode(video))
        out["video_sum"] = float(video.double().sum())
    row = run_app.run(cfg)  # the harness: train, distil (SUN), sample, score, write the row
    assert row["status"] == "ok", row.get("error")
    out["row"] = {k: row["metrics"][k] for k in ROW_METRICS if k in row["metrics"]}
    return out


def _environment() -> dict:
    return {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability()}


def _same(a, b, exact: bool) -> bool:
    if isinstance(a, dict):  # a row: the same keys, each value compared by these rules
        return (isinstance(b, dict) and a.keys() == b.keys()
                and all(_same(a[k], b[k], exact) for k in a))
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y, exact) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b if exact else math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-9)
    return a == b


@pytest.mark.parametrize("name", list(CASES))
def test_behaviour_matches_the_recording(name, tmp_path):
    pinned = json.loads(PINNED.read_text())
    exact = pinned["environment"] == _environment()
    got, want = measure(name, tmp_path), pinned["cases"][name]
    for key in ("losses", "video_sum", "row"):
        if key in want:
            assert _same(got[key], want[key], exact), (
                f"{name}: {key} changed (exact={exact}):\n got  {got[key]}\n want {want[key]}")
    if exact and "tokens" in want:
        assert got["tokens"] == want["tokens"], f"{name}: sampled tokens changed"


def test_rows_compare_within_tolerance_off_the_recording_machine():
    row = {"mse_mean": 0.25, "mse_per_frame": [0.2, 0.3], "variant": "causal"}
    close = {"mse_mean": 0.25 * (1 + 1e-8), "mse_per_frame": [0.2, 0.3], "variant": "causal"}
    assert _same(row, close, exact=False) and not _same(row, close, exact=True)
    assert not _same(row, {**row, "mse_mean": 0.2501}, exact=False)  # a real change
    assert not _same(row, {**row, "variant": "full"}, exact=False)
    assert not _same(row, {k: v for k, v in row.items() if k != "variant"}, exact=False)


if __name__ == "__main__":
    if "--record" not in sys.argv:
        raise SystemExit("usage: python tests/test_pinned_behaviour.py --record")
    import tempfile

    cases = {}
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            cases[case] = measure(case, Path(tmp))
            print(case, json.dumps(cases[case])[:200])
    PINNED.write_text(json.dumps({"environment": _environment(), "cases": cases}, indent=1) + "\n")
    print(f"wrote {PINNED}")
