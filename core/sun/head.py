"""SpeedUpNet on VideoMAR's per-token diffusion head: guided few-step sampling in one pass.

MAR-family samplers spend most of their time in the per-token head: ~100 respaced DDPM steps,
each on [z_cond; z_uncond] for classifier-free guidance (2 x 100 MLP passes per token). SUN
(arXiv 2312.08887, sec. 3) folds CFG into a trainable branch
that reads the negative condition next to the frozen model's positive one, and trains it with
CFG distillation plus a multi-step consistency (MSC) loss so that 4 DPM-Solver++ steps suffice.
This file carries the idea to the head; the construction is ours [I], since SUN's adapter is
defined on cross-attention and the head has none:

* Where the condition enters. The head (core/diffusion_head.py) conditions every adaLN block
  on y = time_embed(t) + cond_embed(z). The frozen positive branch is Ap = cond_embed(z_cond);
  the adapter adds a trainable negative branch An = W_neg z_uncond and an extra positive branch
  Ae = W_pos2 z_cond (both initialised as copies of cond_embed), each rescaled per token to
  Ap's norm and given a per-channel scale and shift (starting at 1 and 0), exactly as SUN's
  attention normalisation; the combined condition is Ap - An' + Ae'. With z_uncond = z_cond
  the initial adapter reproduces the plain head, as SUN's does for a negative equal to the
  positive.
* Guidance and time. MAR ramps the CFG scale linearly over a frame's iterations, so one adapter
  serves every scale w in [1, cfg_max]: a zero-initialised linear layer reads the head's time
  embedding and sinusoidal features of w and adds per-channel deltas to the scales and shifts.
* Sampling. diffusers' DPMSolverMultistepScheduler (2M, trailing spacing, the head's cosine
  schedule), fed the predicted x0, clamped like the DDPM head's `clip_x0`. sampler.head_solver
  picks SDE-DPM-Solver++ (default: fresh noise every step, scaled by the temperature, as in MAR's
  DDPM chain) or the ODE DPM-Solver++ (deterministic: the temperature scales x_T). On the tiny
  preset the 4-step ODE scored well below the 100-step DDPM head (so did the 40-step ODE
  teacher itself); the 4-step SDE did not (README).
* Training (`distill`), as core/sun/distill.py does for the UNet: conditions (z_cond, z_uncond)
  are recorded from the teacher sampler itself on training clips; for each, a guidance scale
  w ~ U[1, cfg_max] and x_T; the frozen head's CFG ODE trajectory (DPM-Solver++, 40 steps, whose
  grid contains the student's 4) is cached. L_cfg matches the student's eps to the teacher's
  guided eps at cached states; L_msc matches the student's own 4-step rollout (autograd through
  the solver) to the teacher's states at the student's timesteps. Only the adapter trains.

The adapter is installed on a model outside its module tree (`install`), so checkpoints, EMA
and parameter counts of the model are unchanged; only its own weights are saved (safetensors).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from diffusers import DPMSolverMultistepScheduler
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from core.config import HeadDistillConfig, SamplerConfig
from core.diffusion_head import DiffusionHead, SimpleMLPAdaLN, timestep_features
from core.sampler import head_clip_x0, sample_latents
from core.sun.distill import log_progress, optimizer_step
from core.sun.teacher import cosine_lr

GUIDANCE_FEATURES = 32  # sinusoidal features of the guidance scale
GUIDANCE_FREQ_SCALE = 100.0  # w -> w * 100 before the sinusoids (resolves steps of ~0.01)
NORM_EPS = 1e-6
ATTR = "sun_head"  # the model attribute an installed adapter lives in
DISTILL_SEED_OFFSET = 2_000_029  # keeps distillation draws apart from training/eval draws


# ----------------------------------------------------------------------------- the solver


@functools.lru_cache(maxsize=None)
def _scheduler_template(num_train_timesteps: int, num_steps: int,
                        stochastic: bool) -> DPMSolverMultistepScheduler:
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=num_train_timesteps, beta_schedule="squaredcos_cap_v2",
        algorithm_type="sde-dpmsolver++" if stochastic else "dpmsolver++", solver_order=2,
        timestep_spacing="trailing",
        prediction_type="sample", thresholding=False)
    scheduler.set_timesteps(num_steps)
    return scheduler


def make_scheduler(head: DiffusionHead, num_steps: int,
                   stochastic: bool = False) -> DPMSolverMultistepScheduler:
    """A fresh DPM-Solver++ (2M, trailing) over the head's training schedule, at `num_steps`.

    The solver is stateful (its history of x0 predictions), so every chain gets its own copy of
    a cached template (building one from scratch costs ~6x more, once per head call).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps}: need at least 1 solver step")
    return copy.deepcopy(_scheduler_template(head.num_train_timesteps, num_steps, stochastic))


