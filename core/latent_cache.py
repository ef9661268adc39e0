"""Pre-encoded latent cache: encode a dataset's clips and captions once, then train from disk.

As production video trainers do, the frozen tokenizer (a video VAE) and the frozen text encoder
run once per clip instead of once per step:

    python -m core.latent_cache build --out cache/train --split train \\
        data.source=folder data.folder=/videos data.num_frames=17 \\
        model.tokenizer.kind=video_vae model.tokenizer.vae_path=/models/wan_vae \\
        model.text_encoder.kind=t5 model.text_encoder.path=/models/t5 model.text_dim=4096

writes DIR/shard_00000.safetensors, ... (`tokens` (n, T', h, w, D) float32; with a frozen text
encoder also `text_features` (n, Lt, dim) and `text_valid` (n, Lt)) and DIR/manifest.json (shard
sizes, captions, and the tokenizer / text encoder / data configs it was built with), the manifest
written last. Overrides are RunConfig fields (core/config.py), values parsed as Python literals.

`LatentCacheDataset` reads it back with the items training expects: "video" holds the clip's
tokens and "caption" an `EncodedCaption` (the text plus its cached features) or the plain caption
for the trainable hashed encoder. Train a model built with `tokenizer=PreEncoded(...)` (see
`cached_tokenizer`): it passes cached tokens through, still encodes pixel clips (held-out loss,
sampling) and decodes with the real tokenizer. Curricula cut clips as they come: frame stages
count latent frames here, and resolution stages cannot apply to cached tokens.
"""

from __future__ import annotations

import argparse
import ast
import bisect
import dataclasses
import json
import os
from pathlib import Path
from typing import List, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from core.config import ModelConfig, RunConfig, TokenizerConfig
from core.text_encoder import EncodedCaption, build_text_encoder
from core.tokenizer_factory import build_tokenizer
from core.tokenizers import Tokenizer

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def _shard_name(i: int) -> str:
    return f"shard_{i:05d}.safetensors"


def _write_shard(out: Path, index: int, tensors: dict) -> dict:
    from safetensors.torch import save_file

    name = _shard_name(index)
    save_file({k: torch.cat(v).contiguous() for k, v in tensors.items()}, str(out / name))
    return {"file": name, "count": sum(t.shape[0] for t in tensors["tokens"])}


