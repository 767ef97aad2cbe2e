"""What only PPO has: it learns from a reward while the KL to the reference stays bounded,
it runs through the worker with a reward model run (held-out scores, sampled answers,
checkpoints holding the value function, resume), and it says what it needs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from backend.methods import get_method
from backend.runs.config import ConfigError, validate
from tests.conftest import tiny_run_config

SPEC = get_method("ppo")
PROMPTS = [f"Question {i}: can you help me with task {i % 7}?" for i in range(32)]


def lowercase_share(prompts, completions):
    """A reward the tiny random model can learn: the share of lowercase letters in its answer."""
    return [sum("a" <= ch <= "z" for ch in c) / max(1, len(c)) for c in completions]


def build_direct_trainer(model_dir: Path, tmp_path: Path, scorer, **overrides):
    """The method's own trainer on the tiny model, with a plain callable as the reward."""
    from datasets import Dataset

    from backend.methods import BuildContext
    from backend.training.trainer_builders import (build_lora_config, build_model, build_tokenizer, build_trl_args,
                                          choose_precision)

    values = dict(per_device_train_batch_size=16, max_completion_length=8, logging_steps=1, quantization="none",
                  learning_rate=5e-3, kl_coef=0.05,
                  lora_target_modules="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head")
    values.update(overrides)
    cfg = tiny_run_config("ppo", model_dir, tmp_path / "unused.jsonl", **values)
    precision = choose_precision()
    tokenizer = build_tokenizer(str(model_dir), cfg)
    model = build_model(str(model_dir), cfg, precision)
    args = build_trl_args(cfg, precision, str(tmp_path / "checkpoints"), has_eval=False)
    ctx = BuildContext(cfg=cfg, model=model, tokenizer=tokenizer, args=args,
                       train_dataset=Dataset.from_list([{"prompt": p} for p in PROMPTS]), eval_dataset=None,
                       callbacks=[], peft_config=build_lora_config(cfg))
    return SPEC.build(ctx, scorer=scorer)


@pytest.mark.slow
def test_score_rises_while_kl_stays_bounded(tiny_model_dir, tmp_path):
    trainer = build_direct_trainer(tiny_model_dir, tmp_path, lowercase_share, max_steps=15)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "objective/scores" in h]
    assert len(logs) == 15
    scores = [h["objective/scores"] for h in logs]
    kls = [h["objective/kl"] for h in logs]
    # At the first rollout the policy is the reference (LoRA's B starts at zero): KL exactly 0.
    assert logs[0]["objective/kl"] == pytest.approx(0.0, abs=1e-6)
    early, late = sum(scores[:5]) / 5, sum(scores[-5:]) / 5
    assert late > early + 0.08, scores
    assert max(kls) < 15.0, kls
    for h in logs:
        assert all(math.isfinite(v) for v in h.values() if isinstance(v, float)), h
        assert h["objective/rlhf_reward"] == pytest.approx(h["objective/scores"] + h["objective/non_score_reward"])
        assert 0.0 <= h["policy/clipfrac_avg"] <= 1.0 and 0.0 <= h["val/clipfrac_avg"] <= 1.0


def test_the_first_update_starts_at_ratio_one_and_moves_log_probs_with_the_advantages(tiny_model_dir, tmp_path):
    import torch

    from backend.methods.ppo_training.rollout import token_logprobs

    trainer = build_direct_trainer(tiny_model_dir, tmp_path, lowercase_share, max_steps=1)
    trainer.create_optimizer_and_scheduler(num_training_steps=1)
    batch = trainer.rollout(trainer.prompts_for_step(0))
    samples = batch["samples"]
    trainer.model.eval()
    with torch.no_grad():
        before = token_logprobs(trainer.model, samples.ids, samples.attention_mask, samples.context_length, 0.7)[0]
    # Dropout is off, so the rollout's log-probs are the update's starting point: ratio 1.
    assert torch.allclose(before * samples.mask, batch["logprobs"] * samples.mask, atol=1e-5)
    trainer.update(batch)
    trainer.model.eval()
    with torch.no_grad():
        after = token_logprobs(trainer.model, samples.ids, samples.attention_mask, samples.context_length, 0.7)[0]
    moved = ((after - before) * samples.mask).sum(1)
    advantage = (batch["advantages"] * samples.mask).sum(1)
    # Answers with a positive advantage became likelier, negative ones less likely.
    agree = [(m > 0) == (a > 0) for m, a in zip(moved.tolist(), advantage.tolist()) if abs(a) > 0.5]
    assert agree and sum(agree) / len(agree) >= 0.75, (moved.tolist(), advantage.tolist())