def solve(eps_fn: Callable[[Tensor, Tensor], Tensor], head: DiffusionHead, x_T: Tensor,
          num_steps: int, clip_x0: Optional[float] = None, record: bool = False,
          noise: Optional[Callable[[], Tensor]] = None) -> tuple[Tensor, dict]:
    """DPM-Solver++ from x_T (N, D) with eps_fn(x, t (1,)) -> eps (N, D); returns (x_0, traj).

    traj["after"]: (N, S, D) the state after each step (the last is x_0), with autograd (the
    MSC rollout). record=True adds "timesteps" (S,), "states" (N, S, D) before each step and
    "eps" (N, S, D) used there, detached (the teacher's cache). With `noise` (a function
    returning (N, D) standard normals, already scaled by any temperature) the solver is
    SDE-DPM-Solver++, which injects that noise at every step; without it, the ODE solver.
    """
    scheduler = make_scheduler(head, num_steps, stochastic=noise is not None)
    abar = scheduler.alphas_cumprod.to(x_T.device, torch.float32)
    x, states, epss, after = x_T, [], [], []
    for t in scheduler.timesteps:
        eps = eps_fn(x, t.view(1).to(x.device))
        x0 = (x - (1 - abar[t]).sqrt() * eps) / abar[t].sqrt()
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
        if record:
            states.append(x.detach())
            epss.append(eps.detach())
        extra = {} if noise is None else {"variance_noise": noise()}
        x = scheduler.step(x0, t, x, **extra).prev_sample
        after.append(x)
    traj = {"after": torch.stack(after, 1)}
    if record:
        traj.update(timesteps=scheduler.timesteps.clone(), states=torch.stack(states, 1),
                    eps=torch.stack(epss, 1))
    return x, traj


def cfg_eps_fn(head: DiffusionHead, z: Tensor, z_uncond: Tensor, guidance: Tensor):
    """The frozen head's guided eps: eps_u + w (eps_c - eps_u), one batched pass on 2N rows.

    guidance: a scalar tensor, or per-token scales (N,) or (N, 1).
    """
    net = head.net
    cond = net.cond_embed(torch.cat([z, z_uncond]))
    if guidance.numel() > 1:
        guidance = guidance.reshape(-1, 1)  # (N,) would broadcast over the token channels

    def eps_fn(x: Tensor, t: Tensor) -> Tensor:
        out = net(torch.cat([x, x]).to(z.dtype), t, None, cond)[:, :head.token_dim]
        eps_c, eps_u = out.float().chunk(2)
        return eps_u + guidance * (eps_c - eps_u)
    return eps_fn


def _start(head: DiffusionHead, z: Tensor, generator: Optional[torch.Generator], temperature,
           stochastic: bool) -> tuple[Tensor, Optional[Callable[[], Tensor]]]:
    """x_T (N, D) from `generator` and, for the SDE solver, the per-step noise function.

    ODE: the only randomness is x_T, so the temperature (a float or (N, 1)) scales x_T. SDE: as
    in MAR's DDPM chain, x_T is unscaled and each step's fresh noise is scaled by it.
    """
    x_T = head._randn(z.shape[0], z, generator)
    scaled = not (isinstance(temperature, (int, float)) and temperature == 1.0)
    if not stochastic:
        return (x_T * temperature if scaled else x_T), None

    def noise() -> Tensor:
        eps = head._randn(z.shape[0], z, generator)
        return eps * temperature if scaled else eps
    return x_T, noise


