"""RLOO's own traits: the same graders and checks as GRPO, its TRL config (KL on by
default, advantage normalisation), and a reward that rises. The conformance test
trains it with its default built-in grader."""

import pytest

from backend.methods import get_method
from backend.runs.config import default_config, validate
from tests.conftest import tiny_run_config
from tests.methods.test_grpo import LOW_TOKENS_REWARD, peaky_model_dir, prompts_file  # noqa: F401 - a shared fixture


def test_config_carries_the_kl_default_and_advantage_normalisation():
    cfg = default_config("rloo", num_generations=2, normalize_advantages=True,
                         graders=[{"grader": "length_target", "weight": 0.5}])
    assert cfg.beta == 0.05  # TRL's default for RLOO; GRPO's is 0
    shared = {"output_dir": "/tmp/x", "max_length": 64, "per_device_train_batch_size": 4,
              "gradient_accumulation_steps": 1, "use_cpu": True, "bf16": False, "report_to": []}
    args = get_method("rloo").build_args(cfg, shared)
    assert (args.beta, args.num_generations, args.normalize_advantages) == (0.05, 2, True)
    assert args.reward_weights == [0.5]


def test_refuses_what_trl_would_refuse_later():
    problems = dict(validate(default_config("rloo", num_generations=5, lora_target_modules="q_proj,lm_head")))
    assert "Completions per prompt (5) must divide" in problems["num_generations"]
    assert "lm_head" in problems["lora_target_modules"]


@pytest.mark.slow
def test_a_reward_file_grades_the_run_and_the_reward_rises(peaky_model_dir, tmp_path):  # noqa: F811
    from backend.core.events import RunFinished, TrainLog
    from backend.training.client import run_to_completion

    rewards = tmp_path / "my_rewards.py"
    rewards.write_text(LOW_TOKENS_REWARD, encoding="utf-8")
    cfg = tiny_run_config("rloo", peaky_model_dir, prompts_file(tmp_path / "p.jsonl"), max_steps=8,
                          quantization="none", per_device_train_batch_size=8, num_generations=4,
                          max_completion_length=8, learning_rate=3e-2, beta=0.0, reward_file=str(rewards),
                          allow_reward_code=True, graders=[{"grader": "file:low_tokens"}])
    _run, events = run_to_completion(cfg, timeout=300)
    assert isinstance(events[-1], RunFinished), events[-1]
    seen = [e.metrics["rewards/low_tokens/mean"] for e in events if isinstance(e, TrainLog)]
    assert len(seen) == 8
    assert sum(seen[-2:]) / 2 > sum(seen[:2]) / 2 + 0.1, seen
