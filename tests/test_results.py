"""core/results.py: concurrent appends, damaged lines, NaN handling, run ids, git info."""

import json
import math
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from core import results
from core.results import append_row, find_ok_row, git_info, read_rows, run_id, scan_rows

RESULTS_PY = Path(results.__file__)

# Each worker loads core/results.py by path: it is stdlib-only, and importing the `core` package
# would make 8 processes import torch at once on a 2-core machine. Subprocesses, not fork, so
# that nothing (locks, buffers) is shared except the file.
WORKER = r"""
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("results_under_test", sys.argv[1])
results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(results)
table, worker, n, start = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
while time.time() < start:  # all workers start writing together
    time.sleep(0.001)
for i in range(n):
    # 20 kB rows: far above PIPE_BUF, so unlocked writers would interleave
    results.append_row(table, {"run_id": f"{worker}-{i}", "worker": worker, "i": i,
                               "status": "ok", "pad": "x" * 20000, "val": float("nan")})
"""


def test_concurrent_appends_lose_nothing(tmp_path):
    table = tmp_path / "deep" / "dir" / "runs.jsonl"  # parent dirs are created on demand
    num_workers, per_worker = 8, 40
    start = time.time() + 1.0
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(RESULTS_PY), str(table), str(w),
                               str(per_worker), str(start)]) for w in range(num_workers)]
    assert [p.wait(timeout=120) for p in procs] == [0] * num_workers

    lines = table.read_bytes().split(b"\n")
    assert lines[-1] == b"", "the file must end with a newline"
    parsed = [json.loads(line) for line in lines[:-1]]  # raises on any malformed line
    assert len(parsed) == num_workers * per_worker
    assert {(r["worker"], r["i"]) for r in parsed} == {
        (w, i) for w in range(num_workers) for i in range(per_worker)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read_rows(table)) == num_workers * per_worker


def test_damaged_lines_are_skipped_and_reported(tmp_path):
    table = tmp_path / "runs.jsonl"
    append_row(table, {"run_id": "a", "status": "ok"})
    with open(table, "ab") as f:
        f.write(b"[1, 2]\n")  # valid JSON, but not a row
        f.write(b"\xff\xfe not json\n")
        f.write(b'{"run_id": "b", "sta')  # a writer that died mid-line: no newline
    append_row(table, {"run_id": "c", "status": "ok"})  # must start on a fresh line

    rows, damaged = scan_rows(table)
    assert [r["run_id"] for r in rows] == ["a", "c"]
    assert [d.lineno for d in damaged] == [2, 3, 4]
    assert all(d.path == str(table) for d in damaged)

    expected = r"runs\.jsonl: skipped 3 damaged line\(s\) \(line 2, 3, 4\)"
    with pytest.warns(UserWarning, match=expected):
        assert [r["run_id"] for r in read_rows(table)] == ["a", "c"]
    with pytest.raises(ValueError, match="line 2, 3, 4"):
        read_rows(table, on_damaged="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read_rows(table, on_damaged="ignore")) == 2


def test_missing_table_is_empty(tmp_path):
    assert read_rows(tmp_path / "nope.jsonl") == []
    assert find_ok_row(tmp_path / "nope.jsonl", "x") is None


def test_nonfinite_metrics_become_null_and_are_listed(tmp_path):
    np = pytest.importorskip("numpy")
    table = tmp_path / "runs.jsonl"
    written = append_row(table, {"run_id": "r", "metrics": {
        "val_loss": float("nan"), "mse_per_frame": [0.5, float("inf")], "psnr_first": -math.inf,
        "np_nan": np.float32("nan"), "ok": 1.5, "np_ok": np.float64(2.0)}})

    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name} written")

    line = table.read_text().strip()
    row = json.loads(line, parse_constant=no_constants)  # strict JSON: no NaN/Infinity tokens
    assert row == written
    assert row["metrics"] == {"val_loss": None, "mse_per_frame": [0.5, None], "psnr_first": None,
                              "np_nan": None, "ok": 1.5, "np_ok": 2.0}
    assert row["nonfinite"] == ["metrics.mse_per_frame[1]", "metrics.np_nan",
                                "metrics.psnr_first", "metrics.val_loss"]
    clean = append_row(table, {"run_id": "s", "metrics": {"val_loss": 1.0}})
    assert "nonfinite" not in clean


