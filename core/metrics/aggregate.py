"""VBench-I2V aggregation: the nine dimension scores -> Quality Score, I2V Score and Total Score.

Follows VBench's `scripts/constant.py` + `scripts/cal_i2v_final_score.py`
(github.com/Vchitect/VBench): every dimension is min-max normalised with fixed
empirical bounds, multiplied by its weight, and summed per group; Quality = sum / 5.5 over the six
quality dimensions, I2V = sum / 2.1 over the three video-condition dimensions, Total = their mean.

One deliberate difference: VBench's script fills a missing dimension with 0, which silently tanks
the Total. Here a group whose dimensions are not all present has no score, and `aggregate` refuses
(MissingDimensionError names the missing keys). temporal_flickering is a VBench-I2V dimension but
not part of the leaderboard aggregate; it is accepted and ignored.
"""

from __future__ import annotations

from typing import Dict, Mapping, NamedTuple, Optional


class Dimension(NamedTuple):
    key: str  # VBench's dimension key (eval_results.json, vbench2_i2v_full_info.json)
    name: str  # leaderboard column name
    min: float  # empirical bounds of the score as a fraction in [0, 1]
    max: float
    weight: float
    group: str  # "i2v" or "quality"


DIMENSIONS = (
    Dimension("i2v_subject", "Video-Image Subject Consistency", 0.1462, 1.0, 1.0, "i2v"),
    Dimension("i2v_background", "Video-Image Background Consistency", 0.2615, 1.0, 1.0, "i2v"),
    Dimension("camera_motion", "Video-Text Camera Motion", 0.0, 1.0, 0.1, "i2v"),
    Dimension("subject_consistency", "Subject Consistency", 0.1462, 1.0, 1.0, "quality"),
    Dimension("background_consistency", "Background Consistency", 0.2615, 1.0, 1.0, "quality"),
    Dimension("motion_smoothness", "Motion Smoothness", 0.7060, 0.9975, 1.0, "quality"),
    Dimension("dynamic_degree", "Dynamic Degree", 0.0, 1.0, 0.5, "quality"),
    Dimension("aesthetic_quality", "Aesthetic Quality", 0.0, 1.0, 1.0, "quality"),
    Dimension("imaging_quality", "Imaging Quality", 0.0, 1.0, 1.0, "quality"),
)
DIMENSION_KEYS = tuple(d.key for d in DIMENSIONS)
BY_KEY = {d.key: d for d in DIMENSIONS}
GROUPS = ("quality", "i2v")
GROUP_WEIGHTS = {"quality": 1.0, "i2v": 1.0}  # I2V_QUALITY_WEIGHT, I2V_WEIGHT
NOT_AGGREGATED = ("temporal_flickering",)  # valid VBench-I2V dimensions outside the aggregate
UNITS = ("percent", "fraction")


class MissingDimensionError(ValueError):
    """A score needs dimensions that were not given; `missing` lists their keys."""

    def __init__(self, what: str, missing: list) -> None:
        self.missing = list(missing)
        super().__init__(f"cannot compute the {what}: missing dimension(s) {', '.join(missing)} "
                         "(VBench would count them as 0; give all nine, see DIMENSION_KEYS)")


def to_fractions(values: Mapping[str, Optional[float]], unit: str = "percent") -> Dict[str, float]:
    """Check keys and ranges; return {dimension key: score in [0, 1]} without None entries."""
    if unit not in UNITS:
        raise ValueError(f"unit={unit!r}: choose one of {UNITS}")
    unknown = sorted(set(values) - set(DIMENSION_KEYS) - set(NOT_AGGREGATED))
    if unknown:
        raise ValueError(f"unknown VBench-I2V dimension key(s) {unknown}; valid keys: "
                         f"{', '.join(DIMENSION_KEYS + NOT_AGGREGATED)}")
    scale, top = (100.0, 100.0) if unit == "percent" else (1.0, 1.0)
    out = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key}={value!r} is not a number")
        if not 0.0 <= value <= top:
            hint = " (percent? use unit='percent')" if unit == "fraction" else ""
            raise ValueError(f"{key}={value} is outside [0, {top:g}] for unit={unit!r}{hint}")
        out[key] = float(value) / scale
    if unit == "percent" and out and all(v <= 0.01 for v in out.values()):
        raise ValueError("every score is <= 1 %: these look like fractions; use unit='fraction'")
    return out


def normalised(key: str, fraction: float) -> float:
    """(score - min) / (max - min) times the dimension's weight, as VBench computes it."""
    d = BY_KEY[key]
    return (fraction - d.min) / (d.max - d.min) * d.weight


def group_score(fractions: Mapping[str, float], group: str) -> Optional[float]:
    """Weighted mean of a group's normalised dimensions as a fraction; None if one is missing."""
    dims = [d for d in DIMENSIONS if d.group == group]
    if any(d.key not in fractions for d in dims):
        return None
    return sum(normalised(d.key, fractions[d.key]) for d in dims) / sum(d.weight for d in dims)


def partial_scores(values: Mapping[str, Optional[float]], unit: str = "percent") -> dict:
    """{quality, i2v, total} in percent; a score is None when one of its dimensions is missing."""
    fractions = to_fractions(values, unit)
    scores = {g: group_score(fractions, g) for g in GROUPS}
    total = None
    if all(scores[g] is not None for g in GROUPS):
        total = sum(GROUP_WEIGHTS[g] * scores[g] for g in GROUPS) / sum(GROUP_WEIGHTS.values())
    out = {g: None if s is None else 100.0 * s for g, s in scores.items()}
    out["total"] = None if total is None else 100.0 * total
    return out


def missing_dimensions(values: Mapping[str, Optional[float]]) -> list:
    """The aggregated dimension keys that are absent (or None) in `values`, in table order."""
    return [k for k in DIMENSION_KEYS if values.get(k) is None]


def aggregate(values: Mapping[str, Optional[float]], unit: str = "percent") -> dict:
    """Quality, I2V and Total Score in percent from all nine dimensions; refuses partial input."""
    missing = missing_dimensions(values)
    if missing:
        raise MissingDimensionError("VBench-I2V Total Score", missing)
    return partial_scores(values, unit)
