"""Official VBench-I2V backend: preflight of the staged weights, video layout, lazy evaluation.

VBench (github.com/Vchitect/VBench) is an optional, CUDA-only dependency: its PyPI torchvision is
a CUDA build and the 0.1.5 wheel lacks I2V pieces, so use the pinned GitHub commit below on
PYTHONPATH (github.com/Vchitect/VBench, `vbench2_beta_i2v/`). Nothing here imports vbench until
`evaluate_i2v` runs, and that first runs `preflight`, which lists every missing or empty weight
file with the path VBench reads it from and the URL to stage it from, before any model loads
(VBench itself downloads at run time, fails one dimension at a time, and leaves 0-byte files).
Results are read from VBench's `<name>_eval_results.json` and aggregated by
core/metrics/aggregate.py, which refuses a Total when a dimension is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

from core.metrics.aggregate import DIMENSION_KEYS, NOT_AGGREGATED, partial_scores

VBENCH_REPO = "https://github.com/Vchitect/VBench"
VBENCH_COMMIT = "45e79ec14e69a2187202c675d2dbce1a71843d53"  # snapshot read for vbench.md (2026-03-23)
I2V_DIMENSIONS = DIMENSION_KEYS + NOT_AGGREGATED
CLIP_URL = "https://openaipublic.azureedge.net/clip/models/{sha}/{name}"
CLIP_B32_SHA = "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"
CLIP_L14_SHA = "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"
DINO_URL = ("https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/"
            "dino_vitbase16_pretrain.pth")
DREAMSIM_URL = ("https://github.com/ssundaram21/dreamsim/releases/download/v0.2.0-checkpoints/"
                "dreamsim_ensemble_checkpoint.zip")
CAMERA_PHRASES = ("camera pans left", "camera pans right", "camera tilts up", "camera tilts down",
                  "camera zooms in", "camera zooms out", "camera static")


@dataclass(frozen=True)
class Roots:
    """The cache roots VBench reads from (defaults as VBench and torch resolve them)."""

    vbench_cache: Path  # $VBENCH_CACHE_DIR, default ~/.cache/vbench
    torch_home: Path  # $TORCH_HOME, default ~/.cache/torch (hub code and checkpoints under hub/)
    clip_dir: Path  # openai-clip's download root, ~/.cache/clip
    dreamsim_dir: Path  # DreamSim's cache_dir, "./models" relative to the working directory

    @classmethod
    def from_env(cls, cwd: Optional[Path] = None, env: Optional[Mapping[str, str]] = None) -> "Roots":
        env = os.environ if env is None else env
        home = Path(env.get("HOME", str(Path.home())))
        return cls(Path(env.get("VBENCH_CACHE_DIR", home / ".cache" / "vbench")),
                   Path(env.get("TORCH_HOME", home / ".cache" / "torch")),
                   home / ".cache" / "clip", Path(cwd or Path.cwd()) / "models")


@dataclass(frozen=True)
class Artefact:
    dimension: str
    path: Path
    source: str  # URL or how to obtain it
    directory: bool = False  # a code checkout (torch.hub) rather than a file
    sha256: Optional[str] = None  # expected digest when the source publishes one


def required_artefacts(dimensions: Iterable[str], roots: Roots) -> List[Artefact]:
    """Every file or directory the given dimensions load, where VBench looks for it (vbench.md 3)."""
    hub, vc, ds = roots.torch_home / "hub", roots.vbench_cache, roots.dreamsim_dir
    dino = [Artefact("", hub / "facebookresearch_dino_main", "torch.hub.load("
                     "'facebookresearch/dino:main', 'dino_vitb16') on a machine with network",
                     directory=True),
            Artefact("", hub / "checkpoints" / "dino_vitbase16_pretrain.pth", DINO_URL)]
    table: Dict[str, List[Artefact]] = {
        "i2v_subject": dino, "subject_consistency": dino,
        "i2v_background": [
            *(Artefact("", ds / name, f"unzip {DREAMSIM_URL}") for name in (
                "dino_vitb16_pretrain.pth", "open_clip_vitb16_pretrain.pth.tar",
                "clip_vitb16_pretrain.pth.tar", "ensemble_lora/adapter_config.json")),
            Artefact("", ds / "facebookresearch_dino_main", "torch.hub.load('facebookresearch/"
                     "dino:main', 'dino_vitb16') with torch.hub.set_dir('./models')", directory=True),
            Artefact("", ds / "checkpoints" / "dino_vitbase16_pretrain.pth", DINO_URL)],
        "camera_motion": [
            Artefact("", hub / "facebookresearch_co-tracker_main", "torch.hub.load("
                     "'facebookresearch/co-tracker', 'cotracker2') (pin the hub ref)", directory=True),
            Artefact("", hub / "checkpoints" / "cotracker2.pth",
                     "https://huggingface.co/facebook/cotracker/resolve/main/cotracker2.pth")],
        "background_consistency": [
            Artefact("", roots.clip_dir / "ViT-B-32.pt", CLIP_URL.format(sha=CLIP_B32_SHA,
                     name="ViT-B-32.pt"), sha256=CLIP_B32_SHA)],
        "aesthetic_quality": [
            Artefact("", roots.clip_dir / "ViT-L-14.pt", CLIP_URL.format(sha=CLIP_L14_SHA,
                     name="ViT-L-14.pt"), sha256=CLIP_L14_SHA),
            Artefact("", vc / "aesthetic_model" / "emb_reader" / "sa_0_4_vit_l_14_linear.pth",
                     "https://raw.githubusercontent.com/LAION-AI/aesthetic-predictor/main/"
                     "sa_0_4_vit_l_14_linear.pth")],
        "imaging_quality": [
            Artefact("", vc / "pyiqa_model" / "musiq_spaq_ckpt-358bb6af.pth",
                     "https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights/"
                     "musiq_spaq_ckpt-358bb6af.pth")],
        "dynamic_degree": [
            Artefact("", vc / "raft_model" / "models" / "raft-things.pth",
                     "unzip https://dl.dropboxusercontent.com/s/4j4z58wuv8o0mfz/models.zip")],
        "motion_smoothness": [
            Artefact("", vc / "amt_model" / "amt-s.pth",
                     "https://huggingface.co/lalala125/AMT/resolve/main/amt-s.pth")],
        "temporal_flickering": [],
    }
    out = []
    for dim in dimensions:
        if dim not in table:
            raise ValueError(f"unknown VBench-I2V dimension {dim!r}: choose from {I2V_DIMENSIONS}")
        out += [Artefact(dim, a.path, a.source, a.directory, a.sha256) for a in table[dim]]
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def preflight(dimensions: Iterable[str], roots: Roots, verify_hashes: bool = False) -> List[str]:
    """One line per missing, empty or (with verify_hashes) corrupt artefact; [] when all is staged."""
    problems = []
    for a in required_artefacts(dimensions, roots):
        p = a.path
        if a.directory:
            if not p.is_dir():
                problems.append(f"{a.dimension}: missing directory {p} <- {a.source}")
        elif not p.is_file():
            problems.append(f"{a.dimension}: missing file {p} <- {a.source}")
        elif p.stat().st_size == 0:  # what a failed `wget -O` leaves behind
            problems.append(f"{a.dimension}: empty file {p} (a failed download; delete it) "
                            f"<- {a.source}")
        elif verify_hashes and a.sha256 and _sha256(p) != a.sha256:
            problems.append(f"{a.dimension}: corrupt file {p} (sha256 is not {a.sha256}) "
                            f"<- {a.source}")
    return problems


class PreflightError(RuntimeError):
    """Weights are missing; the message lists each one with where to stage it."""


def check_staged(dimensions: Sequence[str], roots: Roots, verify_hashes: bool = False) -> None:
    problems = preflight(dimensions, roots, verify_hashes)
    if problems:
        raise PreflightError(
            f"VBench-I2V weights are not staged ({len(problems)} problem(s)); stage them on a "
            "machine with network and copy the cache roots (VBENCH_CACHE_DIR, TORCH_HOME/hub, "
            "~/.cache/clip, ./models) here:\n  " + "\n  ".join(problems))


def video_names(prompts: Sequence[str]) -> List[str]:
    """VBench's file names `<prompt>-<i>.mp4`, i counting repeats of the same prompt from 0."""
    seen: Dict[str, int] = {}
    names = []
    for prompt in prompts:
        if not prompt or "/" in prompt or "\0" in prompt:
            raise ValueError(f"prompt {prompt!r} cannot be a file name: VBench matches videos by "
                             "`<prompt>-<i>.mp4`, so prompts must be non-empty and without '/'")
        i = seen.get(prompt, 0)
        seen[prompt] = i + 1
        names.append(f"{prompt}-{i}.mp4")
    return names


