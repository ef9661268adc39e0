"""Shared plumbing of the bench scripts: threads, timing, machine peak, table printing, result rows.

Every bench script prints a readable table, then ONE JSON object as its last stdout line, and
appends one kind="bench" row to the results table through core.results (never by hand).
Timings on a shared machine are noisy: scripts record the load average and the process's
CPU/wall ratio next to their numbers and compare variants within one process.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]

import torch  # noqa: E402

from core.results import append_row, make_row  # noqa: E402

DEFAULT_RESULTS = "paper_tables/runs.jsonl"


def base_parser(description: str) -> argparse.ArgumentParser:
    """An ArgumentParser with the options every bench script shares."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--results", default=DEFAULT_RESULTS,
                   help="results table to append the bench row to (default: %(default)s)")
    p.add_argument("--no-results", action="store_true", help="do not append a row")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: stable ratios on a shared machine; "
                        "0 = torch's default)")
    p.add_argument("--seed", type=int, default=0)
    return p


def setup_threads(threads: int) -> int:
    """Set torch's intra-op threads (0 keeps torch's default) and return the count in use."""
    if threads < 0:
        raise SystemExit(f"--threads={threads} must be >= 0")
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


class CpuMeter:
    """Wall time, process CPU time and load average over a `with` block."""

    def __enter__(self) -> "CpuMeter":
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0

    def info(self) -> dict:
        load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
        return {"wall_s": round(self.wall, 3), "cpu_over_wall": round(self.cpu / self.wall, 3)
                if self.wall > 0 else None, "loadavg_1m": round(load[0], 2)}


def time_call(fn: Callable[[], Any], *, repeats: int = 5, min_time_s: float = 0.2,
              warmup: int = 1) -> dict:
    """Median and best seconds per call over `repeats` trials of >= min_time_s each."""
    for _ in range(warmup):
        fn()
    trials = []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min_time_s:
                break
        trials.append(elapsed / n)
    return {"median_s": statistics.median(trials), "best_s": min(trials), "trials": len(trials)}


def matmul_peak_gflops(size: int = 1024, dtype: torch.dtype = torch.float32, device="cpu",
                       repeats: int = 5, min_time_s: float = 0.3) -> dict:
    """This machine's matmul rate (GFLOP/s, 2*n^3 per product) at the current thread count.

    Returns best and median over trials; MFU uses the best (the attainable peak).
    """
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, generator=gen, device=device, dtype=dtype)
    b = torch.randn(size, size, generator=gen, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)

    def run():
        torch.mm(a, b)
        sync()

    t = time_call(run, repeats=repeats, min_time_s=min_time_s)
    flops = 2.0 * size**3
    return {"best_gflops": flops / t["best_s"] / 1e9, "median_gflops": flops / t["median_s"] / 1e9,
            "size": size, "dtype": str(dtype).replace("torch.", "")}


def peak_memory_mb(device="cpu") -> float | None:
    """Peak memory in MiB: CUDA max allocated, else this process's max resident set size."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    except (ImportError, OSError):
        return None


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], floatfmt: str = ".3g") -> str:
    """A GitHub-markdown table; floats formatted with `floatfmt`."""
    def cell(v):
        if isinstance(v, float):
            return "nan" if math.isnan(v) else format(v, floatfmt)
        return str(v)
    body = [[cell(v) for v in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in body)) if body else len(str(h))
              for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [line([str(h) for h in headers]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in body]
    return "\n".join(out)


def bench_config(name: str, args: argparse.Namespace, model_cfg=None, variant: str | None = None,
                 **extra: Any) -> dict:
    """The resolved config stored with a bench row (FLAT_KEYS find ablation/table/preset/seed).

    `variant` labels the row's line in `make tables` (default: the preset).
    """
    options = {k: v for k, v in vars(args).items() if k not in ("results", "no_results")}
    config = {"ablation": "bench", "table": name, "bench": name, "preset": options.get("preset"),
              "variant": variant or str(options.get("preset")), "seed": options.get("seed", 0),
              "args": options, **extra}
    if model_cfg is not None:
        config["model"] = dataclasses.asdict(model_cfg)
    return config


def finish(name: str, args: argparse.Namespace, config: dict, metrics: dict, wall_time_s: float,
           table: str, headline: Sequence[str] = ()) -> dict:
    """Print the table, append the bench row (unless --no-results), print the JSON last line.

    `headline`: the metrics paper_tables/<name>.md shows (the row's "columns"); `make tables`
    writes every metric to paper_tables/<name>.csv.
    """
    print(table)
    if not args.no_results:
        row = make_row(config, kind="bench", status="ok", metrics=metrics,
                       wall_time_s=round(wall_time_s, 3), factor="bench",
                       **({"columns": list(headline)} if headline else {}))
        append_row(args.results, row)
        print(f"appended a kind=bench row (table={name}) to {args.results}", file=sys.stderr)
    sys.stdout.flush()
    print(json.dumps({"bench": name, **metrics}, sort_keys=True, default=_plain))
    return metrics


def _plain(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