@torch.no_grad()
def sample_dpm(head: DiffusionHead, z: Tensor, z_uncond: Optional[Tensor], *, cfg_scale: float,
               temperature=1.0, num_steps: int, generator: Optional[torch.Generator],
               clip_x0: Optional[float] = None, stochastic: bool = False) -> Tensor:
    """The frozen head under DPM-Solver++ (no adapter): CFG on 2N rows when z_uncond is given.

    The baseline that separates the solver's speedup from the adapter's (SUN's "teacher at 4
    steps"). Randomness and temperature as in `_start`.
    """
    x_T, noise = _start(head, z, generator, temperature, stochastic)
    if z_uncond is not None and cfg_scale != 1.0:
        eps_fn = cfg_eps_fn(head, z, z_uncond.to(z), torch.tensor(float(cfg_scale)))
    else:
        cond = head.net.cond_embed(z)
        eps_fn = lambda x, t: head.net(x.to(z.dtype), t, None, cond)[:, :head.token_dim].float()  # noqa: E731
    x0, _ = solve(eps_fn, head, x_T, num_steps, clip_x0, noise=noise)
    return x0.to(z.dtype)


# ----------------------------------------------------------------------------- the adapter


def guidance_features(w: Tensor) -> Tensor:
    """Sinusoidal features (N, GUIDANCE_FEATURES) of guidance scales w (N,)."""
    return timestep_features(w.float() * GUIDANCE_FREQ_SCALE, GUIDANCE_FEATURES)


class SUNHeadAdapter(nn.Module):
    """Negative and extra-positive condition branches for a frozen SimpleMLPAdaLN head."""

    def __init__(self, net: SimpleMLPAdaLN, cfg_max: float):
        super().__init__()
        if not isinstance(net, SimpleMLPAdaLN):
            raise TypeError(f"the SUN head adapter needs a SimpleMLPAdaLN head, got {type(net)}")
        width = net.cond_embed.out_features
        self.neg = copy.deepcopy(net.cond_embed)  # W_neg, starts as the frozen cond_embed
        self.pos2 = copy.deepcopy(net.cond_embed)  # W_pos2 (SUN's add_pos branch)
        for p in [*self.neg.parameters(), *self.pos2.parameters()]:
            p.requires_grad_(True)
        self.alpha = nn.Parameter(torch.ones(2, width))  # per-channel scale of (An, Ae)
        self.beta = nn.Parameter(torch.zeros(2, width))  # per-channel shift of (An, Ae)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width + GUIDANCE_FEATURES, 4 * width))
        nn.init.zeros_(self.modulation[-1].weight)
        nn.init.zeros_(self.modulation[-1].bias)
        self.cfg_max = float(cfg_max)
        self.info: dict = {}  # how it was distilled (student_steps, cfg_max, losses, ...)

    def condition(self, net: SimpleMLPAdaLN, z: Tensor, z_uncond: Tensor, t: Tensor,
                  guidance: Tensor) -> Tensor:
        """The combined condition Ap - An' + Ae' (N, width) at timesteps t (1,) or (N,)."""
        ap = net.cond_embed(z)
        branches = torch.stack([self.neg(z_uncond), self.pos2(z)])  # (2, N, width)
        scale = ap.norm(dim=-1, keepdim=True) / (branches.norm(dim=-1, keepdim=True) + NORM_EPS)
        n = z.shape[0]
        temb = net.time_embed(t, ap.dtype).expand(n, -1)
        g = guidance_features(guidance.reshape(-1).expand(n)).to(ap.dtype)
        delta = self.modulation(torch.cat([temb, g], dim=-1)).view(n, 2, 2, -1)  # (N, 2, 2, w)
        alpha = self.alpha[:, None] + delta[:, :, 0].transpose(0, 1)  # (2, N, w)
        beta = self.beta[:, None] + delta[:, :, 1].transpose(0, 1)
        an, ae = alpha * scale * branches + beta
        return ap - an + ae

    def eps_fn(self, head: DiffusionHead, z: Tensor, z_uncond: Tensor, guidance: Tensor):
        """The student's guided eps in one head pass on N rows (x (N, D), t (1,)) -> (N, D)."""
        net = head.net

        def eps(x: Tensor, t: Tensor) -> Tensor:
            cond = self.condition(net, z, z_uncond, t, guidance)
            return net(x.to(z.dtype), t, None, cond)[:, :head.token_dim].float()
        return eps

    def check_guidance(self, guidance: float) -> None:
        if guidance < 1.0:
            raise ValueError(f"guidance {guidance:g} < 1: the head adapter is trained for scales "
                             f"in [1, {self.cfg_max:g}]")
        if guidance > self.cfg_max + 1e-6:
            raise ValueError(f"guidance {guidance:g} exceeds the scale this head adapter was "
                             f"trained for (cfg_max={self.cfg_max:g}): distil it with "
                             f"head_distill.cfg_max >= {guidance:g} or lower sampler.cfg_scale")

    @torch.no_grad()
    def sample(self, head: DiffusionHead, z: Tensor, z_uncond: Tensor, *, cfg_scale: float,
               temperature=1.0, num_steps: int, generator: Optional[torch.Generator],
               clip_x0: Optional[float] = None, stochastic: bool = False) -> Tensor:
        """Tokens (N, D) for conditions z, z_uncond (N, C): num_steps single-pass solver steps.

        Randomness and temperature as in `_start` (ODE: scaled x_T; SDE: scaled step noise).
        """
        self.check_guidance(float(cfg_scale))
        x_T, noise = _start(head, z, generator, temperature, stochastic)
        w = torch.tensor(float(cfg_scale), device=z.device)
        x0, _ = solve(self.eps_fn(head, z, z_uncond.to(z), w), head, x_T, num_steps, clip_x0,
                      noise=noise)
        return x0.to(z.dtype)

    # ------------------------------------------------------------------ weights only
    def save(self, path: str | Path, info: Optional[dict] = None,
             head: Optional[DiffusionHead] = None) -> None:
        """Write the adapter's weights only; `head` records a fingerprint of the frozen head."""
        meta = {"format": "sun_head_adapter/1", "cfg_max": repr(self.cfg_max),
                "info": json.dumps(info or {}, sort_keys=True)}
        if head is not None:
            meta["head_fingerprint"] = head_fingerprint(head)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(str(path) + ".tmp")
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()},
                  str(tmp), metadata=meta)
        tmp.replace(path)  # atomic: a killed save leaves no half-written adapter