def write_videos(videos, prompts: Sequence[str], out_dir: str | Path, fps: int = 8) -> List[Path]:
    """Write videos (N, T, 3, H, W) in [0, 1] as H.264/MPEG-4 files in VBench's naming layout."""
    import av
    import numpy as np

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(videos) != len(prompts):
        raise ValueError(f"{len(videos)} videos but {len(prompts)} prompts")
    paths = []
    for video, name in zip(videos, video_names(prompts)):
        frames = np.asarray(video.detach().cpu() if hasattr(video, "detach") else video)
        frames = (np.clip(frames.transpose(0, 2, 3, 1), 0, 1) * 255).round().astype(np.uint8)
        path = out_dir / name
        with av.open(str(path), "w") as container:
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            stream = container.add_stream(codec, rate=fps)
            stream.height, stream.width = frames.shape[1:3]
            stream.pix_fmt = "yuv420p"
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        paths.append(path)
    return paths


def read_eval_results(path: str | Path) -> Dict[str, float]:
    """{dimension: aggregate fraction} from VBench's `<name>_eval_results.json` (value[0])."""
    data = json.loads(Path(path).read_text())
    out = {}
    for dim, value in data.items():
        head = value[0] if isinstance(value, list) and value else value
        if isinstance(head, bool) or not isinstance(head, (int, float)):
            raise ValueError(f"{path}: dimension {dim!r} has no numeric aggregate (got {value!r:.80})")
        out[dim] = float(head)
    return out


