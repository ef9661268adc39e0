"""bench/gpu_check.py on a machine without CUDA: a clean skip, and its CPU-testable pieces.

The CUDA figures themselves (MFU, cached == recomputed sampling, DDP memory, head syncs) need a
GPU: `make gpu-check` there.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_the_script_prints_one_skip_line_and_exits_0(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")  # no GPU, even on one
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [line] = proc.stdout.strip().splitlines()
    report = json.loads(line)
    assert report["gpu_check"] == "skipped: no CUDA device"
    assert report["torch"] == torch.__version__


def test_bad_arguments_name_the_problem(capsys):
    check = _module()
    with pytest.raises(SystemExit):
        check.main(["--frames", "1"])
    assert "--frames=1 must be at least 2" in capsys.readouterr().err


def test_sync_events_are_counted_by_name():
    check = _module()
    names = ["aten::item", "Memcpy DtoH (Device -> Pageable)", "Memcpy HtoD (Pageable -> Device)",
             "cudaMemcpyAsync", "cudaStreamSynchronize", "Memcpy DtoH (Device -> Pinned)",
             "cudaDeviceSynchronize", "aten::_local_scalar_dense"]
    assert check.count_sync_events(names) == {"dtoh_copies": 2, "host_syncs": 2}
    assert check.count_sync_events([]) == {"dtoh_copies": 0, "host_syncs": 0}


def test_profiled_cpu_work_has_no_device_copies():
    check = _module()
    x = torch.arange(6.0)
    result, counts = check.profile_syncs(lambda: (x * 2).sum().item())
    assert result == 30.0
    assert counts == {"dtoh_copies": 0, "host_syncs": 0}


def test_peak_is_looked_up_by_device_name():
    check = _module()
    assert check.peak_bf16_tflops("NVIDIA H200") == 989.0
    assert check.peak_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert check.peak_bf16_tflops("Tesla T4") is None  # unknown: MFU left out, pass --peak-tflops
