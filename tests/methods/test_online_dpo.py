"""Online DPO: prompts in, two sampled answers per prompt labelled by a reward model run or
a grader, DPO on the fresh pair. The conformance test trains it generically; this file
checks what only it has: its reward sources, its data, its TRL config, and that the pair
it learns from is ordered by the scores."""

from __future__ import annotations

import math

import pytest

from backend.methods import get_method
from backend.runs.config import check, validate
from tests.conftest import tiny_run_config

SPEC = get_method("online_dpo")
# Characters of the sampled answer near 12: a tiny random model's answers vary around it.
LENGTH_GRADER = {"grader": "length_target", "unit": "characters", "target": 12, "tolerance": 2, "weight": 1.0}


def test_it_needs_a_reward_model_or_graders_and_names_bad_graders():
    from backend.methods.spec import BuildContext
    from backend.runs.config import ConfigError

    with pytest.raises(ConfigError, match="needs something to label its sampled pairs"):
        SPEC.build(BuildContext(cfg=SPEC.config(), model=None, tokenizer=None, args=None, train_dataset=None,
                                eval_dataset=None, callbacks=[], peft_config=None))
    assert validate(SPEC.config(reward_model="/some/reward-run")) == []
    assert validate(SPEC.config(graders=[LENGTH_GRADER])) == []
    problems = dict(validate(SPEC.config(graders=[{"grader": "no_such_grader"}])))
    assert "no_such_grader" in problems["graders"]
    assert "reward_model" in SPEC.requires and SPEC.group == "Online"


def test_pairs_train_on_their_prompts_and_answer_files_are_refused(easy_preferences, tmp_path):
    from backend.data.loading import dataset_for_method, load_dataset_file

    ds = dataset_for_method(load_dataset_file(easy_preferences), "online_dpo")
    # Each prompt once; chosen and rejected stay as columns a grader may read by name.
    assert ds.column_names[0] == "prompt" and len(set(ds["prompt"])) == len(ds) == 64
    for kind in ("single", "unpaired"):
        assert SPEC.label in SPEC.data.refusal(kind, SPEC.label, "Some format")
    assert {"prompts", "pairs"} <= SPEC.data.accepts


def test_trl_config_carries_beta_sampling_and_one_weight_per_reward_function():
    cfg = check(SPEC.config(reward_model="/r", graders=[dict(LENGTH_GRADER, weight=0.5)], beta=0.2,
                            max_new_tokens=16, temperature=0.7, missing_eos_penalty=0.0))
    args = SPEC.build_args(cfg, dict(output_dir="/tmp/x", use_cpu=True, bf16=False, report_to=[]))
    assert type(args).__name__ == "OnlineDPOConfig"
    assert args.beta == pytest.approx(0.2) and args.max_new_tokens == 16 and args.temperature == pytest.approx(0.7)
    assert args.missing_eos_penalty is None  # 0 means none, not a zero penalty TRL would apply
    assert args.reward_weights == [0.5, 1.0]  # the grader, then the reward model it adds
    assert args.remove_unused_columns is False  # grader columns must reach the reward functions


def _train(cfg):
    from backend.core.events import EvalLog, RunFinished, TrainLog
    from backend.training.client import run_to_completion

    run, events = run_to_completion(cfg, timeout=300)
    assert isinstance(events[-1], RunFinished), events[-1]
    logs = [e.metrics for e in events if isinstance(e, TrainLog) and "objective/scores" in e.metrics]
    assert logs, "no step logged the sampled answers' scores"
    run.evals = [e.metrics for e in events if isinstance(e, EvalLog)]
    return run, logs


@pytest.mark.slow
def test_trains_on_pairs_labelled_by_a_reward_model_run(tiny_model_dir, easy_preferences, studio_home,
                                                        tiny_reward_model_run):
    cfg = tiny_run_config("online_dpo", tiny_model_dir, easy_preferences, max_steps=2, logging_steps=1,
                          per_device_train_batch_size=2, max_new_tokens=6, reward_model=str(tiny_reward_model_run))
    run, logs = _train(cfg)
    for metrics in logs:
        # The chosen sample is by construction the one the reward model scored higher.
        assert metrics["objective/scores_margin"] >= 0.0
        assert math.isfinite(metrics["objective/scores"]) and math.isfinite(metrics["rewards/margins"])
    assert (run.run_dir / "adapter" / "adapter_config.json").is_file()


@pytest.mark.slow
def test_trains_on_pairs_labelled_by_a_builtin_grader(tiny_model_dir, easy_preferences, studio_home):
    cfg = tiny_run_config("online_dpo", tiny_model_dir, easy_preferences, max_steps=2, logging_steps=1,
                          per_device_train_batch_size=2, max_new_tokens=8, graders=[LENGTH_GRADER],
                          eval_fraction=0.1)
    run, logs = _train(cfg)
    for metrics in logs:
        assert 0.0 <= metrics["objective/scores"] <= 1.0  # the grader's range: no reward model took part
        assert metrics["objective/scores_margin"] >= 0.0
    # TRL's trainer cannot evaluate; the held-out prompts are sampled and graded instead.
    assert run.evals and 0.0 <= run.evals[-1]["objective/scores"] <= 1.0
    assert run.evals[-1]["objective/scores_margin"] >= 0.0


def test_a_launch_without_a_reward_source_is_refused_before_anything_loads(tmp_path):
    """The defaults validate (no reward model can be named for the user), but the preflight,
    which the window and the CLI run before a launch, asks for one."""
    from backend.runs.preflight import input_problems
    from backend.runs.config import default_config, validate

    cfg = default_config("online_dpo")
    assert validate(cfg) == []
    assert [name for name, _ in input_problems(cfg)] == ["reward_model"]
    assert "reward model" in input_problems(cfg)[0][1]
    assert input_problems(default_config("online_dpo", reward_model=str(tmp_path))) == []
    assert input_problems(default_config("online_dpo", graders=[{"grader": "length_target", "weight": 1.0}])) == []
