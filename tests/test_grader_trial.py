"""Try the graders: the worker writes a few base-model completions on the tiny model and
every grader scores them; broken, constant and abstaining graders are flagged; the
reward file runs only when the launch granted it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from backend.graders.trial import (
    Grader,
    TrialFailed,
    TrialResult,
    findings,
    score_all,
    trial_event_from_json,
    weighted_rewards,
)

ROOT = Path(__file__).resolve().parent.parent

REWARD_FILE = '''
import pathlib
pathlib.Path(__file__).with_name("ran.txt").write_text("ran")


def mentions_a_digit(completions, **kwargs):
    return [1.0 if any(ch.isdigit() for ch in c) else 0.0 for c in completions]


def fussy(completions, answer, **kwargs):
    if any(a == "4" for a in answer):
        raise ValueError("cannot grade the question whose answer is 4")
    return [0.5 for _ in completions]
'''


def _fake(name, func, weight=1.0):
    return Grader(name, name, weight, func=func)


def test_findings_flag_errors_constants_abstentions_and_partial_failures():
    def some_fail(prompts, completions, **kw):
        if any("bad" in c for c in completions):
            raise ValueError("bad sample")
        return [len(c) / 10 for c in completions]

    graders = [_fake("varies", lambda prompts, completions, **kw: [len(c) for c in completions]),
               _fake("same", lambda prompts, completions, **kw: [1.0] * len(completions), weight=0.5),
               _fake("abstains", lambda prompts, completions, **kw: [None] * len(completions)),
               _fake("some_fail", some_fail),
               Grader("broken", "broken", 1.0, error="grader broken: cannot import")]
    completions = ["ok", "bad one", "fine"]
    scored = score_all(graders, ["p"] * 3, completions, [[1], [2], [3]], {"answer": ["1", "2", "3"]})
    found = {f["name"]: f for f in findings(graders, scored)}
    assert found["varies"]["finding"] == "" and scored.scores["varies"] == [2.0, 7.0, 4.0]
    assert found["same"]["finding"] == "constant" and "every completion 1" in found["same"]["text"]
    assert found["abstains"]["finding"] == "abstains"
    assert found["some_fail"]["finding"] == "some_errors" and "1 of 3" in found["some_fail"]["text"]
    assert scored.scores["some_fail"] == [0.2, None, 0.4]  # the others still scored
    assert found["broken"]["finding"] == "error" and "cannot import" in found["broken"]["text"]
    totals = weighted_rewards(graders, scored, 3)
    assert totals[0] == pytest.approx(2.0 + 0.5 + 0.2)
    assert totals[1] == pytest.approx(7.0 + 0.5)  # the failed grader does not count


def _write_prompts(path: Path) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(1, 7):
            fh.write(json.dumps({"prompt": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n")
    return path


def _run_trial(cfg, tmp_path):
    """The worker as the dialog starts it, with the launch's grants in its environment."""
    from backend.graders.trial import trial_launch

    command, env = trial_launch(cfg, tmp_path, prompts=3, completions=2)
    assert "ALIGNSTUDIO_GRANTS" in env  # the config's reward file, allowed by the user in this process
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
                          stdin=subprocess.DEVNULL)
    events = [trial_event_from_json(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc, events


@pytest.mark.slow
def test_the_worker_scores_base_model_completions_and_runs_the_file_only_when_granted(tiny_model_dir, tmp_path):
    from backend.methods import all_methods
    from backend.runs.config import default_config

    reward_file = tmp_path / "rewards.py"
    reward_file.write_text(REWARD_FILE)
    spec = next(s for s in all_methods() if s.samples and "graders" in s.config.__dataclass_fields__)
    graders = [{"grader": "numeric_match", "weight": 1.0, "column": "answer"},
               {"grader": "regex_match", "weight": 0.5, "pattern": "xyzzy-never-written"},
               {"grader": "file:mentions_a_digit", "weight": 1.0}, {"grader": "file:fussy", "weight": 1.0}]
    cfg = default_config(spec.key, model=str(tiny_model_dir), data_path=str(_write_prompts(tmp_path / "p.jsonl")),
                         data_format="prompt_only", graders=graders, reward_file=str(reward_file),
                         allow_reward_code=True,
                         max_completion_length=8, num_generations=2, quantization="none")

    proc, events = _run_trial(cfg, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = events[-1]
    assert isinstance(result, TrialResult)
    assert len(result.rows) == 6 and {r["prompt_index"] for r in result.rows} == {0, 1, 2}
    assert result.rows[0]["prompt"].startswith("What is") and all(r["completion"] for r in result.rows)
    by_name = {g["name"]: g for g in result.graders}
    assert list(by_name) == ["numeric_match", "regex_match", "mentions_a_digit", "fussy"]
    assert by_name["regex_match"]["finding"] == "constant"  # a pattern no completion holds: all 0
    # Prompts are picked across the file (rows 1, 3 and 5: answers 2, 4 and 6); the fussy function
    # fails on the second prompt's completions only, and still scores the others.
    assert [r["prompt"] for r in result.rows[::2]] == ["What is 1 + 1?", "What is 3 + 1?", "What is 5 + 1?"]
    assert [bool(r["errors"].get("fussy")) for r in result.rows] == [False, False, True, True, False, False]
    assert "answer is 4" in result.rows[2]["errors"]["fussy"] and result.rows[0]["scores"]["fussy"] == 0.5
    assert by_name["fussy"]["finding"] == "some_errors"
    assert (tmp_path / "ran.txt").exists()
    assert all(r["scores"]["numeric_match"] in (0.0, 1.0) for r in result.rows)



def test_without_the_launch_grant_the_file_graders_fail_by_name_and_the_file_never_runs(tmp_path, monkeypatch):
    from backend.graders.trial import _build_graders, _reward_file_allowed
    from backend.methods import all_methods
    from backend.runs.config import default_config

    reward_file = tmp_path / "rewards.py"
    reward_file.write_text(REWARD_FILE)
    spec = next(s for s in all_methods() if "graders" in s.config.__dataclass_fields__)
    # The config says allowed; only the launch can allow, and this one did not.
    cfg = default_config(spec.key, graders=[{"grader": "file:mentions_a_digit"}, {"grader": "numeric_match"}],
                         reward_file=str(reward_file), allow_reward_code=True)
    monkeypatch.delenv("ALIGNSTUDIO_GRANTS", raising=False)
    assert _reward_file_allowed(cfg) is False
    graders = _build_graders(cfg, _reward_file_allowed(cfg))
    assert "was not allowed to run" in graders[0].error and graders[0].func is None
    assert graders[1].func is not None and not graders[1].error
    assert not (tmp_path / "ran.txt").exists()


def test_a_config_that_cannot_be_read_fails_with_a_sentence(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: [unclosed\n")
    proc = subprocess.run([sys.executable, "-m", "backend.graders.trial", str(bad)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    events = [trial_event_from_json(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 2 and isinstance(events[-1], TrialFailed)
    assert "settings could not be read" in events[-1].message