def load_adapter(head: DiffusionHead, path: str | Path) -> SUNHeadAdapter:
    """A SUNHeadAdapter for `head` with the weights in `path` (written by SUNHeadAdapter.save)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SUN head adapter {path} does not exist: distil one with "
                                "`python ablations/run.py sampler.head=sun ...` (it is cached "
                                "next to the training checkpoint) or fix sampler.head_adapter")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except Exception as exc:  # truncated or foreign file
        raise ValueError(f"cannot read SUN head adapter {path} ({exc}): delete it and distil "
                         "again") from exc
    if meta.get("format") != "sun_head_adapter/1":
        raise ValueError(f"{path} is not a SUN head adapter (metadata {meta}); "
                         "sampler.head_adapter must point to a file SUNHeadAdapter.save wrote")
    adapter = SUNHeadAdapter(head.net, float(meta["cfg_max"]))
    try:
        adapter.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"SUN head adapter {path} does not fit this model's head ({exc}); it "
                         "was distilled for another head width/condition size") from exc
    expected = meta.get("head_fingerprint")
    if expected and expected != head_fingerprint(head):
        warnings.warn(f"SUN head adapter {path} was distilled from other head weights than "
                      "this model's (e.g. EMA vs raw weights, or another checkpoint); its "
                      "samples may be off: distil it from the weights you sample with",
                      stacklevel=2)
    adapter.info = json.loads(meta.get("info") or "{}")
    return adapter.to(next(head.parameters()).device)


def head_fingerprint(head: DiffusionHead) -> str:
    """A short hash of the frozen head's weights (what an adapter was distilled from)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(head.net.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def install(model, adapter: SUNHeadAdapter) -> None:
    """Attach `adapter` to `model` for sampler.head=sun, outside the model's module tree."""
    object.__setattr__(model, ATTR, adapter.to(model.mask_token.device))


def remove(model) -> None:
    model.__dict__.pop(ATTR, None)


def installed(model) -> Optional[SUNHeadAdapter]:
    return model.__dict__.get(ATTR)


# ----------------------------------------------------------------------------- training


def check_grids(head: DiffusionHead, student_steps: int, teacher_steps: int) -> None:
    """The student's timesteps must lie on the teacher's (checked before any teacher work)."""
    student = make_scheduler(head, student_steps).timesteps.tolist()
    teacher = set(make_scheduler(head, teacher_steps).timesteps.tolist())
    missing = [t for t in student if t not in teacher]
    if missing:
        raise ValueError(f"head_distill.teacher_steps={teacher_steps}: the student's "
                         f"timesteps {missing} are not on the teacher's grid; use a multiple of "
                         f"{student_steps} that divides the grid evenly (e.g. 40 for 4 steps)")


