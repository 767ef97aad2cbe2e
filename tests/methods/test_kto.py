"""KTO's own checks: the unpaired shapes it trains on, its class-balance advice, its batch
order, its settings reaching TRL, and margins that open on an easy thumbs-up/down set."""

import json
from pathlib import Path

import pytest

from backend.data.formats import DatasetError
from backend.data.loading import dataset_for_method, load_dataset_file
from backend.data.report import build_report, format_report_text, method_advice
from backend.training.memory_estimate import GEMMA3_270M, estimate_memory
from backend.methods import get_method
from backend.methods.kto import balance_advice, order_rows
from backend.runs.config import default_config, validate
from tests.conftest import tiny_run_config

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "datasets"


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_every_unpaired_shape_reaches_the_trainer_as_prompt_completion_label(tmp_path):
    conversations = dataset_for_method(load_dataset_file(FIXTURES / "kto_conversations.jsonl"), "kto")
    assert conversations.column_names == ["prompt", "completion", "label"]
    assert conversations[1] == {"prompt": [{"role": "user", "content": "Question 1: can you help me with task 1?"}],
                                "completion": [{"role": "assistant", "content": "No. Figure it out yourself. "
                                                                                "Whatever."}],
                                "label": False}
    assert sum(conversations["label"]) == 24 and len(conversations) == 48

    sharegpt = write_jsonl(tmp_path / "sharegpt_kto.jsonl", [
        {"conversations": [{"from": "human", "value": "Name a fruit"}, {"from": "gpt", "value": "Apple"}],
         "kto_tag": True},
        {"conversations": [{"from": "human", "value": "Name a fruit"}, {"from": "gpt", "value": "Carrot"}],
         "kto_tag": False},
    ])
    rows = dataset_for_method(load_dataset_file(sharegpt), "kto").to_list()
    assert [(r["completion"][0]["content"], r["label"]) for r in rows] == [("Apple", True), ("Carrot", False)]

    # Pairs are split into a good and a bad answer each.
    pairs = dataset_for_method(load_dataset_file(FIXTURES / "preference.jsonl"), "kto")
    assert len(pairs) == 8 and sum(pairs["label"]) == 4


def test_demonstrations_and_prompts_are_refused_with_the_reason():
    spec = get_method("kto")
    for name, phrase in (("prompt_completion.csv", "demonstrations only"), ("prompts_only.jsonl", "prompts only")):
        loaded = load_dataset_file(FIXTURES / name)
        assert "kto" not in loaded.supported_methods
        with pytest.raises(DatasetError, match=phrase):
            dataset_for_method(loaded, "kto")
    assert "kto" in load_dataset_file(FIXTURES / "unpaired.jsonl").supported_methods
    assert spec.group == "Offline preference" and spec.implicit_reward


def test_balance_advice_follows_trls_ratio_rule():
    assert balance_advice(100, 100) is None
    assert balance_advice(130, 100) is None  # 1.3× lies within 1 to 4/3
    text = balance_advice(300, 100)
    assert "300 answers are labelled good and 100 bad" in text and "3.00×" in text
    # undesirable weight w: 300 / (100 w) within [1, 4/3] -> w in [2.25, 3]; or desirable in [1/3, 4/9].
    assert "undesirable weight to 2.25–3.00" in text and "desirable weight to 0.33–0.44" in text
    assert balance_advice(300, 100, undesirable_weight=2.5) is None
    fewer_good = balance_advice(50, 200)
    assert "0.25×" in fewer_good and "desirable weight to 4.00–5.33" in fewer_good
    assert "every answer is labelled good" in balance_advice(10, 0)


def test_the_data_report_and_the_ready_line_say_how_to_balance(tmp_path):
    rows = [{"prompt": f"Q{i}?", "completion": f"Answer {i}.", "label": "thumbs up" if i % 3 else "thumbs down"}
            for i in range(30)]
    report = build_report(load_dataset_file(write_jsonl(tmp_path / "uneven.jsonl", rows)))
    assert report.label_counts == {"good": 20, "bad": 10}
    text = format_report_text(report)
    assert "20 answers labelled good, 10 bad." in text
    assert "KTO: 20 answers are labelled good and 10 bad" in text and "undesirable weight to 1.50–2.00" in text
    assert method_advice(default_config("kto"), report) == [balance_advice(20, 10)]
    assert method_advice(default_config("kto", undesirable_weight=1.75), report) == []
    assert method_advice(default_config("dpo"), report) == []
    balanced = build_report(load_dataset_file(FIXTURES / "kto_conversations.jsonl"))
    assert not [w for w in balanced.warnings if w.startswith("KTO")]


