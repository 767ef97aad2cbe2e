"""GRPO's own traits: prompt data, graders from a reward file, the checks made before
anything loads, the TRL config it builds, the sampling memory, and a reward that rises."""

import json
import re
from pathlib import Path

import pytest

from backend.data.formats import DataFormat, supported_methods
from backend.training.memory_estimate import GEMMA3_270M, estimate_memory
from backend.methods import get_method
from backend.runs.config import default_config, validate
from tests.conftest import tiny_run_config

# Completions drawn mostly from the first half of the tiny vocabulary score high; the
# random model starts near 0.5 and GRPO has a clear signal to follow.
LOW_TOKENS_REWARD = '''
def low_tokens(prompts, completions, completion_ids, **kwargs):
    """Fraction of completion tokens in the lower half of the vocabulary."""
    return [sum(1 for t in ids if t < 150) / max(1, len(ids)) for ids in completion_ids]
'''


@pytest.fixture(scope="session")
def peaky_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with its output layer scaled up: the random model's output layer is so
    small that no adapter in its layers can move the token distribution far; scaled, a few
    GRPO steps visibly shift it, as they do on a real model."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("peaky-tiny")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)
    model.save_pretrained(folder)
    for f in Path(tiny_model_dir).iterdir():
        if f.name.startswith("tokenizer") or f.name.endswith(".jinja") or f.name == "special_tokens_map.json":
            shutil.copy(f, folder / f.name)
    return folder


