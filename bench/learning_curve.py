"""Learning curve of one training recipe: sample-quality metrics against steps and FLOPs.

    python bench/learning_curve.py NAME [section.key=value ...] [misc.steps=[250,500,1000]]
                                   [misc.temps=[0.6]] [misc.seed=0] [misc.out=paper_tables]
                                   [misc.clips=32] [misc.runs=runs/learning_curve]

Trains the tiny model (with `bench/recipe_search.py`'s overrides) up to each milestone in turn,
resuming its own checkpoint in runs/learning_curve/NAME/ (misc.runs), and scores the EMA
weights on the first 32 (misc.clips) test clips at every milestone and temperature, beside the
copy baseline scored by the same code. Resumable and idempotent: milestones already in
learning_curve_NAME.jsonl are skipped, an interrupted run continues from its last checkpoint;
rerunning NAME with other model/train/sampler overrides is refused (its checkpoint would not
continue the same run). Writes <out>/learning_curve_NAME.jsonl (one line per
milestone and temperature), <out>/learning_curve_NAME.png and, once, the samples of the last
milestone at the first temperature, <out>/learning_curve_NAME_samples.png (per test clip: the
generated frames over the true ones, frames as columns). One thread.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from bench.recipe_search import SHOWN, parse
from core.config import DataConfig, ModelConfig, SamplerConfig, TrainConfig
from core.data import build_dataset
from core.evaluate import score_baseline, score_samples
from core.model import VideoMAR
from core.train import EMA, train

PLOTTED = ("psnr_first", "syn_subject_consistency", "syn_dynamic_degree", "mse_mean",
           "dist_energy")


def plot(rows: list[dict], baseline: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PLOTTED), figsize=(3.2 * len(PLOTTED), 3.0))
    for ax, key in zip(axes, PLOTTED):
        for temp in sorted({r["temperature"] for r in rows}):
            pts = sorted((r["step"], r[key]) for r in rows if r["temperature"] == temp)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"τ = {temp:g}")
        if key in baseline:
            ax.axhline(baseline[key], color="grey", linestyle="--", label="copy (baseline)")
        ax.set_xlabel("training steps")
        ax.set_title(key, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_samples(generated: torch.Tensor, test, path: Path, scale: int = 3) -> None:
    """Generated (B, T, 3, H, W) in [0, 1] over each clip's truth, frames as columns -> PNG."""
    from PIL import Image

    rows = []
    for i, video in enumerate(generated):
        truth = test[i]["video"][: video.shape[0]].float()
        for clip in (video.clamp(0, 1), truth):
            rows.append(torch.cat(list(clip), dim=2))  # (3, H, T*W)
    image = (torch.cat(rows, dim=1).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    Image.fromarray(image).resize((image.shape[1] * scale, image.shape[0] * scale),
                                  Image.NEAREST).save(path)


def main(argv: list[str]) -> list[dict]:
    torch.set_num_threads(1)
    name, o = argv[0], parse(argv[1:])
    misc = o["misc"]
    seed, temps, clips = misc.get("seed", 0), misc.get("temps", [0.6]), misc.get("clips", 32)
    milestones = sorted(misc.get("steps", [250, 500, 1000, 1500, 2000, 3000]))
    out = Path(misc.get("out", "paper_tables"))
    out.mkdir(parents=True, exist_ok=True)
    table = out / f"learning_curve_{name}.jsonl"
    rows = [json.loads(line) for line in table.read_text().splitlines()] if table.exists() else []
    done = {(r["step"], r["temperature"]) for r in rows}
    recipe = sorted(a for a in argv[1:] if not a.startswith("misc."))
    for r in rows:
        if sorted(a for a in r["args"] if not a.startswith("misc.")) != recipe:
            raise SystemExit(f"{table} holds a curve of {name!r} with overrides {r['args']}, not "
                             f"{argv[1:]}: pick another NAME, or delete {table} and "
                             f"runs/learning_curve/{name}/ to start over")
    model_cfg = ModelConfig(**o["model"])
    base_cfg = TrainConfig(**{"ckpt_every": 250, "log_every": 50, **o["train"]})
    model = VideoMAR(model_cfg, seed=seed)
    ema = EMA(model, base_cfg.ema_decay)
    data = build_dataset(DataConfig(), "train", seed=seed)
    test = build_dataset(DataConfig(), "test", seed=seed)
    baseline = score_baseline(test, num_clips=clips, num_cond=model_cfg.num_cond_frames)
    run_dir = Path(misc.get("runs", "runs/learning_curve")) / name
    for step in milestones:
        if all((step, t) in done for t in temps):
            continue
        start = time.perf_counter()
        summary = train(model, data, dataclasses.replace(base_cfg, steps=step), seed=seed,
                        out_dir=run_dir, device="cpu", ema=ema, progress=False)
        train_s = round(time.perf_counter() - start, 1)
        with ema.swapped(model):
            for temp in temps:
                if (step, temp) in done:
                    continue
                sampler = SamplerConfig(**{**o["sampler"], "temperature": temp})
                scores = score_samples(model, test, num_clips=clips, sampler=sampler, seed=seed)
                row = {"name": name, "args": argv[1:], "step": step, "temperature": temp,
                       "train_flops": summary["train_flops"], "train_loss": summary["train_loss"],
                       "train_s_this_call": train_s,
                       **{k: scores[k] for k in SHOWN if k in scores}}
                rows.append(row)
                with table.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    plot(rows, baseline, out / f"learning_curve_{name}.png")
    samples = out / f"learning_curve_{name}_samples.png"
    if not samples.exists():  # resume the last milestone (no training left) and sample 6 clips
        train(model, data, dataclasses.replace(base_cfg, steps=milestones[-1]), seed=seed,
              out_dir=run_dir, device="cpu", ema=ema, progress=False)
        with ema.swapped(model):
            sampler = SamplerConfig(**{**o["sampler"], "temperature": temps[0]})
            scores = score_samples(model, test, num_clips=min(6, clips), sampler=sampler,
                                   seed=seed)
        save_samples(scores["videos"], test, samples)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