@contextlib.contextmanager
def recorded_head_inputs(model):
    """Record every (z, z_uncond, cfg_scale) the sampler hands to model.head.sample."""
    records: list[tuple[Tensor, Tensor, float]] = []
    original = model.head.sample
    patched = model.head.__dict__.get("sample")  # an instance-level patch already in place

    def recording(z, *, z_uncond=None, cfg_scale=1.0, **kw):
        if z_uncond is not None:
            records.append((z.detach().cpu(), z_uncond.detach().cpu(), float(cfg_scale)))
        return original(z, z_uncond=z_uncond, cfg_scale=cfg_scale, **kw)

    model.head.sample = recording
    try:
        yield records
    finally:
        if patched is None:
            del model.head.sample  # back to the class method
        else:
            model.head.sample = patched


@torch.no_grad()
def teacher_pool(model, clips: list, captions: list, sampler: SamplerConfig,
                 cfg: HeadDistillConfig, cfg_max: float, clip_x0: Optional[float],
                 student_steps: int, generator: torch.Generator) -> dict:
    """Record conditions from the teacher sampler on `clips`, then cache CFG trajectories.

    clips: conditioning token tensors (B, Tc, h, w, D) with their frame counts; see `distill`.
    `generator` must be a CPU generator (pool draws are made on the CPU, then moved).
    """
    check_grids(model.head, student_steps, cfg.teacher_steps)
    teacher = SamplerConfig(**{**sampler.__dict__, "head": "ddpm", "head_adapter": None,
                               "num_sampling_steps": cfg.teacher_sampling_steps})
    with recorded_head_inputs(model) as records:
        for (cond, frames), caps in zip(clips, captions):
            sample_latents(model, cond, frames, teacher, generator, caps)
    if not records:
        raise RuntimeError("the teacher sampler never ran the head with CFG: distillation needs "
                           "sampler.cfg_scale != 1 and a text-conditioned model")
    z = torch.cat([r[0] for r in records])
    z_u = torch.cat([r[1] for r in records])
    pick = torch.randperm(z.shape[0], generator=generator)[:cfg.pool_size]
    z, z_u = z[pick].float(), z_u[pick].float()
    n = z.shape[0]
    head = model.head
    device = next(head.parameters()).device
    z, z_u = z.to(device), z_u.to(device)
    w = 1.0 + (cfg_max - 1.0) * torch.rand(n, 1, generator=generator)
    x_T = torch.randn(n, head.token_dim, generator=generator)
    w, x_T = w.to(device), x_T.to(device)
    final, traj = solve(cfg_eps_fn(head, z, z_u, w), head, x_T, cfg.teacher_steps, clip_x0,
                        record=True)
    student_t = make_scheduler(head, student_steps).timesteps
    teacher_t = traj["timesteps"]
    # The teacher's state after each student step: at the student's next timestep, then x_0.
    index = [teacher_t.tolist().index(int(t)) for t in student_t[1:]]
    targets = torch.cat([traj["states"][:, index], final[:, None]], dim=1)
    return {"z": z, "z_uncond": z_u, "guidance": w, "noise": x_T, "final": final,
            "timesteps": teacher_t, "states": traj["states"], "eps": traj["eps"],
            "targets": targets, "num_recorded": len(records)}


