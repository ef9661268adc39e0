"""One owner per table: each ablation YAML declares its table (`table_spec`: label rule, baseline
and paired lines, drift, claim, ...), `make tables` reads it from there, and core/ names no
ablation."""

import ast
import itertools
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bench.tables import spec
from core.config import ConfigError, RunConfig

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "ablations" / "conf"
from ablations import run as run_app  # noqa: E402,F401  (registers the schemas)

# String literals in core/ that spell an ablation's name but mean something else.
NOT_ABLATIONS = {
    ("core/config.py", "rope"): "a model.pos_emb value",
    ("core/model.py", "rope"): "a model.pos_emb value",
    ("core/config.py", "attn"): "RunConfig's default ablation/table: the default run's table",
    ("core/results.py", "attn"): "the flat row column copied from model.attn",
    ("core/sun/head_adapter.py", "sun_head"): "the model attribute an installed adapter lives in",
}
RUN_LABELS = ("ablation", "table")  # what core must never branch on


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _arm_labels(path: Path) -> set[str]:
    """The line labels the sweep of one ablation YAML produces (every combination, no seeds)."""
    params = yaml.safe_load(path.read_text())["hydra"]["sweeper"]["params"]
    if path.stem == "optuna":  # intervals, not arms: every trial is one line
        axes = []
    else:
        axes = [[f"{k}={v}" for v in str(values).split(",")]
                for k, values in params.items() if k != "seed"]
    return {OmegaConf.to_object(_compose([f"ablation={path.stem}", *arm])).variant
            for arm in itertools.product(*axes)}


def test_every_ablation_yaml_declares_a_complete_table_spec():
    declared = spec.load()
    paths = sorted((CONF / "ablation").glob("*.yaml"))
    assert sorted(declared) == [p.stem for p in paths]
    for path in paths:
        s = declared[path.stem]
        assert s.variant, path.name
        labels = _arm_labels(path)
        named = [s.baseline, s.paired, *s.samples]
        if s.claim:
            named += [s.claim.claim, s.claim.reference]
            assert s.claim.metrics and s.claim.text, path.name
        else:
            assert path.stem == "optuna", f"{path.name}: every ablation table states its claim"
        missing = {n for n in named if n} - labels
        assert not missing, f"{path.name}: table_spec names lines {missing} no arm produces " \
                            f"(arms give {sorted(labels)})"
    assert _arm_labels(CONF / "ablation" / "optuna.yaml") == {"trial"}


def test_table_spec_errors_name_the_fix(tmp_path):
    (tmp_path / "bare.yaml").write_text("ablation: bare\ntable: bare\n")
    with pytest.raises(ValueError, match=r"bare\.yaml: no table_spec block with a `variant`"):
        spec.load(tmp_path)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['basline'\]"):
        spec.parse("x", {"variant": "{model.attn}", "basline": "off"}, "x.yaml")
    with pytest.raises(ValueError, match="quote it"):  # YAML reads a bare `off` as False
        spec.parse("x", yaml.safe_load("variant: v\nbaseline: off"), "x.yaml")
    with pytest.raises(ValueError, match=r"claim: missing \['text'\]"):
        spec.parse("x", {"variant": "v", "claim": {"arm": "a", "reference": "b",
                                                    "metrics": ["m"], "lower_is_better": True}},
                   "x.yaml")
    assert spec.spec_for("kv_cache") == spec.TableSpec(name="kv_cache")  # undeclared: no extras


def test_label_rules_read_the_config_and_nothing_else():
    def label(rule, **kw):
        return RunConfig(table_spec={"variant": rule}, **kw).variant

    assert label("iter{sampler.num_iter}_cfg{sampler.cfg_scale:g}") == "iter8_cfg1"
    assert label("{'on' if len(train.frame_stages) > 1 else 'off'}") == "off"
    assert RunConfig(table_spec={"variant": "{model.attn}"}, variant="mine").variant == "mine"
    for rule, why in [("{__import__('os').getcwd()}", "not allowed"),
                      ("{model.__class__}", "not allowed"), ("{open('x')}", "not allowed"),
                      ("{model.atn}", "no attribute 'atn'"), ("{model.attn", "expecting '}'")]:
        with pytest.raises(ConfigError, match=f"table_spec.variant of .*{why}"):
            label(rule)
    with pytest.raises(ConfigError, match="give the table's label rule there"):
        RunConfig(table_spec={})


def _literals(tree):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _is_text(node) -> bool:
    """A string literal, or a tuple/list/set of them."""
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return bool(node.elts) and all(_is_text(e) for e in node.elts)
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _names_run_label(node, others) -> bool:
    """Does an operand read which ablation/table a run belongs to (cfg.ablation, row["table"],
    row.get("table"); a bare `ablation`/`table` variable only when compared with text)?"""
    if isinstance(node, ast.Attribute):
        return node.attr in RUN_LABELS
    if isinstance(node, ast.Name):
        return node.id in RUN_LABELS and any(_is_text(o) for o in others)
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value in RUN_LABELS
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr == "get" and any(
            isinstance(a, ast.Constant) and a.value in RUN_LABELS for a in node.args)
    return False


def test_core_names_no_ablation():
    """Table knowledge lives in the ablation YAMLs: core/ neither spells an ablation's name (but
    for the NOT_ABLATIONS words) nor branches on which ablation or table a run belongs to."""
    stems = {p.stem for p in (CONF / "ablation").glob("*.yaml")}
    found, branches = [], []
    for path in sorted((ROOT / "core").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text())
        found += [f"{rel}:{n.lineno} {n.value!r}" for n in _literals(tree)
                  if n.value in stems and (rel, n.value) not in NOT_ABLATIONS]
        branches += [f"{rel}:{n.lineno}" for n in ast.walk(tree) if isinstance(n, ast.Compare)
                     and any(_names_run_label(x, [n.left, *n.comparators])
                             for x in [n.left, *n.comparators])]
    assert not found, f"ablation names in core/ (declare it in the ablation's table_spec): {found}"
    assert not branches, f"core/ branches on a run's ablation/table: {branches}"


def test_every_model_and_baseline_row_of_the_results_table_stores_its_variant():
    """Rows are labelled by their stored variant (the two oldest attn rows were migrated once)."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "paper_tables" / "runs.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    unlabelled = [r["run_id"] for r in rows
                  if r.get("kind") in ("train", "baseline") and not r.get("variant")]
    assert not unlabelled, f"rows without a variant: {unlabelled[:5]}"