def test_rollouts_sample_through_the_generation_engine_and_stop_at_the_next_token(tiny_model_dir, tmp_path):
    """Rollouts go through the studio's generation engine: every answer is the engine's,
    its stop token ends the mask, and the worker's Stop (the event callback's flag) ends
    a rollout at the next token with no update made."""
    import threading

    import torch

    from backend.generation.engine import GenerationEngine

    trainer = build_direct_trainer(tiny_model_dir, tmp_path, lowercase_share, max_steps=2,
                                   per_device_train_batch_size=4)
    tokens_seen = []
    batch = trainer.rollout(trainer.prompts_for_step(0))
    assert isinstance(trainer._engine, GenerationEngine)
    samples = batch["samples"]
    assert samples.ids.shape[0] == 4 and samples.mask.shape[1] <= 8
    for row, ended in zip(samples.ids[:, samples.context_length:], samples.ended.tolist()):
        stops = [i for i, t in enumerate(row.tolist()) if t in trainer.stop_ids]
        assert ended == bool(stops)
    # The same seed draws the same answers: the row seeds come from torch's generator.
    torch.manual_seed(5)
    first = trainer.rollout(trainer.prompts_for_step(0))["samples"].completions
    torch.manual_seed(5)
    assert trainer.rollout(trainer.prompts_for_step(0))["samples"].completions == first

    from transformers import TrainerCallback

    class StopFlag(TrainerCallback):  # what the worker's event callback carries
        stop_requested = threading.Event()

    trainer.callback_handler.add_callback(StopFlag())
    original = trainer._engine.forward

    def forward_then_stop(*args, **kwargs):
        tokens_seen.append(1)
        StopFlag.stop_requested.set()  # Stop pressed while the first token is computed
        return original(*args, **kwargs)

    trainer._engine.forward = forward_then_stop
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    assert len(tokens_seen) == 1  # the rollout ended at the next token, not after 8
    assert trainer.state.global_step == 0
    assert all(torch.equal(before[n], p) for n, p in trainer.model.named_parameters() if p.requires_grad)


