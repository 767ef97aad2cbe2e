"""Graders: each built-in on hand-made completions, reward files read without running
them, and every way a grader can break ending with a sentence that names it."""

import importlib.util
import threading
import time

import pytest

from backend.graders import (GraderError, GraderSettingError, build_reward_functions, builtin_graders, get_grader,
                             guard, list_reward_functions, when_grader_hangs)
from backend.graders.reward_file import RewardFileError


def grade(key, completions, prompts=None, **kwargs):
    settings = kwargs.pop("settings", {})
    func = get_grader(key).make(settings)
    return func(prompts=prompts or ["q"] * len(completions), completions=completions,
                completion_ids=kwargs.pop("completion_ids", None), **kwargs)


# ------------------------------------------------------------------ built-ins
def test_numeric_match_extracts_the_answer_each_way():
    refs = {"answer": ["42", "#### 1,234", "3.5", None]}
    texts = ["so 40 + 2 = 42", "The total is $1,234.", "about 3.49", "7"]
    assert grade("numeric_match", texts, **refs) == [1.0, 1.0, 0.0, None]  # a row without reference abstains
    assert grade("numeric_match", [r"we get \boxed{12} then 5", "12"], answer=["12", "12"],
                 settings={"extract": "boxed"}) == [1.0, 0.0]
    assert grade("numeric_match", ["Answer: 9\nbecause 8", "9"], answer=["9", "9"],
                 settings={"extract": "marker", "marker": "Answer:"}) == [1.0, 0.0]
    assert grade("numeric_match", ["<answer>5</answer> 6", "5"], answer=["5", "5"],
                 settings={"extract": "answer_tag"}) == [1.0, 0.0]
    # A worked reference in GSM8K's shape: the number after the marker counts, not the last one written.
    assert grade("numeric_match", ["#### 72"], answer=["48 + 24 = 72 clips\n#### 72"],
                 settings={"extract": "marker"}) == [1.0]


def test_exact_match_and_regex_and_the_settings_they_refuse():
    assert grade("exact_match", ["Paris.", "paris", "Lyon"], answer=["Paris"] * 3) == [1.0, 1.0, 0.0]
    assert grade("exact_match", ["paris"], answer=["Paris"], settings={"case_sensitive": True}) == [0.0]
    assert grade("regex_match", ["id: 123", "none"], settings={"pattern": r"\d{3}"}) == [1.0, 0.0]
    assert grade("regex_match", ["id: 123", "123"], settings={"pattern": r"\d+", "mode": "fullmatch"}) == [0.0, 1.0]
    with pytest.raises(GraderSettingError, match="regex_match, setting pattern: '\\(' is not a valid"):
        get_grader("regex_match").make({"pattern": "("})
    with pytest.raises(GraderSettingError, match="must be one of"):
        get_grader("numeric_match").make({"extract": "first_word"})
    with pytest.raises(GraderSettingError, match="unknown setting"):
        get_grader("regex_match").make({"patern": "x"})


def test_output_format_whole_partial_and_conversational():
    good = "<think>2+2 is 4</think>\n<answer>4</answer>"
    half = "<think>hmm</think> 4"
    assert grade("output_format", [good, half, "4"]) == [1.0, 0.25, 0.0]
    assert grade("output_format", [half], settings={"partial_credit": False}) == [0.0]
    # Conversational completions arrive as message lists.
    assert grade("output_format", [[{"role": "assistant", "content": good}]]) == [1.0]
    assert grade("output_format", ["<answer>x</answer>"], settings={"tags": "answer"}) == [1.0]


def test_json_graders(monkeypatch):
    texts = ['{"a": 1}', 'Here: ```json\n{"a": 2}\n```', 'text {"a": "x"} more', "{oops"]
    assert grade("valid_json", texts) == [1.0, 0.0, 0.0, 0.0]
    assert grade("valid_json", texts, settings={"where": "code_block"}) == [0.0, 1.0, 0.0, 0.0]
    assert grade("valid_json", texts, settings={"where": "first_object"}) == [1.0, 1.0, 1.0, 0.0]
    schema = '{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"], ' \
             '"additionalProperties": false}'
    assert grade("json_schema", ['{"a": 1}', '{"a": "1"}', '{"b": 1}', '{"a": 1, "b": 2}'],
                 settings={"schema": schema}) == [1.0, 0.0, 0.0, 0.0]
    # Without jsonschema, a keyword the subset check does not know is refused, never passed.
    import backend.graders.builtin as builtin

    monkeypatch.setattr(builtin, "has_jsonschema", lambda: False)
    with pytest.raises(GraderSettingError, match="jsonschema is not installed.*pattern"):
        get_grader("json_schema").make({"schema": '{"type": "string", "pattern": "^a"}'})
    with pytest.raises(GraderSettingError, match="not valid JSON"):
        get_grader("json_schema").make({"schema": "{type: object"})


