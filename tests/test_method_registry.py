"""Every registered method meets the same contract: the registry is the only place
that knows a method, its module is torch-free, its config round-trips, and it
trains through the real worker with the headline metrics its spec promises."""

from __future__ import annotations

import ast
import io
import json
import math
import re
import tokenize
from pathlib import Path

import pytest

from backend.methods import GROUP_ORDER, METHOD_MODULES, all_methods, get_method, grouped_methods, method_keys
from backend.methods.spec import DATA_KINDS, ROLE_COLOURS
from backend.runs.config import check, load_yaml, save_yaml
from tests.conftest import tiny_run_config

ROOT = Path(__file__).resolve().parent.parent
SPECS = all_methods()
KEYS = [spec.key for spec in SPECS]


def test_registry_lists_unique_keys_in_known_groups():
    assert len(set(KEYS)) == len(KEYS) == len(METHOD_MODULES)
    assert [s.key for _group, specs in grouped_methods() for s in specs] == sorted(
        KEYS, key=lambda k: GROUP_ORDER.index(get_method(k).group))
    assert get_method("DPO") is get_method("dpo")
    with pytest.raises(KeyError):
        get_method("no_such_method")


@pytest.mark.parametrize("spec", SPECS, ids=KEYS)
def test_spec_is_complete(spec):
    assert spec.group in GROUP_ORDER
    assert spec.summary and "\n" not in spec.summary and len(spec.summary) <= 110, spec.summary
    assert spec.config().method == spec.key
    assert set(spec.headline) <= set(spec.expected_keys), "the CLI line would show keys the method never logs"
    assert {k for k, _label in spec.summary_metrics} <= set(spec.expected_keys)
    assert all(m.role in ROLE_COLOURS for m in spec.metrics)
    assert spec.data.accepts <= set(DATA_KINDS) and spec.data.needs
    for kind in set(DATA_KINDS) - spec.data.accepts:
        reason = spec.data.refusal(kind, spec.label, "Some format")
        assert spec.label in reason and "Some format" in reason and kind in spec.data.refusals, kind
    assert spec.memory.sequences_per_example >= 1
    if spec.memory.reference_skip_setting:
        assert isinstance(getattr(spec.config(), spec.memory.reference_skip_setting), bool)
    from backend.data.loading import CONVERSIONS

    assert set(spec.data.convert.values()) <= set(CONVERSIONS)


@pytest.mark.parametrize("spec", SPECS, ids=KEYS)
def test_config_validates_and_round_trips_yaml(spec, tmp_path):
    cfg = check(spec.config(max_steps=3, lora_r=4))
    again = load_yaml(save_yaml(cfg, tmp_path / "config.yaml"))
    assert again == cfg and type(again) is spec.config


def _method_mentions(path: Path, keys: set[str], class_names: set[str]) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.lower() in keys:
            found.append(f"{node.value!r} (line {node.lineno})")
        elif isinstance(node, (ast.Name, ast.Attribute, ast.alias)):
            name = getattr(node, "id", None) or getattr(node, "attr", None) or getattr(node, "name", "")
            if name.split(".")[-1] in class_names:
                found.append(f"{name} (line {getattr(node, 'lineno', '?')})")
        elif isinstance(node, ast.ImportFrom) and re.match(r"backend\.methods\.\w+$", node.module or ""):
            if node.module.rsplit(".", 1)[-1] in keys:
                found.append(f"import from {node.module} (line {node.lineno})")
    return found


def test_no_module_outside_the_registry_names_a_method():
    keys = set(KEYS)
    class_names = {spec.config.__name__ for spec in SPECS}
    offenders = {}
    for folder in ("backend", "app", "widgets"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("backend/methods/"):
                continue
            found = _method_mentions(path, keys, class_names)
            if found:
                offenders[rel] = found
    assert offenders == {}, "name methods through backend.methods instead: " + repr(offenders)


def _named_in_words(path: Path, words: re.Pattern) -> list[str]:
    """Method names in the comments, docstrings and strings of ``path`` (help texts, messages)."""
    found = []
    for token in tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline):
        if token.type in (tokenize.COMMENT, tokenize.STRING):
            found += [f"{m.group(0)!r} (line {token.start[0]})" for m in words.finditer(token.string)]
    return found


def _method_words() -> re.Pattern:
    names = {spec.key for spec in SPECS} | {spec.label for spec in SPECS if " " not in spec.label}
    alternatives = "|".join(sorted(map(re.escape, names), key=len, reverse=True))
    return re.compile(rf"(?<![\w/.-])({alternatives})(?![\w]|-\d)", re.IGNORECASE)