def test_the_command_line_hears_the_balance_advice_before_the_launch(tmp_path):
    """`alignstudio train` prints the preflight's notes: the advice is among them, not only in worker.log."""
    from backend.runs.preflight import run_preflight

    rows = [{"prompt": f"Q{i}?", "completion": f"Answer {i}.", "label": bool(i % 4)} for i in range(32)]
    data = write_jsonl(tmp_path / "uneven.jsonl", rows)
    notes: list[str] = []
    run_preflight(default_config("kto", data_path=str(data)), runs_root=tmp_path / "runs", notes=notes)
    assert balance_advice(24, 8) in notes
    notes.clear()
    run_preflight(default_config("kto", data_path=str(data), undesirable_weight=2.5), runs_root=tmp_path / "runs",
                  notes=notes)
    assert not [n for n in notes if n.startswith("KTO")]


def test_validation_refuses_a_batch_too_small_for_the_kl_term():
    problems = dict(validate(default_config("kto", per_device_train_batch_size=1)))
    assert "at least 2" in problems["per_device_train_batch_size"]
    assert validate(default_config("kto", per_device_train_batch_size=1, loss_type="apo_zero_unpaired")) == []
    assert "lm_head" in dict(validate(default_config("kto", lora_target_modules="q_proj,lm_head")))[
        "lora_target_modules"]


def test_row_order_mixes_both_labels_into_every_batch_and_keeps_every_row():
    labels = [True] * 30 + [False] * 10  # sorted by label, as files often are
    order = order_rows(labels, seed=3)
    assert sorted(order) == list(range(40))
    ordered = [labels[i] for i in order]
    for start in range(0, 40, 4):
        assert sum(ordered[start:start + 4]) == 3, ordered  # 3 good : 1 bad, as in the data
    assert order_rows(labels, seed=3) == order and order_rows(labels, seed=4) != order


def test_memory_counts_the_kl_batch_and_the_reference():
    spec = get_method("kto")
    assert spec.memory.sequences_per_example == 2 and spec.memory.reference_pass
    device = {"kind": "cuda", "memory_mb": 80_000, "bf16": True}
    live = estimate_memory(default_config("kto", max_length=2048), device, GEMMA3_270M)
    pre = estimate_memory(default_config("kto", max_length=2048, precompute_ref_log_probs=True), device,
                          GEMMA3_270M)
    assert live.parts.get("reference", 0) > 0 and "reference" not in pre.parts


@pytest.mark.slow
def test_trl_config_gets_beta_and_both_weights(tmp_path):
    from backend.training.trainer_builders import Precision, build_trl_args

    cfg = default_config("kto", beta=0.2, desirable_weight=1.5, undesirable_weight=0.8)
    args = build_trl_args(cfg, Precision("cpu", None, bf16=False, fp16=False), str(tmp_path), has_eval=False)
    assert type(args).__name__ == "KTOConfig"
    assert (args.beta, args.desirable_weight, args.undesirable_weight, args.loss_type) == (0.2, 1.5, 0.8, "kto")
    assert args.train_sampling_strategy == "sequential"  # the order the build puts the rows in is kept


@pytest.mark.slow
def test_margins_open_on_an_easy_thumbs_up_down_set(tiny_model_dir, studio_home):
    """Whole conversations with a label (thumbs up/down and true/false mixed): after three
    steps the good answers' reward is above the bad ones'."""
    from backend.core.events import RunFinished, TrainLog
    from backend.training.client import run_to_completion

    cfg = tiny_run_config("kto", tiny_model_dir, FIXTURES / "kto_conversations.jsonl", max_steps=3)
    run, events = run_to_completion(cfg, timeout=300)
    assert isinstance(events[-1], RunFinished), events[-1]
    logs = [e.metrics for e in events if isinstance(e, TrainLog) and "rewards/margins" in e.metrics]
    assert len(logs) == 3
    first, last = logs[0], logs[-1]
    assert last["rewards/margins"] > first["rewards/margins"] + 0.15, [m["rewards/margins"] for m in logs]
    assert last["rewards/chosen"] > last["rewards/rejected"]
    assert last["loss"] < first["loss"]
    assert set(get_method("kto").expected_keys) <= set(last)