def test_length_and_words():
    scores = grade("length_target", ["word " * 50, "word " * 65, "word " * 100, ""],
                   settings={"target": 50, "tolerance": 10})
    assert scores == pytest.approx([1.0, 0.9, 0.2, 0.2])
    assert grade("length_target", ["a", "b"], completion_ids=[[1] * 4, [1] * 12],
                 settings={"unit": "tokens", "target": 4, "tolerance": 0}) == [1.0, 0.0]
    assert grade("required_words", ["Thanks, happy to help", "help"],
                 settings={"words": "thanks, help"}) == [1.0, 0.5]
    assert grade("banned_words", ["whatever, idiot", "fine", "Whatever"],
                 settings={"words": "whatever, idiot", "penalty": 0.5}) == [0.0, 1.0, 0.5]
    with pytest.raises(GraderSettingError, match="at least one word"):
        get_grader("banned_words").make({"words": " , "})


def test_trl_rewards_are_offered_only_with_their_dependencies():
    keys = {s.key: s for s in builtin_graders()}
    assert grade("trl_think_format", ["<think>x</think> y", "y"]) == [1.0, 0.0]
    assert grade("trl_soft_overlong", ["a", "b"], completion_ids=[[1] * 10, [1] * 300],
                 settings={"max_completion_len": 256, "soft_punish_cache": 64}) == [0.0, -1.0]
    accuracy = keys["trl_accuracy"]
    if importlib.util.find_spec("math_verify") is None:
        assert not accuracy.available and "math_verify" in accuracy.unavailable_reason
        with pytest.raises(GraderSettingError, match="math_verify"):
            accuracy.make({})
    else:
        assert accuracy.available
        assert grade("trl_accuracy", [r"\boxed{4}"], solution=["$4$"])[0] == 1.0


def test_every_builtin_lists_settings_with_defaults_and_help():
    for spec in builtin_graders():
        assert spec.key and spec.label and spec.summary
        for s in spec.settings:
            assert s.help, (spec.key, s.name)
            assert s.choices is None or s.default in s.choices


# ------------------------------------------------------------------ reward files
REWARD_FILE = '''"""My rewards."""
open(__file__ + ".ran", "w").write("ran")


def short(completions, **kwargs):
    """Shorter is better."""
    return [1.0 / (1 + len(c)) for c in completions]


def match_answer(prompts, completions, answer, **kwargs):
    return [1.0 if a in c else 0.0 for c, a in zip(completions, answer)]


def _helper(x):
    return x


def not_a_reward(x, y):
    return x
'''


def test_listing_reads_the_file_without_running_it(tmp_path):
    path = tmp_path / "rewards.py"
    path.write_text(REWARD_FILE, encoding="utf-8")
    found = list_reward_functions(path)
    assert [(f.name, f.line, f.doc, f.columns) for f in found] == [
        ("short", 5, "Shorter is better.", ()), ("match_answer", 10, "", ("answer",))]
    assert not (tmp_path / "rewards.py.ran").exists()
    path.write_text("def f(completions):\n    return [\n", encoding="utf-8")
    with pytest.raises(RewardFileError, match="rewards.py, line 2"):
        list_reward_functions(path)
    with pytest.raises(RewardFileError, match="does not exist"):
        list_reward_functions(tmp_path / "nope.py")


def test_a_reward_file_runs_only_when_allowed_and_is_copied_into_the_run(tmp_path):
    path = tmp_path / "rewards.py"
    path.write_text(REWARD_FILE, encoding="utf-8")
    entries = [{"grader": "file:short", "weight": 0.5}, {"grader": "numeric_match"}]
    with pytest.raises(GraderError, match="not allowed to run.*short") as refused:
        build_reward_functions(entries, reward_file_allowed=False, run_dir=tmp_path / "run", reward_file=str(path))
    assert "--allow-reward-code" in refused.value.hint
    assert not (tmp_path / "rewards.py.ran").exists()
    funcs, weights, names = build_reward_functions(entries, reward_file_allowed=True, run_dir=tmp_path / "run",
                                                   reward_file=str(path))
    assert names == ["short", "numeric_match"] and weights == [0.5, 1.0]
    assert [f.__name__ for f in funcs] == names  # TRL logs rewards/<__name__>/mean
    assert funcs[0](prompts=["p", "p"], completions=["a", "abc"]) == [0.5, 0.25]
    assert (tmp_path / "run" / "reward_code" / "rewards.py").read_text(encoding="utf-8") == REWARD_FILE


