"""Each ablation's table as its YAML declares it: the `table_spec` block of
ablations/conf/ablation/<name>.yaml, the one place a table's metadata lives (a plain YAML read,
no Hydra). Every key but `variant` is optional:

    table_spec:
      variant: "w{model.temporal_window}"  # the line label: an f-string template over the run
                                           # config, filled in by core/config.py at compose time
      baseline: "off"        # val_curve tables: the line of same-quality compute (quote on/off)
      paired: ddpm100_cfg    # speedup and relative change against this line, same seed
      drift: true            # per-frame drift columns and a _drift figure
      factor: attn           # the column labelling older rows written without config.variant
      per_run: true          # one line per row, nothing averaged or plotted (an Optuna study)
      samples: {causal: causal rollout, full: full attention}  # samples_<table>.png: line -> title
      claim:                 # the reading decided by a paired t-test (readings.py)
        arm: causal          # the line the claim is about
        reference: full      # the line it is compared with
        metrics: [mse_mean, dist_energy]  # row metrics or make tables' derived metrics
        lower_is_better: true
        text: temporal causality beats full attention
      targets:               # pass/fail targets, each decided from per-seed values (readings.py)
        - {arms: [a, b], metric: sampling_speedup, at_least: 8, text: ">= 8x faster"}
        - {arms: [a], reference: r, metric: sample_spread, ratio_at_least: 0.9, text: ...}
        - {arms: [a], reference: r, metric: syn_dynamic_degree, within_noise: 2, text: ...}

A target's rule is one of: at_least (the arm's per-seed values), ratio_at_least (the per-seed
ratio arm / reference) and within_noise (the per-seed difference arm - reference against
+- that many standard deviations of the reference's values over seeds).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import yaml

ABLATION_DIR = Path(__file__).resolve().parents[2] / "ablations" / "conf" / "ablation"
BLOCK = "table_spec"
EXAMPLE = f'{BLOCK}: {{variant: "{{model.attn}}"}}'


class Claim(NamedTuple):
    claim: str  # the arm (line label) the claim is about (`arm` in the YAML)
    reference: str  # the arm it is compared with
    metrics: tuple[str, ...]  # primary metric(s), each read separately
    lower_is_better: bool  # the claimed direction: the claim arm's value is lower (or higher)
    text: str  # the claim in words


class Target(NamedTuple):
    arm: str  # the line the target is about
    metric: str
    rule: str  # one of TARGET_RULES
    bound: float  # the threshold (within_noise: the multiple of the reference's seed std)
    text: str
    reference: str | None = None  # ratio_at_least, within_noise: the line compared with


TARGET_RULES = ("at_least", "ratio_at_least", "within_noise")
TARGET_KEYS = {"arms": list, "metric": str, "text": str, "reference": str,
               **{rule: (int, float) for rule in TARGET_RULES}}


@dataclass(frozen=True)
class TableSpec:
    name: str
    variant: str = ""  # empty for tables without an ablation YAML (bench, optuna trials, ...)
    baseline: str | None = None
    paired: str | None = None
    drift: bool = False
    factor: str | None = None
    per_run: bool = False
    samples: dict[str, str] = field(default_factory=dict)
    claim: Claim | None = None
    targets: tuple[Target, ...] = ()


KEYS = {"variant": str, "baseline": str, "paired": str, "drift": bool, "factor": str,
        "per_run": bool, "samples": dict, "claim": dict, "targets": list}
CLAIM_KEYS = {"arm": str, "reference": str, "metrics": list, "lower_is_better": bool, "text": str}


def _checked(values: dict, types: dict, where: str) -> dict:
    """`values` with each key of `types` of its type; unknown keys are errors."""
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; choose from {sorted(types)}")
    for key, value in values.items():
        if not isinstance(value, types[key]):
            hint = " (YAML reads on/off/yes/no as booleans: quote it)" if isinstance(
                value, bool) else ""
            raise ValueError(f"{where}: {key}={value!r} must be a {types[key].__name__}{hint}")
    return values


def parse(name: str, block, where: str) -> TableSpec:
    """The TableSpec of table `name` from its YAML `table_spec` block (`where` names the file)."""
    if not isinstance(block, dict) or not isinstance(block.get("variant"), str):
        raise ValueError(f"{where}: no {BLOCK} block with a `variant` rule; every ablation "
                         f"declares its table, at least `{EXAMPLE}` (see bench/tables/spec.py)")
    spec = dict(_checked(block, KEYS, f"{where} {BLOCK}"))
    if "claim" in spec:
        claim = _checked(spec["claim"], CLAIM_KEYS, f"{where} {BLOCK}.claim")
        missing = sorted(set(CLAIM_KEYS) - set(claim))
        if missing:
            raise ValueError(f"{where} {BLOCK}.claim: missing {missing} (see bench/tables/spec.py)")
        spec["claim"] = Claim(claim["arm"], claim["reference"], tuple(claim["metrics"]),
                              claim["lower_is_better"], claim["text"])
    if "samples" in spec:
        spec["samples"] = {str(k): str(v) for k, v in spec["samples"].items()}
    if "targets" in spec:
        spec["targets"] = tuple(t for i, block in enumerate(spec["targets"])
                                for t in _targets(block, f"{where} {BLOCK}.targets[{i}]"))
    return TableSpec(name=name, **spec)


def _targets(block, where: str) -> list[Target]:
    """The Targets of one `targets` entry (one per arm)."""
    if not isinstance(block, dict):
        raise ValueError(f"{where}: a target is a mapping (see bench/tables/spec.py)")
    block = _checked(block, TARGET_KEYS, where)
    rules = [r for r in TARGET_RULES if r in block]
    missing = [k for k in ("arms", "metric", "text") if k not in block]
    if missing or len(rules) != 1:
        raise ValueError(f"{where}: needs arms, metric, text and exactly one rule of "
                         f"{TARGET_RULES} (missing {missing}, rules {rules})")
    rule = rules[0]
    if rule != "at_least" and "reference" not in block:
        raise ValueError(f"{where}: {rule} compares with a reference line: add `reference`")
    return [Target(str(arm), block["metric"], rule, float(block[rule]), block["text"],
                   block.get("reference")) for arm in block["arms"]]


@functools.lru_cache(maxsize=None)
def load(directory: Path = ABLATION_DIR) -> dict[str, TableSpec]:
    """table name -> TableSpec of every ablation YAML in `directory`, by table name."""
    specs: dict[str, TableSpec] = {}
    for path in sorted(Path(directory).glob("*.yaml")):
        config = yaml.safe_load(path.read_text()) or {}
        name = str(config.get("table") or path.stem)
        if name in specs:
            raise ValueError(f"{path}: table {name!r} is already declared by another ablation "
                             "YAML; give each table one file")
        specs[name] = parse(name, config.get(BLOCK), str(path))
    return specs


def spec_for(name: str) -> TableSpec:
    """The spec of table `name`; an empty one for tables no ablation declares."""
    return load().get(name) or TableSpec(name=name)
