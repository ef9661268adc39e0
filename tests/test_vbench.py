"""VBench-I2V aggregation against the published VBench++ rows, the score CLI, and the official
backend's preflight / layout / evaluation path with a fake vbench package (vbench is CUDA-only)."""

import csv
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from core.metrics import aggregate as agg
from core.metrics import vbench_backend as vb

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "paper_tables" / "reference" / "vbench_i2v.csv"
# Quality / I2V / Total of VBench++ (arXiv 2411.13503 v1) Table 3 rows, computed with VBench's
# scripts/cal_i2v_final_score.py; Quality equals the leaderboard's column (vbench.md 2.5, 6.1).
EXPECTED = {
    "DynamiCrafter-1024": (80.50, 92.54, 86.52), "SEINE-512x320": (77.37, 89.62, 83.49),
    "I2VGen-XL": (79.21, 91.11, 85.16), "Animate-Anything": (78.71, 93.01, 85.86),
    "ConsistI2V": (76.22, 90.38, 83.30), "VideoCrafter-I2V": (78.84, 85.68, 82.26),
    "SVD-XT-1.1": (79.40, None, None),
}


def _reference_rows():
    with open(REFERENCE, newline="") as f:
        return {r["model"]: {k: float(r[k]) for k in agg.DIMENSION_KEYS if r[k]}
                for r in csv.DictReader(f)}


@pytest.mark.parametrize("model", sorted(EXPECTED))
def test_aggregation_reproduces_vbench_pp_table3(model):
    values = _reference_rows()[model]
    scores = agg.partial_scores(values)
    for key, expected in zip(("quality", "i2v", "total"), EXPECTED[model]):
        if expected is None:
            assert scores[key] is None
        else:
            assert round(scores[key], 2) == pytest.approx(expected, abs=1e-9), key


def test_total_is_refused_when_a_dimension_is_missing():
    values = _reference_rows()["SVD-XT-1.1"]  # no camera motion
    with pytest.raises(agg.MissingDimensionError, match="camera_motion") as e:
        agg.aggregate(values)
    assert e.value.missing == ["camera_motion"]
    fractions = {k: v / 100 for k, v in _reference_rows()["ConsistI2V"].items()}
    assert agg.aggregate(fractions, unit="fraction")["total"] == pytest.approx(
        agg.aggregate(_reference_rows()["ConsistI2V"])["total"])


def test_bad_values_are_named():
    full = _reference_rows()["ConsistI2V"]
    with pytest.raises(ValueError, match="unknown VBench-I2V dimension key.*i2v_subjet"):
        agg.aggregate({**full, "i2v_subjet": 90.0})
    with pytest.raises(ValueError, match="motion_smoothness=150"):
        agg.aggregate({**full, "motion_smoothness": 150})
    with pytest.raises(ValueError, match="look like fractions"):
        agg.aggregate({k: v / 10000 for k, v in full.items()})
    assert agg.aggregate({**full, "temporal_flickering": 97.0}) == agg.aggregate(full)


