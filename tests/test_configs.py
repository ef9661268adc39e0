"""The Hydra edge: every config composes against the dataclass schemas and runs one tiny step."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from core.config import ConfigError, RunConfig

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "ablations" / "conf"
from ablations import run as run_app  # noqa: E402  (registers the schemas)

# Small enough to train, sample and score in a few seconds.
TINY_RUN = ["train.steps=2", "train.batch_size=2", "train.ckpt_every=0", "data.height=16",
            "data.width=16", "data.num_frames=3", "curriculum=off",
            "resolution=fixed", "eval.num_clips=2", "eval.num_loss_batches=1",
            "sampler.num_iter=2", "model.num_sampling_steps=3", "model.width=32",
            "model.num_heads=2", "model.depth=1", "model.head_width=32"]


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("attn", _options("attn"))
def test_every_config_composes_and_runs_one_step(attn, tmp_path):
    cfg = _compose([f"attn={attn}", f"results={tmp_path / 'runs.jsonl'}",
                    f"out_dir={tmp_path / 'runs'}"] + TINY_RUN)
    run_cfg = OmegaConf.to_object(cfg)
    assert isinstance(run_cfg, RunConfig) and run_cfg.model.attn == attn
    row = run_app.run(run_cfg)
    assert row["status"] == "ok" and row["attn"] == attn and row["table"] == "attn"
    for key in ("val_loss", "mse_mean", "psnr_first", "train_loss"):
        assert isinstance(row["metrics"][key], float)
    stored = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in stored] == ["train", "baseline"]  # the copy baseline beside it
    stored = stored[:1]
    assert [r["run_id"] for r in stored] == [row["run_id"]]
    assert stored[0]["config"]["model"]["attn"] == attn and stored[0]["commit"]
    # idempotent: the same config and commit is skipped, force reruns
    again = run_app.run(run_cfg)
    assert again["run_id"] == row["run_id"]
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("preset", ["tiny", "small", "base", "paper"])
def test_presets_compose(preset):
    # the paper preset's 16x VAE stride needs paper-sized frames (480 x 768 -> 30 x 48 tokens),
    # and resolution stages of that size (the default 16 -> 32 stages are the sprites data's)
    data = (["data.height=480", "data.width=768", "train.res_stages=[240,480]"]
            if preset == "paper" else [])
    cfg = OmegaConf.to_object(_compose([f"preset={preset}"] + data))
    assert cfg.preset == preset and cfg.model.width > 0


def test_mistyped_key_fails_at_compose_time():
    with pytest.raises((ConfigCompositionException, ConfigKeyError)):
        _compose(["model.widht=64"])
    with pytest.raises((ConfigCompositionException, ValidationError)):
        _compose(["train.steps=many"])


@pytest.mark.parametrize("overrides, message", [
    (["data.height=30"], "divisible"),
    (["model.num_cond_frames=8"], "num_cond_frames"),
    (["sampler.num_iter=65"], "num_iter"),
    (["attn=full", "sampler.use_kv_cache=true"], "use_kv_cache"),
    (["model.attn=sideways"], "attn"),
])
def test_invalid_combinations_fail_before_any_work(overrides, message):
    cfg = _compose(overrides)
    with pytest.raises(Exception) as info:
        OmegaConf.to_object(cfg)
    assert isinstance(info.value, ConfigError) or isinstance(info.value.__cause__, ConfigError) \
        or message in str(info.value)
    assert message in str(info.value)


def test_crashed_run_writes_failed_row(tmp_path, monkeypatch):
    cfg = OmegaConf.to_object(_compose([f"results={tmp_path / 'runs.jsonl'}",
                                        f"out_dir={tmp_path / 'runs'}"] + TINY_RUN))

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(run_app, "train", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_app.run(cfg)
    rows = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert rows[0]["status"] == "failed" and "disk on fire" in rows[0]["error"]


@pytest.mark.slow
def test_multirun_cli_prints_comparison(tmp_path):
    cmd = [sys.executable, str(ROOT / "ablations" / "run.py"), "-m", "attn=causal,full",
           f"results={tmp_path / 'runs.jsonl'}", f"out_dir={tmp_path / 'runs'}",
           f"hydra.sweep.dir={tmp_path / 'sweep'}"] + TINY_RUN
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[summary] 2 ok / 0 failed" in out.stdout
    assert "causal" in out.stdout and "full" in out.stdout