def test_no_comment_help_text_or_message_outside_the_registry_names_a_method():
    """Not even in words: a comment or a help text that names a method goes stale when the
    method changes, and a message naming one is wrong for every other."""
    words = _method_words()
    offenders = {}
    for folder in ("backend", "app", "widgets"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if not rel.startswith("backend/methods/"):
                found = _named_in_words(path, words)
                if found:
                    offenders[rel] = found
    assert offenders == {}, "speak of the spec's traits instead: " + repr(offenders)


def test_the_mention_check_catches_a_method_named_outside(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(f"x = {KEYS[0]!r}\nfrom backend.methods.{KEYS[0]} import {SPECS[0].config.__name__}\n")
    found = _method_mentions(sample, set(KEYS), {SPECS[0].config.__name__})
    assert len(found) >= 3, found
    sample.write_text(f"# a {SPECS[1].label} run logs this\nx = 'works for {SPECS[1].key}'\ny = 'x.{SPECS[1].key}'\n")
    assert len(_named_in_words(sample, _method_words())) == 2


def test_every_method_has_its_own_test_file_and_the_guide_names_the_steps():
    missing = [k for k in KEYS if not (ROOT / "tests" / "methods" / f"test_{k}.py").is_file()]
    assert missing == [], f"registered methods without tests/methods/test_<key>.py: {missing}"
    guide = (ROOT / "docs" / "adding_a_method.md").read_text(encoding="utf-8")
    for step in ("backend/methods/", "METHOD_MODULES", "SPEC", "tests/methods/test_", "MethodSpec",
                 "tests/test_method_registry.py"):
        assert step in guide, step
    import dataclasses

    from backend.methods.spec import DataNeed, MemoryTraits, MethodSpec

    # Every field a method module can fill is explained: a field added to the spec without a word
    # in the guide fails here.
    for cls in (MethodSpec, DataNeed, MemoryTraits):
        unexplained = [f.name for f in dataclasses.fields(cls)
                       if f"`{f.name}`" not in guide and f"`{f.name}(" not in guide]
        assert unexplained == [], f"docs/adding_a_method.md says nothing of {cls.__name__}: {unexplained}"


def test_alignstudio_methods_lines_every_title_up_past_the_longest_key(capsys):
    from backend.cli.main import main

    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    column = max(map(len, KEYS)) + 3
    for spec in SPECS:
        title = next(line for line in lines if line.startswith(f"  {spec.key} "))
        assert title.index(spec.title) == column, title
        assert lines[lines.index(title) + 1] == " " * column + spec.summary


# ------------------------------------------------------------- conformance
# The fixture that provides each kind of other input a method may require (MethodSpec.requires).
REQUIRED_INPUT_FIXTURES = {"reward_model": "tiny_reward_model_run"}


def _conformance_data(spec, easy_preferences: Path, tmp_path: Path) -> Path:
    """Pairs where the method accepts them (as is or converted); otherwise a small file of its own kind."""
    if "pairs" in spec.data.accepts:
        return easy_preferences
    rows = [{"prompt": f"Question {i}: can you help me with task {i % 7}?"} for i in range(32)]
    if "unpaired" in spec.data.accepts:
        rows = [dict(r, completion=" Sure, happy to help." if i % 2 else " No.", label=bool(i % 2))
                for i, r in enumerate(rows)]
    elif "single" in spec.data.accepts:
        rows = [dict(r, completion=" Sure, happy to help.") for r in rows]
    path = tmp_path / f"conformance_{spec.key}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_every_required_input_has_a_conformance_fixture():
    missing = {f for spec in SPECS for f in spec.requires} - set(REQUIRED_INPUT_FIXTURES)
    assert missing == set(), f"add a fixture for these required inputs to REQUIRED_INPUT_FIXTURES: {missing}"
    for spec in SPECS:
        for name in spec.requires:
            assert hasattr(spec.config(), name), f"{spec.key} requires {name!r}, which its config lacks"


@pytest.mark.parametrize("spec", [s for s in SPECS if s.requires], ids=[s.key for s in SPECS if s.requires])
def test_a_launch_without_the_required_inputs_is_refused_before_anything_loads(spec):
    """The defaults validate, since no one can name the user's reward model for them; the
    preflight that the window and the CLI run before a launch asks for it by setting."""
    from backend.runs.preflight import input_problems
    from backend.runs.config import default_config, validate

    cfg = default_config(spec.key)
    assert validate(cfg) == []
    problems = input_problems(cfg)
    assert problems and {name for name, _ in problems} <= set(spec.requires), problems


def test_a_method_the_data_cannot_feed_is_refused_before_a_run_folder_exists(tmp_path, studio_home):
    """`alignstudio train --method M` on data M cannot use: the method's own reason, no run folder
    (it was made, and the worker refused the data after loading the model)."""
    from backend.cli.main import main
    from backend.data.loading import load_dataset_file
    from backend.runs.preflight import run_preflight
    from backend.runs.config import default_config

    data = tmp_path / "thumbs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{i}?", "completion": f"A{i}.", "label": bool(i % 2)}) + "\n"
                            for i in range(8)), encoding="utf-8")
    usable = load_dataset_file(data).supported_methods
    refused = [s for s in SPECS if s.key not in usable]
    assert refused and usable
    for spec in refused:
        problems = dict(run_preflight(default_config(spec.key, data_path=str(data)), runs_root=tmp_path / "runs"))
        assert problems["method"].startswith(f"thumbs.jsonl: {spec.label}"), problems
    for key in usable:
        assert "method" not in dict(run_preflight(default_config(key, data_path=str(data)), runs_root=tmp_path / "runs"))
    assert main(["train", "--method", refused[0].key, "--data", str(data), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS, ids=KEYS)
def test_method_trains_through_the_worker(spec, tiny_model_dir, easy_preferences, studio_home, tmp_path,
                                          request):
    from backend.core.events import RunFinished, TrainLog
    from backend.training.client import run_to_completion

    inputs = {name: str(request.getfixturevalue(REQUIRED_INPUT_FIXTURES[name])) for name in spec.requires}
    data = _conformance_data(spec, easy_preferences, tmp_path)
    cfg = tiny_run_config(spec.key, tiny_model_dir, data, max_steps=2, **inputs)
    run, events = run_to_completion(cfg, timeout=300)
    assert isinstance(events[-1], RunFinished), events[-1]
    logs = [e for e in events if isinstance(e, TrainLog)]
    assert logs and set(spec.headline) <= set(logs[-1].metrics), (spec.headline, sorted(logs[-1].metrics))
    assert all(math.isfinite(e.metrics["loss"]) for e in logs if "loss" in e.metrics)

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if spec.model_head == "score":
        base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1, dtype=torch.float32)
    else:
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, run.run_dir / "adapter")
    assert any("lora_B" in n for n, _p in model.named_parameters())
