"""PPO's reward model as a third adapter on the policy's base: the same scores as the
reward model loaded on its own, frozen while the policy and value adapters train, chosen
only when the reward run's base and quantization are the policy's, and used by a real
run through the worker."""

from __future__ import annotations

import pytest

from backend.methods import get_method
from tests.conftest import tiny_run_config

SPEC = get_method("ppo")
PROMPTS = ["Question 1: can you help me with task 1?", "Question 2: can you help?", "Hi"]
ANSWERS = [" Sure, happy to help with that question.", " No. Figure it out yourself. Whatever.",
           " Thank you for asking! Here is a clear answer, and a much longer one than the others so padding shows."]


def policy_with_adapters(model_dir, tmp_path, **overrides):
    """The PPO policy as the method builds it: 4-bit base, policy and value adapters (nudged off
    zero, so a scorer that forgot to switch adapters would give other scores)."""
    import torch

    from backend.methods.ppo_training.trainer import attach_value_function
    from backend.training.trainer_builders import build_lora_config, build_model, build_tokenizer, choose_precision

    cfg = tiny_run_config("ppo", model_dir, tmp_path / "unused.jsonl", **overrides)
    tokenizer = build_tokenizer(str(model_dir), cfg)
    model = attach_value_function(build_model(str(model_dir), cfg, choose_precision()), build_lora_config(cfg))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.add_(0.05 * torch.randn_like(param))
    return cfg, model, tokenizer


def test_shared_base_scores_equal_the_separately_loaded_reward_model(tiny_model_dir, tiny_reward_model_run,
                                                                     tmp_path):
    from backend.methods.ppo import load_scorer
    from backend.methods.ppo_training.rollout import POLICY_ADAPTER, AdapterSwitch
    from backend.methods.ppo_training.shared_reward import REWARD_ADAPTER, SharedBaseRewardModel
    from backend.rewards.scoring import load_reward_scorer

    cfg, model, tokenizer = policy_with_adapters(tiny_model_dir, tmp_path, reward_model=str(tiny_reward_model_run))
    said: list[str] = []
    shared = load_scorer(cfg, policy_model=model, tokenizer=tokenizer, log=said.append)
    assert isinstance(shared.model, SharedBaseRewardModel)
    assert "third adapter" in said[0] and "MB of base weights" in said[1]
    switch = AdapterSwitch(model)
    model.train()
    trainable_before = {n for n, p in model.named_parameters() if p.requires_grad}

    with load_reward_scorer(str(tiny_reward_model_run)) as separate:
        expected = separate.score(PROMPTS, ANSWERS)
    got = shared.score(PROMPTS, ANSWERS, batch_size=2)  # padded batches and a batch of one
    assert got == pytest.approx(expected, abs=1e-4)
    assert len(set(round(x, 3) for x in got)) == 3, got  # the run's scores vary: the comparison means something

    # The policy is active again, in train mode, with the same trainable parameters; the reward
    # adapter is frozen and outside the adapter switch's (the optimizer's) parameters.
    assert model.active_adapter == POLICY_ADAPTER and model.training
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable_before
    reward_params = {id(p) for n, p in model.named_parameters() if REWARD_ADAPTER in n.split(".")}
    assert reward_params and not reward_params & {id(p) for p in switch.trainable}
    assert not any(n for n in trainable_before if REWARD_ADAPTER in n.split("."))


def test_another_base_or_quantization_loads_the_reward_model_separately(tiny_model_dir, tiny_reward_model_run,
                                                                        tmp_path):
    from dataclasses import replace

    from backend.methods.ppo import load_scorer
    from backend.methods.ppo_training.shared_reward import placement
    from backend.rewards.scoring import locate_reward_model

    location = locate_reward_model(str(tiny_reward_model_run))
    cfg = tiny_run_config("ppo", tiny_model_dir, tmp_path / "d.jsonl", reward_model=str(tiny_reward_model_run))
    assert placement(cfg, location).shared
    other = tmp_path / "other-model"
    other.mkdir()
    (other / "config.json").write_text("{}")
    elsewhere = placement(replace(cfg, model=str(other)), location)
    assert not elsewhere.shared and "not on the policy's base" in elsewhere.reason and str(other) in elsewhere.reason
    unquantized = placement(replace(cfg, quantization="none"), location)
    assert not unquantized.shared and "separate model" in unquantized.reason
    assert not placement(cfg, replace(location, adapter_dir="")).shared

    # Through the method's loader: the fallback is the reward model on its own base, and the log says so.
    cfg, model, tokenizer = policy_with_adapters(tiny_model_dir, tmp_path, quantization="none",
                                                 reward_model=str(tiny_reward_model_run))
    said: list[str] = []
    scorer = load_scorer(cfg, policy_model=model, tokenizer=tokenizer, log=said.append)
    assert scorer.model is not model and "separate model" in said[0]
    assert "reward" not in model.peft_config
    scorer.close()


@pytest.mark.slow
def test_ppo_trains_through_the_worker_with_the_reward_model_on_the_shared_base(
        tiny_model_dir, easy_preferences, tiny_reward_model_run, studio_home):
    import math

    from backend.core.events import RunFinished, TrainLog
    from backend.runs.folder import LOG_FILE
    from backend.training.client import run_to_completion

    cfg = tiny_run_config("ppo", tiny_model_dir, easy_preferences, max_steps=3, logging_steps=1,
                          per_device_train_batch_size=2, max_completion_length=6, num_ppo_epochs=2,
                          reward_model=str(tiny_reward_model_run))
    run, events = run_to_completion(cfg, timeout=300)
    assert isinstance(events[-1], RunFinished), events[-1]
    log = (run.run_dir / LOG_FILE).read_text()
    assert "scored as a third adapter on the policy's base" in log
    logs = [e for e in events if isinstance(e, TrainLog)]
    assert [e.step for e in logs] == [1, 2, 3]
    scores = [e.metrics["objective/scores"] for e in logs]
    assert all(math.isfinite(s) for s in scores) and len(set(scores)) > 1, scores
    # The saved adapter is the policy's alone: neither the reward nor the value adapter leaks into it.
    from safetensors.torch import load_file

    saved = load_file(str(run.run_dir / "adapter" / "adapter_model.safetensors"))
    assert saved and not any(".reward." in k or ".value." in k for k in saved)
