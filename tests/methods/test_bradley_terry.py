"""The reward model's own traits: a one-output score head trained with LoRA, accuracy that
rises on an easy set, and a run folder that loads back as a reward model and ranks answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.data.formats import DataFormat, supported_methods
from backend.methods import get_method
from backend.runs.config import default_config, save_yaml
from backend.runs.folder import ADAPTER_DIR, CONFIG_FILE, EVAL_SPLIT_FILE, read_events


def test_trains_on_pairs_only_with_a_score_head():
    spec = get_method("bradley_terry")
    assert spec.model_head == "score" and spec.group == "Reward model"
    assert "bradley_terry" in supported_methods(DataFormat.PREFERENCE)
    assert "bradley_terry" not in supported_methods(DataFormat.ALPACA)
    assert {"accuracy", "margin", "min_reward", "mean_reward", "max_reward"} <= {m.key for m in spec.metrics}


def test_lora_trains_the_score_head_and_other_methods_keep_the_lm_head():
    from backend.training.trainer_builders import build_lora_config

    reward = build_lora_config(default_config("bradley_terry"))
    assert str(reward.task_type.value if hasattr(reward.task_type, "value") else reward.task_type) == "SEQ_CLS"
    assert "score" in reward.modules_to_save
    dpo = build_lora_config(default_config("dpo"))
    assert not dpo.modules_to_save and "CAUSAL_LM" in str(dpo.task_type)


def test_memory_estimate_counts_no_vocabulary_logits_for_a_score_head():
    from backend.training.memory_estimate import GEMMA3_270M, estimate_memory

    device = {"kind": "cuda", "memory_mb": 80_000, "bf16": True}
    reward = estimate_memory(default_config("bradley_terry", max_length=2048), device, GEMMA3_270M)
    dpo = estimate_memory(default_config("dpo", max_length=2048), device, GEMMA3_270M)
    assert reward.parts["logits"] < dpo.parts["logits"] / 4
    assert "reference" not in reward.parts


def test_trl_config_gets_the_centring_coefficient_only_when_set():
    from backend.methods.bradley_terry import trl_cli_keys

    assert trl_cli_keys(default_config("bradley_terry"))["center_rewards_coefficient"] is None
    assert trl_cli_keys(default_config("bradley_terry", center_rewards_coefficient=0.01))["center_rewards_coefficient"] == 0.01


def test_only_reward_model_folders_count_as_reward_models(tmp_path, tiny_model_dir):
    from backend.rewards.scoring import RewardModelError, is_reward_model, locate_reward_model

    # A run of a language-model method, with an adapter but no reward marker.
    run = tmp_path / "dpo-run"
    (run / ADAPTER_DIR).mkdir(parents=True)
    (run / ADAPTER_DIR / "adapter_config.json").write_text("{}")
    save_yaml(default_config("dpo", model=str(tiny_model_dir)), run / CONFIG_FILE)
    assert not is_reward_model(run)
    with pytest.raises(RewardModelError, match="DPO.*not a reward model"):
        locate_reward_model(run)
    # A causal LM folder has no score head; a one-label classifier folder is a reward model.
    assert not is_reward_model(tiny_model_dir)
    classifier = tmp_path / "classifier"
    classifier.mkdir()
    (classifier / "config.json").write_text(json.dumps({"architectures": ["LlamaForSequenceClassification"],
                                                        "id2label": {"0": "LABEL_0"}}))
    assert is_reward_model(classifier)
    assert not is_reward_model(tmp_path / "missing")
    with pytest.raises(RewardModelError, match="not a folder"):
        locate_reward_model(tmp_path / "missing")


@pytest.mark.slow
def test_accuracy_rises_and_the_run_reloads_as_a_reward_model(tiny_reward_model_run):
    from backend.core.events import TrainLog
    from backend.rewards.scoring import is_reward_model, load_reward_scorer, locate_reward_model

    logs = [e.metrics for e in read_events(tiny_reward_model_run) if isinstance(e, TrainLog)]
    accuracy = [m["accuracy"] for m in logs if "accuracy" in m]
    margin = [m["margin"] for m in logs if "margin" in m]
    assert len(accuracy) >= 4, logs
    assert accuracy[0] <= 0.75 and accuracy[-1] == 1.0, (accuracy, margin)
    assert margin[-1] > margin[0] + 0.5, margin

    from backend.models.adapter_loading import AdapterLoadError, resolve_load_spec

    # Compare loads models that write answers; a reward model is refused with what to do instead.
    with pytest.raises(AdapterLoadError, match="is a reward model.*Evaluate rewards"):
        resolve_load_spec(run_dir=tiny_reward_model_run)

    marker = json.loads((tiny_reward_model_run / ADAPTER_DIR / "reward_model.json").read_text())
    assert marker["kind"] == "reward_model" and marker["head"] == "score" and marker["base_model"]
    assert is_reward_model(tiny_reward_model_run) and is_reward_model(tiny_reward_model_run / ADAPTER_DIR)
    assert locate_reward_model(tiny_reward_model_run / ADAPTER_DIR).run_dir == str(tiny_reward_model_run)

    held_out = [json.loads(line) for line in (tiny_reward_model_run / EVAL_SPLIT_FILE).open(encoding="utf-8")]
    prompts = [r["prompt"] for r in held_out]
    scorer = load_reward_scorer(str(tiny_reward_model_run))
    try:
        chosen = scorer.score(prompts, [r["chosen"] for r in held_out], batch_size=3)
        rejected = scorer.score(prompts, [r["rejected"] for r in held_out], batch_size=8)
        # Batching and padding leave a score unchanged.
        alone = scorer.score(prompts[:1], [held_out[0]["chosen"]], batch_size=1)
        # Chat messages go through the template and still get one finite score each.
        chat = scorer.score([[{"role": "user", "content": p}] for p in prompts[:2]],
                            [[{"role": "assistant", "content": r["chosen"]}] for r in held_out[:2]])
    finally:
        scorer.close()
    assert all(c > r for c, r in zip(chosen, rejected)), (chosen, rejected)
    assert alone[0] == pytest.approx(chosen[0], abs=1e-4)
    assert len(chat) == 2 and all(abs(v) < 1e6 for v in chat)
    with pytest.raises(RuntimeError, match="closed"):
        scorer.score(prompts[:1], ["x"])


def test_reward_model_from_a_folder_without_safetensors_is_refused(tmp_path, tiny_model_dir):
    from backend.models.source import ModelSourceError
    from backend.rewards.scoring import load_reward_scorer, write_reward_marker

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.bin").write_bytes(b"not read")
    write_reward_marker(adapter, default_config("bradley_terry", model=str(tiny_model_dir)))
    with pytest.raises(ModelSourceError, match="pickle"):
        load_reward_scorer(str(adapter))
    assert Path(adapter / "reward_model.json").is_file()


def test_the_reward_model_answers_to_its_plain_names(tmp_path, capsys):
    """`--method reward` (and config files saying so) reach the reward model, saved under its key."""
    from backend.cli.main import build_parser, main
    from backend.methods import get_method
    from backend.runs.config import default_config, load_yaml

    assert get_method("reward").key == get_method("RM").key == "bradley_terry"
    assert build_parser().parse_args(["train", "--method", "reward"]).method == "bradley_terry"
    assert default_config("reward").method == "bradley_terry"
    config = tmp_path / "config.yaml"
    config.write_text("method: reward\n", encoding="utf-8")
    assert load_yaml(config).method == "bradley_terry"
    assert main(["methods"]) == 0 and "also: reward" in capsys.readouterr().out