@pytest.mark.slow
def test_trains_through_the_worker_with_a_reward_model_run_and_resumes(tiny_model_dir, easy_preferences,
                                                                        tiny_reward_model_run, studio_home):
    from backend.core.events import EvalLog, RunFinished, RunStarted, SampleBatch, TrainLog
    from backend.runs.config import load_yaml, replace_values, save_yaml
    from backend.runs.folder import EVAL_SPLIT_FILE
    from backend.training.client import TrainingRun, run_to_completion

    cfg = tiny_run_config("ppo", tiny_model_dir, easy_preferences, max_steps=2, save_steps=1, logging_steps=1,
                          per_device_train_batch_size=2, max_completion_length=6, num_ppo_epochs=2,
                          eval_fraction=0.1, eval_max_rows=2, reward_model=str(tiny_reward_model_run))
    run, events = run_to_completion(cfg, timeout=300)
    assert isinstance(events[-1], RunFinished), events[-1]
    logs = [e for e in events if isinstance(e, TrainLog)]
    assert [e.step for e in logs] == [1, 2]
    for key in ("objective/scores", "objective/kl", "objective/rlhf_reward", "objective/entropy",
                "policy/approxkl_avg", "policy/clipfrac_avg", "loss/policy_avg", "loss/value_avg",
                "val/clipfrac_avg", "loss"):
        assert math.isfinite(logs[-1].metrics[key]), key
    evals = [e for e in events if isinstance(e, EvalLog)]
    assert evals and "objective/scores" in evals[-1].metrics
    samples = [e for e in events if isinstance(e, SampleBatch)]
    assert samples and samples[-1].rows and samples[-1].graders == ["reward model"]
    # The held-out rows are the prompts of the pairs (chosen and rejected come along as columns).
    heldout = [json.loads(line) for line in (run.run_dir / EVAL_SPLIT_FILE).read_text().splitlines()]
    assert heldout and all(row["prompt"].startswith("Question") for row in heldout)

    checkpoint = run.run_dir / "checkpoints" / "checkpoint-2"
    assert (checkpoint / "adapter_model.safetensors").exists()
    assert (checkpoint / "value_model" / "value" / "adapter_model.safetensors").exists()
    assert (checkpoint / "value_model" / "value_head.safetensors").exists()
    # The run's adapter is the policy alone, as every method saves it.
    adapter_config = json.loads((run.run_dir / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["task_type"] == "CAUSAL_LM"
    assert not (run.run_dir / "adapter" / "value").exists()

    cfg_path = run.run_dir / "config.yaml"
    save_yaml(replace_values(load_yaml(cfg_path), {"max_steps": 3}), cfg_path)
    resumed = TrainingRun.resume(run.run_dir)
    more = list(resumed.events())
    resumed.close()
    start = next(e for e in more if isinstance(e, RunStarted))
    assert start.resumed_from_step == 2
    assert isinstance(more[-1], RunFinished) and more[-1].step == 3
    assert [e.step for e in more if isinstance(e, TrainLog)] == [3]


def test_says_what_it_needs(tmp_path):
    from backend.methods.ppo import load_scorer

    cfg = SPEC.config(max_length=64, max_completion_length=64)
    assert ("max_completion_length",) == tuple({name for name, _ in validate(cfg)} & {"max_completion_length"})
    with pytest.raises(ConfigError, match="reward model"):
        load_scorer(SPEC.config())
    assert SPEC.requires == ("reward_model",)
    assert SPEC.data.convert == {"pairs": "prompts_from_pairs"}
    reason = SPEC.data.refusal("single", SPEC.label, "Prompt/completion")
    assert "prompts only" in reason and "Prompt/completion" in reason


def test_the_module_says_why_ppo_is_written_here():
    import backend.methods.ppo as module

    doc = module.__doc__
    assert "7020" in doc and "trl.experimental.ppo" in doc and "removed" in doc


def _diagnose(series: list[dict]) -> list:
    from backend.runs.diagnostics import TrainingDiagnostics

    diagnostics = TrainingDiagnostics(total_steps=len(series), method=SPEC.key)
    for step, metrics in enumerate(series, start=1):
        diagnostics.observe(step, metrics)
    return [d.code for d in diagnostics.active()]


def test_diagnostics_catch_kl_exploding_value_loss_diverging_and_answers_collapsing():
    steady = [{"objective/kl": 0.5, "completions/mean_length": 20.0, "loss/value_avg": 0.2,
               "objective/entropy": 40.0, "objective/scores": 0.1 * i, "loss": 0.0} for i in range(12)]
    assert _diagnose(steady) == []
    exploding = [dict(m, **{"objective/kl": 0.5 * 3 ** i}) for i, m in enumerate(steady)]
    assert _diagnose(exploding) == ["answer_kl_runaway"]
    diverging = [dict(m, **{"loss/value_avg": 0.2 * 2 ** i}) for i, m in enumerate(steady)]
    assert _diagnose(diverging) == ["value_loss_diverging"]
    collapsing = [dict(m, **{"objective/entropy": 40.0 / (1 + i)}) for i, m in enumerate(steady)]
    assert _diagnose(collapsing) == ["entropy_collapse"]
    # The entropy falling while the score does not rise is not that pattern.
    assert _diagnose([dict(m, **{"objective/scores": 0.0}) for m in collapsing]) == []


def test_the_command_line_takes_a_reward_model(tmp_path, easy_preferences):
    from backend.cli.main import build_parser, config_and_problems

    reward = tmp_path / "reward-run"
    reward.mkdir()
    args = build_parser().parse_args(["train", "--method", SPEC.key, "--data", str(easy_preferences),
                                      "--reward-model", str(reward)])
    cfg, problems = config_and_problems(args)
    assert problems == [] and cfg.method == SPEC.key and cfg.reward_model == str(reward.resolve())
    args = build_parser().parse_args(["train", "--method", SPEC.key, "--data", str(easy_preferences),
                                      "--reward", "length"])
    _cfg, problems = config_and_problems(args)
    assert any("reward model only" in message and "--reward-model" in message for _name, message in problems)