def distill(model, pool: dict, cfg: HeadDistillConfig, cfg_max: float, student_steps: int,
            clip_x0: Optional[float], generator: torch.Generator,
            log: Callable[[str], None] = print) -> tuple[SUNHeadAdapter, dict]:
    """Train a SUNHeadAdapter on the cached teacher pool; returns it and the loss curves."""
    head = model.head
    device = next(head.parameters()).device
    frozen = [p.requires_grad for p in head.parameters()]
    head.requires_grad_(False)
    adapter = SUNHeadAdapter(head.net, cfg_max).to(device)
    params = [p for p in adapter.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    n, num_states = pool["z"].shape[0], pool["states"].shape[1]
    curves: dict[str, list[float]] = {"cfg": [], "msc": []}
    start = time.perf_counter()
    try:
        for step in range(cfg.steps):
            for group in opt.param_groups:  # cosine decay to 10%, no warmup
                group["lr"] = cosine_lr(step, cfg.lr, 0, cfg.steps)
            i = torch.randint(n, (cfg.batch_cfg,), generator=generator).to(device)
            k = torch.randint(num_states, (cfg.batch_cfg,), generator=generator).to(device)
            x_k, t_k = pool["states"][i, k], pool["timesteps"].to(device)[k]
            cond = adapter.condition(head.net, pool["z"][i], pool["z_uncond"][i], t_k,
                                     pool["guidance"][i])
            eps = head.net(x_k, t_k, None, cond)[:, :head.token_dim]
            loss_cfg = F.mse_loss(eps, pool["eps"][i, k])
            loss = loss_cfg
            if cfg.lambda_msc > 0:
                j = torch.randint(n, (cfg.batch_msc,), generator=generator).to(device)
                eps_fn = adapter.eps_fn(head, pool["z"][j], pool["z_uncond"][j],
                                        pool["guidance"][j])
                _, rollout = solve(eps_fn, head, pool["noise"][j], student_steps, clip_x0)
                loss_msc = F.mse_loss(rollout["after"], pool["targets"][j])
                loss = loss + cfg.lambda_msc * loss_msc
                curves["msc"].append(loss_msc.item())
            optimizer_step(opt, loss, params)
            curves["cfg"].append(loss_cfg.item())
            log_progress(curves, step, cfg.steps, log, "sun head")
    finally:
        for p, g in zip(head.parameters(), frozen):
            p.requires_grad_(g)
    adapter.eval()
    curves["seconds"] = time.perf_counter() - start
    return adapter, curves


def distill_for_model(model, dataset, sampler: SamplerConfig, cfg: HeadDistillConfig, *,
                      seed: int, batch_size: int = 8,
                      log: Callable[[str], None] = print) -> tuple[SUNHeadAdapter, dict]:
    """Record conditions on the first cfg.num_clips clips of `dataset`, cache the teacher's
    trajectories and distil an adapter for `sampler` (its cfg_scale, steps and x0 clipping)."""
    from torch.utils.data import DataLoader

    device = model.mask_token.device
    generator = torch.Generator().manual_seed(DISTILL_SEED_OFFSET + seed)
    cfg_max = cfg.cfg_max if cfg.cfg_max is not None else sampler.cfg_scale
    if sampler.cfg_scale > cfg_max:
        raise ValueError(f"head_distill.cfg_max={cfg_max:g} is below sampler.cfg_scale="
                         f"{sampler.cfg_scale:g}: raise it or leave it null")
    check_grids(model.head, sampler.num_sampling_steps, cfg.teacher_steps)
    clip_x0 = head_clip_x0(model, sampler)
    num_cond = model.cfg.num_cond_frames
    clips, captions, seen = [], [], 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        if seen >= cfg.num_clips:
            break
        video = batch["video"][: cfg.num_clips - seen].to(device)
        clips.append((model.tokenizer.encode(video[:, :num_cond]), video.shape[1]))
        captions.append(list(batch["caption"][: video.shape[0]]))
        seen += video.shape[0]
    if not clips:
        raise ValueError("head distillation got an empty dataset: it needs training clips")
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        pool = teacher_pool(model, clips, captions, sampler, cfg, cfg_max, clip_x0,
                            sampler.num_sampling_steps, generator)
        pool_s = time.perf_counter() - start
        log(f"  [sun head] teacher pool: {pool['z'].shape[0]} tokens from "
            f"{pool['num_recorded']} head calls in {pool_s:.1f} s")
        adapter, curves = distill(model, pool, cfg, cfg_max, sampler.num_sampling_steps,
                                  clip_x0, generator, log)
    finally:
        model.train(was_training)
    info = {"pool_s": pool_s, "distill_s": curves["seconds"], "pool_tokens": pool["z"].shape[0],
            "final_cfg_loss": _tail_mean(curves["cfg"]), "final_msc_loss": _tail_mean(curves["msc"]),
            "cfg_max": cfg_max, "student_steps": sampler.num_sampling_steps}
    adapter.info = info
    return adapter, info


def _tail_mean(values: list[float], frac: float = 0.1) -> Optional[float]:
    if not values:
        return None
    tail = values[-max(1, int(len(values) * frac)):]
    return sum(tail) / len(tail)