def test_run_id_is_canonical():
    config = {"model": {"attn": "causal", "width": 96}, "seed": 0, "results": "a.jsonl",
              "out_dir": "runs", "force": False, "threads": 0}
    reordered = {"threads": 0, "seed": 0, "model": {"width": 96, "attn": "causal"},
                 "force": False, "out_dir": "runs", "results": "a.jsonl"}
    rid = run_id(config, "abc")
    assert len(rid) == 12 and int(rid, 16) >= 0
    assert run_id(reordered, "abc") == rid
    # I/O keys do not change what is computed
    io_changed = {**config, "results": "b.jsonl", "out_dir": "elsewhere", "force": True,
                  "threads": 1}
    assert run_id(io_changed, "abc") == rid
    # config values and the code version do
    assert run_id({**config, "model": {"attn": "full", "width": 96}}, "abc") != rid
    assert run_id({**config, "seed": 1}, "abc") != rid
    assert run_id(config, "abd") != rid


def test_find_ok_row_ignores_failed_rows(tmp_path):
    table = tmp_path / "runs.jsonl"
    append_row(table, {"run_id": "a", "status": "failed", "error": "boom"})
    append_row(table, {"run_id": "b", "status": "ok", "n": 1})
    append_row(table, {"run_id": "a", "status": "failed", "error": "boom again"})
    append_row(table, {"run_id": "b", "status": "ok", "n": 2})  # a forced rerun: the last wins
    assert find_ok_row(table, "a") is None
    assert find_ok_row(table, "b")["n"] == 2
    assert find_ok_row(table, "c") is None


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                   check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_info(tmp_path, monkeypatch):
    assert git_info(tmp_path) == {"commit": "unknown", "dirty": True, "code": "unknown"}
    _git(tmp_path, "init", "-q")
    assert git_info(tmp_path)["commit"] == "unknown"  # no commit yet
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "paper_tables").mkdir()
    (tmp_path / "paper_tables" / "runs.jsonl").write_text("")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "init")
    info = git_info(tmp_path)
    assert len(info["commit"]) == 40 and info["dirty"] is False and info["code"] == info["commit"]

    # appending results does not make the code dirty; editing code does, and changes `code`
    append_row(tmp_path / "paper_tables" / "runs.jsonl", {"run_id": "x"})
    assert git_info(tmp_path)["dirty"] is False
    (tmp_path / "a.py").write_text("x = 2\n")
    dirty = git_info(tmp_path)
    assert dirty["dirty"] is True and dirty["code"].startswith(info["commit"] + "+dirty.")
    (tmp_path / "a.py").write_text("x = 3\n")
    assert git_info(tmp_path)["code"] != dirty["code"]

    monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))
    assert git_info(tmp_path)["commit"] == "unknown"


def test_make_row_fills_the_schema():
    config = {"model": {"attn": "full"}, "seed": 3, "preset": "tiny", "ablation": "attn",
              "table": "attn", "results": "x.jsonl"}
    git = {"commit": "c" * 40, "dirty": False, "code": "c" * 40}
    row = results.make_row(config, kind="train", status="ok", metrics={"val_loss": 1.0},
                           wall_time_s=2.0, factor="attn", git=git)
    assert row["run_id"] == run_id(config, git["code"])
    assert (row["attn"], row["seed"], row["table"], row["factor"]) == ("full", 3, "attn", "attn")
    assert row["commit"] == "c" * 40 and row["torch"] == row["hardware"]["torch"]
    assert row["date"].endswith("+00:00")
    json.dumps(row, allow_nan=False)
    with pytest.raises(ValueError, match="status"):
        results.make_row(config, kind="train", status="running", git=git)


def test_rows_store_paths_inside_the_checkout_relative_to_it(tmp_path):
    from core.results import REPO_ROOT, make_row, run_id

    config = {"seed": 0, "results": str(REPO_ROOT / "paper_tables" / "runs.jsonl"),
              "out_dir": str(REPO_ROOT / "runs"), "model": {"attn": "causal"}}
    git = {"commit": "c" * 40, "dirty": False, "code": "c" * 40}
    row = make_row(config, kind="train", status="ok", git=git,
                   out_dir=str(REPO_ROOT / "runs" / "abc"), train_dir=str(tmp_path / "t"))
    assert row["config"]["results"] == "paper_tables/runs.jsonl"
    assert row["config"]["out_dir"] == "runs" and row["out_dir"] == "runs/abc"
    assert row["train_dir"] == str(tmp_path / "t")  # outside the checkout: kept as given
    assert config["out_dir"] == str(REPO_ROOT / "runs")  # the caller's dict is not changed
    assert row["run_id"] == run_id(config, git["code"])  # I/O keys never enter the id
