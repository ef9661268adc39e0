"""SunConfig: everything `make sun` trains and evaluates, as one plain dataclass tree.

`SunConfig()` is the full testbed (about 30 min on 2 CPU cores); `SunConfig.quick()` shrinks
every size for tests and development (a couple of minutes) without changing the pipeline.

Cost is counted in UNet evaluations (NFE): a CFG step takes CFG_PASSES (positive and negative),
a SUN step SUN_PASSES (one pass on [positive | negative]). The equal-cost baseline is the teacher
with CFG at `equal_cost_steps` = student_steps x SUN_PASSES / CFG_PASSES steps (2 for SUN's 4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.sun.distill import DistillConfig
from core.sun.teacher import TeacherConfig

CFG_PASSES = 2  # UNet evaluations per CFG step: positive and negative prompt
SUN_PASSES = 1  # UNet evaluations per SUN step: one pass on the joint context

# Adapter variants trained per seed: name -> DistillConfig overrides (the paper's ablations).
VARIANTS = {
    "sun": {},
    "sun_no_msc": {"lambda_msc": 0.0},
    "sun_no_attn_norm": {"attn_norm": "none"},
}


@dataclass(kw_only=True)
class SunConfig:
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    classifier_steps: int = 500
    seeds: tuple[int, ...] = (0, 1, 2)  # adapter training, trajectory pool and evaluation noise
    base_seed: int = 0  # teacher, style fine-tune and classifier: trained once, like SD1.5
    num_prompt: int = 128  # prompt-suite size per seed (same for every method: FD depends on N)
    num_negative: int = 64  # negative-suite size per seed
    variants: tuple[str, ...] = tuple(VARIANTS)
    table: str = "sun"
    ablation: str = "sun"
    preset: str = "full"

    def __post_init__(self):
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or "sun" not in self.variants:
            raise ValueError(f"variants {self.variants}: must include 'sun' and only use "
                             f"{tuple(VARIANTS)}")
        if len(set(self.seeds)) != len(self.seeds) or not self.seeds:
            raise ValueError(f"seeds {self.seeds}: give one or more distinct seeds")
        if self.num_prompt < 8 or self.num_negative < 4:
            raise ValueError("num_prompt >= 8 and num_negative >= 4 (Frechet distances and "
                             "rates need samples)")
        _ = self.equal_cost_steps  # an odd student_steps fails here, not after the teacher trained

    @property
    def equal_cost_steps(self) -> int:
        """DPM-Solver++ steps of the teacher with CFG at SUN's cost in UNet evaluations."""
        cost = self.distill.student_steps * SUN_PASSES
        if cost % CFG_PASSES or cost < CFG_PASSES:
            raise ValueError(
                f"distill.student_steps={self.distill.student_steps}: the equal-cost CFG baseline "
                f"takes student_steps x {SUN_PASSES} pass / {CFG_PASSES} passes per CFG step = "
                f"{cost / CFG_PASSES:g} steps, which must be an integer >= 1 (use an even "
                "student_steps)")
        return cost // CFG_PASSES

    @classmethod
    def quick(cls, **overrides) -> "SunConfig":
        """Every stage shrunk to seconds; the same code paths as the full run."""
        kw = dict(
            teacher=TeacherConfig(num_steps=60, batch_size=32, style_steps=15, warmup=5),
            distill=DistillConfig(pool_size=24, num_steps=12, batch_cfg=8, batch_msc=4),
            classifier_steps=40, seeds=(0, 1), num_prompt=24, num_negative=12, preset="quick")
        kw.update(overrides)
        return cls(**kw)