def prompts_file(path: Path, n: int = 32) -> Path:
    rows = [{"prompt": f"Question {i}: can you help me with task {i % 7}?", "solution": str(i % 10)}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_trains_on_prompts_and_on_the_prompts_of_pairs_and_says_how_to_keep_answers():
    assert "grpo" in supported_methods(DataFormat.PROMPT_ONLY)
    assert "grpo" in supported_methods(DataFormat.PREFERENCE)
    assert "grpo" not in supported_methods(DataFormat.PROMPT_COMPLETION)
    reason = get_method("grpo").data.refusal("single", "GRPO", "Prompt and completion")
    assert "data_format=prompt_only" in reason


def test_what_trl_would_refuse_after_loading_is_refused_first():
    problems = dict(validate(default_config("grpo", num_generations=3, max_length=128,
                                            max_completion_length=128, graders=[])))
    assert "Completions per prompt (3) must divide" in problems["num_generations"]
    assert "Gradient accumulation to 6" in problems["num_generations"]  # 4 x 6 = 24 holds groups of 3
    assert "no room for the prompt" in problems["max_completion_length"]
    assert problems["graders"].startswith("no grader")
    problems = dict(validate(default_config("grpo", loss_type="luspo")))
    assert "sequence" in problems["importance_sampling_level"]
    assert validate(default_config("grpo")) == []


def test_grader_entries_are_checked_by_name_before_loading(tmp_path):
    rewards = tmp_path / "rewards.py"
    rewards.write_text(LOW_TOKENS_REWARD, encoding="utf-8")
    problems = validate(default_config("grpo", reward_file=str(rewards),
                                       graders=[{"grader": "file:missing"}, {"grader": "regex_match",
                                                                             "pattern": "("}]))
    text = " ".join(m for _f, m in problems)
    assert "has no function 'missing' (it has: low_tokens)" in text
    assert "not a valid regular expression" in text
    # The list arrives as YAML text from --set and the form.
    cfg = default_config("grpo", graders="[{grader: numeric_match, column: solution, weight: 2}]")
    assert cfg.graders == [{"grader": "numeric_match", "column": "solution", "weight": 2}]


def test_every_loss_type_trl_accepts_is_offered_and_the_config_carries_the_settings():
    from trl import GRPOConfig

    from backend.methods.grpo import GRPO_LOSS_TYPES

    help_text = GRPOConfig.__dataclass_fields__["loss_type"].metadata["help"]
    supported = help_text.split("Supported values are")[1].split(".")[0]
    assert set(re.findall(r"'(\w+)'", supported)) == set(GRPO_LOSS_TYPES)
    cfg = default_config("grpo", num_generations=2, max_completion_length=16, temperature=0.7, beta=0.04,
                         loss_type="dr_grpo", scale_rewards="none", mask_truncated_completions=True,
                         graders=[{"grader": "numeric_match", "weight": 2.0}, {"grader": "output_format"}])
    shared = {"output_dir": "/tmp/x", "max_length": 64, "per_device_train_batch_size": 4,
              "gradient_accumulation_steps": 1, "use_cpu": True, "bf16": False, "report_to": []}
    args = get_method("grpo").build_args(cfg, shared)
    assert (args.num_generations, args.max_completion_length, args.temperature, args.beta) == (2, 16, 0.7, 0.04)
    assert (args.loss_type, args.scale_rewards, args.mask_truncated_completions) == ("dr_grpo", "none", True)
    assert args.reward_weights == [2.0, 1.0]


def test_memory_estimate_counts_the_sampled_tokens_and_the_group():
    device = {"kind": "cuda", "memory_mb": 80_000, "bf16": True}

    def sampling(**values):
        return estimate_memory(default_config("grpo", max_length=1024, **values), device, GEMMA3_270M).parts["sampling"]

    assert sampling(max_completion_length=512) > 1.5 * sampling(max_completion_length=128)
    # A group larger than batch x accumulation makes the sampling batch at least one whole group.
    assert sampling(num_generations=64, per_device_train_batch_size=4, gradient_accumulation_steps=1) > \
        2 * sampling(num_generations=4, per_device_train_batch_size=4, gradient_accumulation_steps=1)
    assert "sampling" not in estimate_memory(default_config("dpo"), device, GEMMA3_270M).parts


@pytest.mark.slow
def test_a_reward_file_grades_the_run_and_the_reward_rises(peaky_model_dir, tmp_path):
    from backend.core.events import RunFinished, TrainLog
    from backend.training.client import run_to_completion

    rewards = tmp_path / "my_rewards.py"
    rewards.write_text(LOW_TOKENS_REWARD, encoding="utf-8")
    cfg = tiny_run_config("grpo", peaky_model_dir, prompts_file(tmp_path / "p.jsonl"), max_steps=8,
                          quantization="none", per_device_train_batch_size=8, num_generations=4,
                          max_completion_length=8, learning_rate=2e-2, reward_file=str(rewards),
                          allow_reward_code=True, graders=[{"grader": "file:low_tokens"}])
    run, events = run_to_completion(cfg, timeout=300)
    assert isinstance(events[-1], RunFinished), events[-1]
    rewards_seen = [e.metrics["rewards/low_tokens/mean"] for e in events if isinstance(e, TrainLog)]
    assert len(rewards_seen) == 8
    first, last = sum(rewards_seen[:2]) / 2, sum(rewards_seen[-2:]) / 2
    assert last > first + 0.2, rewards_seen
    # The exact file the run used is kept beside its config.
    assert (run.run_dir / "reward_code" / "my_rewards.py").read_text(encoding="utf-8") == LOW_TOKENS_REWARD


# ------------------------------------------------------------------ command line
def test_cli_refuses_a_reward_file_without_permission_before_anything_loads(tmp_path, capsys):
    from backend.cli.main import main

    rewards = tmp_path / "rewards.py"
    rewards.write_text(LOW_TOKENS_REWARD, encoding="utf-8")
    code = main(["train", "--method", "grpo", "--data", str(prompts_file(tmp_path / "p.jsonl")),
                 "--reward-file", str(rewards), "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "--allow-reward-code" in err and "No run was started." in err
    assert not (tmp_path / "runs").exists()


def test_cli_reward_flags_become_graders(tmp_path):
    from backend.cli.main import build_parser, config_and_problems

    rewards = tmp_path / "rewards.py"
    rewards.write_text(LOW_TOKENS_REWARD, encoding="utf-8")
    args = build_parser().parse_args([
        "train", "--method", "rloo", "--data", str(prompts_file(tmp_path / "p.jsonl")),
        "--reward", "numeric_match:column=solution,weight=2", "--reward", "output_format:tags=answer",
        "--reward-file", str(rewards), "--allow-reward-code", "--set", "data_format=prompt_only"])
    cfg, problems = config_and_problems(args)
    assert problems == []
    assert cfg.graders == [{"grader": "numeric_match", "column": "solution", "weight": 2},
                           {"grader": "output_format", "tags": "answer"}, {"grader": "file:low_tokens"}]
    assert cfg.allow_reward_code and cfg.reward_file == str(rewards.resolve())
    args = build_parser().parse_args(["train", "--method", "sft", "--data", str(tmp_path / "p.jsonl"),
                                      "--reward", "numeric_match"])
    _cfg, problems = config_and_problems(args)
    assert any("grade sampled completions; SFT does not" in m for _f, m in problems)


def test_the_rl_demo_is_found_through_the_spec_and_its_config_is_valid():
    from backend.cli.main import build_parser, config_and_problems
    from backend.cli.rewards import demo_config_path

    spec = get_method("grpo")
    assert spec.demo and demo_config_path(spec.demo).is_file()
    cfg, problems = config_and_problems(build_parser().parse_args(["train", "--demo", spec.demo]))
    assert problems == [] and cfg.method == spec.key and Path(cfg.data_path).is_file()
    _cfg, problems = config_and_problems(build_parser().parse_args(["train", "--demo", "nope"]))
    assert "no demo named 'nope'" in problems[0][1]


@pytest.mark.slow
def test_a_grader_that_breaks_mid_run_ends_it_naming_the_function_line_and_sample(tiny_model_dir, tmp_path):
    from backend.core.events import RunFailed
    from backend.training.client import run_to_completion

    rewards = tmp_path / "strict.py"
    rewards.write_text("def strict(completions, solution, **kwargs):\n"
                       "    return [1.0 / (int(s) % 3) for s in solution]\n", encoding="utf-8")
    cfg = tiny_run_config("grpo", tiny_model_dir, prompts_file(tmp_path / "p.jsonl"), max_steps=2,
                          quantization="none", num_generations=2, max_completion_length=4,
                          reward_file=str(rewards), allow_reward_code=True, graders=[{"grader": "file:strict"}])
    _run, events = run_to_completion(cfg, timeout=300)
    failed = events[-1]
    assert isinstance(failed, RunFailed) and failed.kind == "bad_grader", failed
    assert "strict (strict.py:1)" in failed.message and "ZeroDivisionError" in failed.message
    assert "strict.py:2" in failed.message and "Sample: prompt 'Question" in failed.message


@pytest.mark.slow
def test_stop_ends_a_run_whose_grader_never_returns(tiny_model_dir, tmp_path):
    import time

    from backend.core.events import PhaseChanged, RunFailed
    from backend.training.client import run_to_completion

    rewards = tmp_path / "forever.py"
    rewards.write_text("import time\n\ndef forever(completions, **kwargs):\n    while True:\n"
                       "        time.sleep(1)\n", encoding="utf-8")
    cfg = tiny_run_config("grpo", tiny_model_dir, prompts_file(tmp_path / "p.jsonl"), max_steps=2,
                          quantization="none", num_generations=2, max_completion_length=4,
                          reward_file=str(rewards), allow_reward_code=True, graders=[{"grader": "file:forever"}])
    stopped_at = []

    def stop_once_training(run, event):
        if isinstance(event, PhaseChanged) and event.phase == "training" and not stopped_at:
            time.sleep(3)  # the first batch is being graded by now
            stopped_at.append(time.monotonic())
            run.request_stop()

    _run, events = run_to_completion(cfg, on_event=stop_once_training, timeout=300)
    failed = events[-1]
    assert isinstance(failed, RunFailed) and failed.kind == "bad_grader", failed
    assert "forever (forever.py:3)" in failed.message and "without returning" in failed.message
    assert time.monotonic() - stopped_at[0] < 60


@pytest.mark.slow
def test_a_reward_model_run_grades_the_sampled_completions(tiny_model_dir, tiny_reward_model_run,
                                                           easy_preferences):
    from backend.core.events import RunFinished, TrainLog
    from backend.training.client import run_to_completion

    cfg = tiny_run_config("grpo", tiny_model_dir, easy_preferences, max_steps=2, quantization="none",
                          num_generations=2, max_completion_length=6, reward_model=str(tiny_reward_model_run),
                          graders=[{"grader": "reward_model", "weight": 1.0}])
    _run, events = run_to_completion(cfg, timeout=300)
    assert isinstance(events[-1], RunFinished), events[-1]
    logs = [e.metrics for e in events if isinstance(e, TrainLog)]
    assert logs and all("rewards/reward_model/mean" in m for m in logs)
    # A model's scores differ between completions, unlike a grader that returns a constant.
    assert any(m["rewards/reward_model/std"] > 0 for m in logs), logs


@pytest.mark.parametrize("policy", ["truncate_left", "drop", "refuse"])
def test_prompts_too_long_for_the_completion_follow_the_long_prompts_setting(tiny_model_dir, policy):
    from types import SimpleNamespace

    from datasets import Dataset
    from transformers import AutoTokenizer

    from backend.methods.rl_common import fit_prompts
    from backend.runs.config import ConfigError

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = default_config("grpo", max_length=32, max_completion_length=16, long_prompts=policy)
    rows = {"prompt": ["Short question?", "The quick brown fox jumps over the lazy dog. " * 6 + "End?"],
            "solution": ["1", "2"]}
    ctx = SimpleNamespace(cfg=cfg, tokenizer=tok, train_dataset=Dataset.from_dict(rows), eval_dataset=None)
    if policy == "refuse":
        with pytest.raises(ConfigError, match="longer than Max length \\(32\\) less Max completion length"):
            fit_prompts(ctx)
        return
    fit_prompts(ctx)
    prompts = ctx.train_dataset["prompt"]
    assert prompts[0] == "Short question?" and ctx.train_dataset["solution"][0] == "1"
    if policy == "drop":
        assert len(prompts) == 1
    else:
        assert len(tok(prompts[1], add_special_tokens=False)["input_ids"]) <= 16 and prompts[1].endswith("End?")