def _run_cli(*args):
    return subprocess.run([sys.executable, "bench/vbench_i2v.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_score_cli(tmp_path):
    values = _reference_rows()["DynamiCrafter-1024"]
    path = tmp_path / "dims.json"
    path.write_text(json.dumps(values))
    proc = _run_cli("score", str(path))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (round(result["quality"], 2), round(result["i2v"], 2), round(result["total"], 2)) == \
        EXPECTED["DynamiCrafter-1024"]
    # VBench's own eval_results.json: {dim: [aggregate fraction, per-video list]}
    raw = {k: [v / 100, [{"video_path": "x.mp4", "video_results": v / 100}]] for k, v in values.items()}
    path.write_text(json.dumps(raw))
    result = json.loads(_run_cli("score", str(path)).stdout.strip().splitlines()[-1])
    assert round(result["total"], 2) == EXPECTED["DynamiCrafter-1024"][2]
    del values["imaging_quality"]
    path.write_text(json.dumps(values))
    proc = _run_cli("score", str(path))
    assert proc.returncode == 2 and "missing dimension(s) imaging_quality" in proc.stderr
    result = json.loads(_run_cli("score", str(path), "--partial").stdout.strip().splitlines()[-1])
    assert result["total"] is None and result["quality"] is None and result["i2v"] is not None


def test_preflight_lists_every_missing_file_with_its_source(tmp_path):
    roots = vb.Roots.from_env(cwd=tmp_path, env={"HOME": str(tmp_path / "home")})
    problems = vb.preflight(vb.I2V_DIMENSIONS, roots)
    expected = vb.required_artefacts(vb.I2V_DIMENSIONS, roots)
    assert len(problems) == len(expected) >= 15  # every dimension but temporal_flickering
    text = "\n".join(problems)
    for needle in ("amt-s.pth", "raft-things.pth", "musiq_spaq_ckpt-358bb6af.pth",
                   "sa_0_4_vit_l_14_linear.pth", "ViT-B-32.pt", "cotracker2.pth",
                   "dino_vitbase16_pretrain.pth", "ensemble_lora", "https://"):
        assert needle in text
    assert vb.preflight(["temporal_flickering"], roots) == []
    with pytest.raises(ValueError, match="unknown VBench-I2V dimension"):
        vb.preflight(["aesthetics"], roots)


def _stage(roots, dimensions, empty=()):
    for a in vb.required_artefacts(dimensions, roots):
        if a.directory:
            a.path.mkdir(parents=True, exist_ok=True)
        else:
            a.path.parent.mkdir(parents=True, exist_ok=True)
            a.path.write_bytes(b"" if a.path.name in empty else b"weights")


def test_preflight_catches_empty_and_corrupt_files(tmp_path):
    roots = vb.Roots.from_env(cwd=tmp_path, env={"HOME": str(tmp_path)})
    _stage(roots, ["aesthetic_quality"], empty={"sa_0_4_vit_l_14_linear.pth"})
    problems = vb.preflight(["aesthetic_quality"], roots)
    assert len(problems) == 1 and "empty file" in problems[0]
    _stage(roots, ["aesthetic_quality"])
    assert vb.preflight(["aesthetic_quality"], roots) == []
    corrupt = vb.preflight(["aesthetic_quality"], roots, verify_hashes=True)
    assert len(corrupt) == 1 and "ViT-L-14.pt" in corrupt[0] and "sha256" in corrupt[0]


def test_video_names_follow_vbench_layout(tmp_path):
    assert vb.video_names(["a cat", "a dog", "a cat"]) == ["a cat-0.mp4", "a dog-0.mp4",
                                                           "a cat-1.mp4"]
    with pytest.raises(ValueError, match="without '/'"):
        vb.video_names(["left/right"])
    videos = torch.rand(2, 4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    paths = vb.write_videos(videos, ["red square, camera pans left"] * 2, tmp_path)
    assert [p.name for p in paths] == ["red square, camera pans left-0.mp4",
                                       "red square, camera pans left-1.mp4"]
    from bench.metrics import read_video
    frames, _ = read_video(paths[1])
    assert frames.shape == (4, 16, 16, 3)


def _fake_vbench(monkeypatch, calls, values):
    class FakeVBenchI2V:
        def __init__(self, device, full_info, output):
            calls.append(("init", device, full_info))
            self.output = Path(output)

        def evaluate(self, videos_path, name, dimension_list, **kwargs):
            calls.append(("evaluate", videos_path, name, tuple(dimension_list), kwargs))
            results = {d: [values[d] / 100, []] for d in dimension_list}
            (self.output / f"{name}_eval_results.json").write_text(json.dumps(results))

    module = types.ModuleType("vbench2_beta_i2v")
    module.VBenchI2V = FakeVBenchI2V
    monkeypatch.setitem(sys.modules, "vbench2_beta_i2v", module)


def test_evaluate_runs_preflight_first_then_aggregates(tmp_path, monkeypatch):
    calls, values = [], _reference_rows()["ConsistI2V"]
    _fake_vbench(monkeypatch, calls, values)
    roots = vb.Roots.from_env(cwd=tmp_path, env={"HOME": str(tmp_path)})
    monkeypatch.setenv("VBENCH_CACHE_DIR", "unchanged")  # evaluate_i2v sets both; restored after
    monkeypatch.setenv("TORCH_HOME", "unchanged")
    with pytest.raises(vb.PreflightError, match="raft-things.pth"):
        vb.evaluate_i2v(tmp_path, "run", tmp_path / "out", full_info_json="info.json", roots=roots)
    assert calls == []  # nothing ran before the weights were checked
    _stage(roots, agg.DIMENSION_KEYS)
    result = vb.evaluate_i2v(tmp_path, "run", tmp_path / "out", full_info_json="info.json",
                             custom_image_folder=tmp_path / "images", roots=roots)
    assert calls[1][4]["mode"] == "custom_input"
    assert round(result["total"], 2) == EXPECTED["ConsistI2V"][2]
    assert result["dimensions"] == pytest.approx(values)


def test_missing_vbench_gives_install_instructions(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vbench2_beta_i2v", None)  # import fails
    roots = vb.Roots.from_env(cwd=tmp_path, env={"HOME": str(tmp_path)})
    with pytest.raises(ImportError, match=vb.VBENCH_COMMIT):
        vb.evaluate_i2v(tmp_path, "run", tmp_path / "out", dimensions=["temporal_flickering"],
                        full_info_json="info.json", roots=roots)
