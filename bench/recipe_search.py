"""One training-recipe trial: train the tiny model with overrides, score 32 test clips per temperature.

    python bench/recipe_search.py NAME [section.key=value ...] [misc.temps=[1.0,0.6]] [misc.seed=0]

Sections: model, train, sampler (fields of ModelConfig / TrainConfig / SamplerConfig; values are
JSON, e.g. 'model.tokenizer={"patch_shift":0,"patch_scale":1}'). One thread, no checkpoints; the
EMA weights are scored with core.evaluate.score_samples on the first 32 test clips (8 frames),
and one JSON line per trial is printed and appended to runs/recipe_search.jsonl. The README's
"Training recipe" section lists the trials behind the defaults. Untracked by the results table
on purpose: these are exploration runs, not a paper table.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from core.config import DataConfig, ModelConfig, SamplerConfig, TrainConfig
from core.data import build_dataset
from core.evaluate import score_samples
from core.model import VideoMAR
from core.train import EMA, train

SHOWN = ("mse_mean", "psnr_first", "dist_energy", "syn_subject_consistency", "syn_i2v_subject",
         "syn_dynamic_degree", "syn_i2v_background")


def parse(args: list[str]) -> dict:
    out = {"model": {}, "train": {}, "sampler": {}, "misc": {}}
    for arg in args:
        key, value = arg.split("=", 1)
        section, field = key.split(".", 1)
        if section not in out:
            raise SystemExit(f"{arg!r}: the key must start with one of {sorted(out)}")
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
        out[section][field] = value
    return out


def main(argv: list[str]) -> dict:
    torch.set_num_threads(1)
    name, o = argv[0], parse(argv[1:])
    seed = o["misc"].get("seed", 0)
    train_cfg = TrainConfig(**{"ckpt_every": 0, **o["train"]})
    model = VideoMAR(ModelConfig(**o["model"]), seed=seed)
    ema = EMA(model, train_cfg.ema_decay)
    start = time.perf_counter()
    summary = train(model, build_dataset(DataConfig(), "train", seed=seed), train_cfg, seed=seed,
                    out_dir=None, device="cpu", ema=ema, progress=False)
    row = {"name": name, "args": argv[1:], "train_s": round(time.perf_counter() - start, 1),
           "train_loss": summary["train_loss"]}
    test = build_dataset(DataConfig(), "test", seed=seed)
    with ema.swapped(model):
        for temp in o["misc"].get("temps", [1.0]):
            sampler = SamplerConfig(**{**o["sampler"], "temperature": temp})
            scores = score_samples(model, test, num_clips=32, sampler=sampler, seed=seed)
            row[f"T{temp}"] = {k: round(scores[k], 4) for k in SHOWN if k in scores}
    print(json.dumps(row))
    out = Path("runs/recipe_search.jsonl")
    out.parent.mkdir(exist_ok=True)
    with out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return row


if __name__ == "__main__":
    main(sys.argv[1:])