@torch.no_grad()
def build_cache(model_cfg: ModelConfig, dataset: Dataset, out_dir: str | Path, *,
                batch_size: int = 8, shard_size: int = 256, device="cpu",
                data_cfg: Optional[object] = None) -> Path:
    """Encode every clip (and caption) of `dataset` in order into `out_dir`; returns the manifest.

    Text features are cached only for a frozen encoder (text_encoder.kind=t5): the hashed encoder
    trains with the model, so its captions are stored as text.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # a half-written cache has no manifest
    tokenizer = build_tokenizer(model_cfg.tokenizer).to(device)
    frozen_text = model_cfg.text_dim > 0 and model_cfg.text_encoder.kind != "hashed"
    text = build_text_encoder(model_cfg).to(device) if frozen_text else None
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        collate_fn=lambda items: items)
    shards, captions, pending, token_shape = [], [], {}, None
    for items in loader:
        video = torch.stack([it["video"] for it in items]).to(device)
        texts = [it.get("caption") or "" for it in items]
        pending.setdefault("tokens", []).append(tokenizer.encode(video).float().cpu())
        token_shape = list(pending["tokens"][-1].shape[1:])
        if text is not None:
            features, valid = text(texts)
            pending.setdefault("text_features", []).append(features.float().cpu())
            pending.setdefault("text_valid", []).append(valid.cpu())
        captions.extend(texts)
        if sum(t.shape[0] for t in pending["tokens"]) >= shard_size:
            shards.append(_write_shard(out, len(shards), pending))
            pending = {}
    if pending:
        shards.append(_write_shard(out, len(shards), pending))
    if not shards:
        raise ValueError("build_cache: the dataset is empty")
    manifest = {
        "format": FORMAT_VERSION, "num_clips": len(captions), "token_shape": token_shape,
        "shards": shards, "captions": captions, "text_features": text is not None,
        "tokenizer": dataclasses.asdict(model_cfg.tokenizer),
        "text_encoder": dataclasses.asdict(model_cfg.text_encoder), "text_len": model_cfg.text_len,
        "data": dataclasses.asdict(data_cfg) if dataclasses.is_dataclass(data_cfg) else None,
    }
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, out / MANIFEST)
    return out / MANIFEST


def read_manifest(root: str | Path) -> dict:
    """The manifest of a finished cache; a clear error when there is none."""
    path = Path(root).expanduser() / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no latent cache at {str(path.parent)!r} ({MANIFEST} missing: "
                                f"the build did not finish or never ran). Build it with "
                                f"`python -m core.latent_cache build --out {path.parent} ...`")
    return json.loads(path.read_text())


class LatentCacheDataset(Dataset):
    """Items {"video": tokens (T', h, w, D), "caption": EncodedCaption | str, "index": i}."""

    def __init__(self, root: str | Path, model_cfg: Optional[ModelConfig] = None) -> None:
        self.root = Path(root).expanduser()
        self.manifest = read_manifest(self.root)
        if model_cfg is not None:
            self.check(model_cfg)
        self._ends = []
        for shard in self.manifest["shards"]:
            self._ends.append((self._ends[-1] if self._ends else 0) + shard["count"])
        self._files: dict = {}

    def check(self, model_cfg: ModelConfig) -> None:
        """Raise ValueError when the cache was built for another tokenizer or text encoder."""
        m = self.manifest
        built = (m["tokenizer"], m["text_encoder"], m["text_len"] if m["text_features"] else None)
        wanted = (dataclasses.asdict(model_cfg.tokenizer),
                  dataclasses.asdict(model_cfg.text_encoder),
                  model_cfg.text_len if m["text_features"] else None)
        if built != wanted:
            raise ValueError(f"the latent cache in {self.root} was built with tokenizer / text "
                             f"encoder / text_len {built}, this model uses {wanted}: rebuild it")

    def __len__(self) -> int:
        return self._ends[-1]

    def _open(self, shard: int):
        if shard not in self._files:  # safe_open maps the file; items are read by slice
            from safetensors import safe_open

            name = self.manifest["shards"][shard]["file"]
            self._files[shard] = safe_open(str(self.root / name), framework="pt")
        return self._files[shard]

    def __getstate__(self) -> dict:  # DataLoader workers reopen the shards
        return {**self.__dict__, "_files": {}}

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} outside the cache's {len(self)} clips")
        shard = bisect.bisect_right(self._ends, index)
        row = index - (self._ends[shard - 1] if shard else 0)
        f = self._open(shard)
        caption = self.manifest["captions"][index]
        if self.manifest["text_features"]:
            caption = EncodedCaption(caption, f.get_slice("text_features")[row],
                                     f.get_slice("text_valid")[row])
        return {"video": f.get_slice("tokens")[row], "caption": caption, "index": index}


class PreEncoded(Tokenizer):
    """A tokenizer that passes cached tokens (B, T', h, w, D) through and delegates the rest."""

    def __init__(self, inner: Tokenizer, token_shape: Sequence[int]) -> None:
        super().__init__(inner.cfg)
        self.inner = inner  # stateless or holding an unregistered VAE: state_dict unchanged
        self.token_shape = tuple(token_shape)
        self.clip_range = inner.clip_range

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        if tuple(video.shape[2:]) == self.token_shape[1:]:
            return video
        return self.inner.encode(video)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.inner.decode(tokens)


def cached_tokenizer(root: str | Path, model_cfg: ModelConfig) -> PreEncoded:
    """The tokenizer for a model trained on the cache in `root` (checked against `model_cfg`)."""
    dataset = LatentCacheDataset(root, model_cfg)
    return PreEncoded(build_tokenizer(model_cfg.tokenizer), dataset.manifest["token_shape"])


def _apply(obj, tree: dict):
    """dataclasses.replace with nested {field: value or {field: ...}}, each level replaced once."""
    unknown = sorted(set(tree) - {f.name for f in dataclasses.fields(obj)})
    if unknown:
        raise SystemExit(f"unknown config field(s) {unknown} on {type(obj).__name__}")
    return dataclasses.replace(obj, **{
        k: _apply(getattr(obj, k), v) if isinstance(v, dict) else v for k, v in tree.items()})


def config_from_overrides(overrides: Sequence[str]) -> RunConfig:
    """A RunConfig with `key=value` overrides (dotted RunConfig fields, Python literals), all
    applied before any check runs, so their order does not matter."""
    tree: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"override {item!r} is not key=value")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # a bare string, e.g. a path
        *parents, leaf = key.split(".")
        node = tree
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return _apply(RunConfig(), tree)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m core.latent_cache", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="encode a dataset split into a sharded cache")
    build.add_argument("--out", required=True, help="cache directory")
    build.add_argument("--split", default="train")
    build.add_argument("--batch-size", type=int, default=8)
    build.add_argument("--shard-size", type=int, default=256, help="clips per shard")
    build.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    build.add_argument("overrides", nargs="*", help="RunConfig fields, e.g. data.num_frames=17")
    args = parser.parse_args(argv)
    from core.data import build_dataset

    cfg = config_from_overrides(args.overrides)
    dataset = build_dataset(cfg.data, args.split, seed=cfg.seed)
    path = build_cache(cfg.model, dataset, args.out, batch_size=args.batch_size,
                       shard_size=args.shard_size, device=args.device, data_cfg=cfg.data)
    print(f"wrote {len(dataset)} clips to {path.parent} ({path.name})")


if __name__ == "__main__":
    main()