# ------------------------------------------------------------------ bad graders
def load_bad(tmp_path, source: str, name: str):
    path = tmp_path / "bad_rewards.py"
    path.write_text(source, encoding="utf-8")
    funcs, _w, _n = build_reward_functions([{"grader": f"file:{name}"}], reward_file_allowed=True,
                                           reward_file=str(path))
    return funcs[0]


def call(func, completions, **columns):
    return func(prompts=[f"prompt {i}" for i in range(len(completions))], completions=completions,
                completion_ids=[[1, 2]] * len(completions), **columns)


def test_a_grader_that_raises_names_itself_its_line_and_the_sample(tmp_path):
    func = load_bad(tmp_path, "def picky(completions, **kw):\n    out = []\n    for c in completions:\n"
                              "        out.append(1.0 / (len(c) - 3))\n    return out\n", "picky")
    with pytest.raises(GraderError) as err:
        call(func, ["hello", "abc", "x"])
    text = str(err.value)
    assert "picky (bad_rewards.py:1)" in text and "ZeroDivisionError" in text
    assert "bad_rewards.py:4" in text  # where it raised
    assert "completion 'abc'" in text and "prompt 'prompt 1'" in text  # the sample it fails on
    assert err.value.failure_kind == "bad_grader" and err.value.function == "picky"


@pytest.mark.parametrize("body, expected", [
    ("return [1.0]", "returned 1 scores for 2 completions"),
    ("return [1.0, float('nan')]", "returned nan for completion 2"),
    ("return [1.0, 'good']", "returned 'good' (str) for completion 2"),
    ("return 1.0", "returned float, not a list of 2 scores"),
    ("import sys; sys.exit(3)", "tried to end the process (sys.exit(3))"),
    ("return [kw['gold'][0]] * 2", "asks for the column 'gold'"),
])
def test_each_bad_return_is_refused_naming_the_function(tmp_path, body, expected):
    func = load_bad(tmp_path, f"def judge(completions, **kw):\n    {body}\n", "judge")
    with pytest.raises(GraderError) as err:
        call(func, ["a", "b"], answer=["1", "2"])
    assert "judge (bad_rewards.py:1)" in str(err.value) and expected in str(err.value)


def test_a_column_asked_for_by_parameter_is_checked_and_none_abstains(tmp_path):
    func = load_bad(tmp_path, "def uses(completions, solution, **kw):\n    return [None, 1]\n", "uses")
    with pytest.raises(GraderError, match=r"asks for the column 'solution'.*its columns: answer"):
        call(func, ["a", "b"], answer=["1", "2"])
    assert call(func, ["a", "b"], solution=["1", "2"]) == [None, 1.0]


def test_a_file_that_does_not_import_names_the_file_and_line(tmp_path):
    with pytest.raises(GraderError, match=r"bad_rewards.py fails while it is imported, at line 2: "
                                          r"ModuleNotFoundError"):
        load_bad(tmp_path, "import os\nimport not_a_module_here\ndef f(completions, **kw):\n    return []\n", "f")
    with pytest.raises(GraderError, match="has no function 'g'"):
        load_bad(tmp_path, "def f(completions, **kw):\n    return []\n", "g")


def test_the_worker_reports_a_bad_grader_as_such():
    from backend.training.worker import classify_failure

    kind, message, hint = classify_failure(GraderError("Grader judge (r.py:1): returned nan", function="judge"))
    assert kind == "bad_grader" and "judge" in message and "Try the graders" in hint


def test_a_grader_still_running_after_a_stop_is_reported_by_name():
    release = threading.Event()
    func = guard(lambda prompts=None, completions=(), completion_ids=None, **kw: release.wait(5) and [1.0],
                 "slow_one", where="slow.py:3")
    worker = threading.Thread(target=func, kwargs={"prompts": ["p"], "completions": ["c"]})
    worker.start()
    time.sleep(0.2)
    stuck = []
    when_grader_hangs(stuck.append, grace_s=0.3)
    time.sleep(0.8)
    release.set()
    worker.join()
    assert len(stuck) == 1 and "slow_one (slow.py:3)" in str(stuck[0]) and "without returning" in str(stuck[0])
    when_grader_hangs(stuck.append, grace_s=0.1)  # nothing running: nothing to report
    time.sleep(0.3)
    assert len(stuck) == 1