def _import_vbench_i2v():
    try:
        from vbench2_beta_i2v import VBenchI2V
    except Exception as e:  # ImportError, or torchvision's RuntimeError on CPU-only torch
        raise ImportError(
            f"the official VBench-I2V backend needs VBench from {VBENCH_REPO} at commit "
            f"{VBENCH_COMMIT} on PYTHONPATH, its requirements (setuptools<81, dreamsim==0.2.1, "
            f"peft==0.10.0 for i2v_background) and a CUDA torch/torchvision pair; see README "
            f"'Known pitfalls' ({type(e).__name__}: {e})") from e
    return VBenchI2V


def evaluate_i2v(videos_path: str | Path, name: str, output_dir: str | Path, *,
                 dimensions: Sequence[str] = DIMENSION_KEYS, full_info_json: str | Path,
                 custom_image_folder: Optional[str | Path] = None, device: str = "cuda",
                 resolution: str = "1-1", roots: Optional[Roots] = None,
                 verify_hashes: bool = False) -> dict:
    """Run VBench-I2V on a folder of videos; returns {"dimensions" (percent), "quality", "i2v", "total"}.

    mode is "custom_input" when custom_image_folder is given (images named `<prompt>.png`), else
    "vbench_standard" (the suite's images under vbench2_beta_i2v/data/crop/<resolution>/, relative
    to the working directory). The preflight runs first; missing weights raise PreflightError.
    """
    roots = roots or Roots.from_env()
    check_staged(dimensions, roots, verify_hashes)
    VBenchI2V = _import_vbench_i2v()
    os.environ["VBENCH_CACHE_DIR"] = str(roots.vbench_cache)
    os.environ["TORCH_HOME"] = str(roots.torch_home)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    kwargs = dict(dimension_list=list(dimensions), resolution=resolution)
    if custom_image_folder is not None:
        kwargs.update(custom_image_folder=str(custom_image_folder), mode="custom_input")
    VBenchI2V(device, str(full_info_json), str(output_dir)).evaluate(str(videos_path), name, **kwargs)
    values = read_eval_results(output_dir / f"{name}_eval_results.json")
    percent = {k: 100.0 * v for k, v in values.items()}
    return {"dimensions": percent, **partial_scores(percent, "percent"),
            "vbench_commit": VBENCH_COMMIT}
