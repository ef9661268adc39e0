"""A table's sample picture, samples_<table>.png (the README's is samples_attn.png): for a few test
clips, the conditioning frame and the truth, then the rollouts of the lines the table's
table_spec.samples names (line -> row title; attn: causal and full attention), newest commit,
seed 0, frames as columns.

Samples are read from each row's `out_dir` (runs/<run_id>/, relative to the checkout):
`samples.pt` when present (a (B, T, 3, H, W) float tensor in [0, 1], torch.save), else the
`samples.png` contact sheet ablations/run.py writes (a row per clip, a column per frame, 8 bit),
cut into frames with the row's data.height/width. The truth is re-rendered from the test clip
seeds (core/synthetic.py: test clip i has seed 20_000_000 + i), as core/evaluate.py does. Without
saved samples (a fresh clone) nothing is drawn and a committed picture is kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TENSOR_FILE = "samples.pt"
SHEET_FILE = "samples.png"
SEED = 0
NUM_CLIPS = 4
TEST_SEED_START = 20_000_000  # core.synthetic.SPLIT_SEED_START["test"]
GAP = 2  # pixels between frames; 3 * GAP between clips


def run_dir(row: dict, root: Path) -> Path | None:
    out = row.get("out_dir")
    if not out:
        return None
    path = Path(out)
    return path if path.is_absolute() else root / path


def load_videos(row: dict, root: Path) -> np.ndarray | None:
    """The row's saved sample videos as (B, T, H, W, 3) floats in [0, 1], or None."""
    directory = run_dir(row, root)
    if directory is None:
        return None
    tensor, sheet = directory / TENSOR_FILE, directory / SHEET_FILE
    if tensor.is_file():
        import torch

        videos = torch.load(tensor, map_location="cpu", weights_only=True)
        if isinstance(videos, dict):
            videos = videos.get("videos")
        if not isinstance(videos, torch.Tensor) or videos.ndim != 5:
            return None
        return videos.float().clamp(0, 1).permute(0, 1, 3, 4, 2).numpy()
    if sheet.is_file():
        from PIL import Image

        data = (row.get("config") or {}).get("data") or {}
        h, w = int(data.get("height") or 0), int(data.get("width") or 0)
        grid = np.asarray(Image.open(sheet).convert("RGB"), dtype=np.float32) / 255.0
        if not h or not w or grid.shape[0] % h or grid.shape[1] % w:
            return None
        b, t = grid.shape[0] // h, grid.shape[1] // w
        return grid.reshape(b, h, t, w, 3).transpose(0, 2, 1, 3, 4)
    return None


def truth_videos(row: dict, num_clips: int, frames: int, h: int, w: int) -> np.ndarray | None:
    """The true test clips (B, T, H, W, 3) re-rendered from their seeds (built-in data only)."""
    data = (row.get("config") or {}).get("data") or {}
    if data.get("source", "synthetic") != "synthetic":
        return None
    from core.synthetic import render_clip

    clips = [render_clip(TEST_SEED_START + i, h, w, frames, int(data.get("num_sprites", 2)),
                         bool(data.get("camera_pan", True)))[0] for i in range(num_clips)]
    return np.stack([c.clamp(0, 1).permute(0, 2, 3, 1).numpy() for c in clips])


def _variant(row: dict):
    """The row's line: config.variant, else (older rows) the column its `factor` names."""
    return ((row.get("config") or {}).get("variant") or row.get("variant")
            or row.get(row.get("factor") or "variant"))


def pick_rows(rows: list[dict], table: str) -> dict[str, dict]:
    """variant -> the newest ok model row of `table` at seed SEED, all of the newest commit."""
    ok = [r for r in rows if r.get("table") == table and r.get("status") == "ok"
          and r.get("kind") in ("train", "eval") and str(r.get("seed")) == str(SEED)
          and _variant(r)]
    if not ok:
        return {}
    newest = max(ok, key=lambda r: (str(r.get("date") or ""), str(r.get("commit"))))["commit"]
    out: dict = {}
    for r in sorted(ok, key=lambda r: (str(r.get("date") or ""), str(r.get("run_id")))):
        if r.get("commit") == newest:
            out[str(_variant(r))] = r
    return out


def sample_strips(rows: list[dict], root: Path, table: str, arms: dict[str, str],
                  num_clips: int = NUM_CLIPS):
    """([(clip, title, frames (T, H, W, 3))], {variant: row}) of `table`'s lines `arms`
    (variant -> row title, in order), or None without saved samples."""
    arms = list(arms.items())
    chosen = pick_rows(rows, table)
    videos = {}
    for variant, _ in arms:
        if variant not in chosen:
            return None
        v = load_videos(chosen[variant], root)
        if v is None:
            return None
        videos[variant] = v
    first = chosen[arms[0][0]]
    n = min(num_clips, *(v.shape[0] for v in videos.values()))
    t = min(v.shape[1] for v in videos.values())
    h, w = videos[arms[0][0]].shape[2:4]
    truth = truth_videos(first, n, t, h, w)
    strips = []
    for i in range(n):
        if truth is not None:
            strips.append((i, "cond. + truth", truth[i]))
        for variant, title in arms:
            strips.append((i, title, videos[variant][i, :t]))
    return strips, {v: chosen[v] for v, _ in arms}


def draw(strips, runs: dict, path: Path, save, table: str) -> bool:
    """Draw the strips as one image grid (a row per strip, a column per frame); False if none."""
    if not strips:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, h, w = strips[0][2].shape[:3]
    tops, y = [], 0
    for k, (clip, _, _) in enumerate(strips):
        if k and clip != strips[k - 1][0]:
            y += 2 * GAP  # a wider gap between clips
        tops.append(y)
        y += h + GAP
    canvas = np.ones((y - GAP, t * (w + GAP) - GAP, 3), dtype=np.float32)
    for top, (_, _, frames) in zip(tops, strips):
        for j in range(t):
            canvas[top:top + h, j * (w + GAP):j * (w + GAP) + w] = frames[j]
    label_in, width, height = 1.5, 0.3 + 0.55 * t, 0.9 + 0.55 * len(strips)
    fig, ax = plt.subplots(figsize=(label_in + width, height))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_yticks([top + h / 2 for top in tops],
                  [f"clip {clip}: {title}" for clip, title, _ in strips], fontsize=6)
    ax.set_xticks([j * (w + GAP) + w / 2 for j in range(t)],
                  ["cond."] + [str(j) for j in range(1, t)], fontsize=7)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    commits = sorted({str(r.get("commit"))[:7] for r in runs.values()})
    ax.set_title(f"{table}: test clips, seed {SEED}, commit {', '.join(commits)}\nruns "
                 + ", ".join(f"{v} {r.get('run_id')}" for v, r in runs.items()), fontsize=6)
    ax.set_xlabel("generated frame", fontsize=7)
    fig.subplots_adjust(left=label_in / (label_in + width), right=0.98, top=1 - 0.45 / height,
                        bottom=0.5 / height)
    save(fig, path, f"{table} samples: conditioning frame, truth, {' and '.join(runs)} rollouts")
    return True


def write(rows: list[dict], root: Path, path: Path, save, table: str, arms: dict[str, str]) -> bool:
    """Write the picture of `table`'s lines `arms` at `path` when the saved samples exist; False
    (nothing written) if not."""
    found = sample_strips(rows, root, table, arms)
    if not found:
        return False
    strips, runs = found
    return draw(strips, runs, path, save, table)
