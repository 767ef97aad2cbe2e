"""Sampled completions reach the window as SampleBatch events: built from a real TRL
GRPO trainer on the tiny model, capped, grouped, serialised and read back."""

from __future__ import annotations

import math
import threading

import pytest

from backend.core.events import SampleBatch, event_from_json
from backend.training.sample_capture import COMPLETION_CHARS, SampleCapture, cut_middle, render_text


def test_cut_middle_keeps_start_and_end_and_says_how_much_went():
    text = "Q" * 100 + "x" * 5000 + "ANSWER 42"
    cut = cut_middle(text, 300)
    assert cut.startswith("Q" * 100) and cut.endswith("ANSWER 42")
    assert "characters cut" in cut and len(cut) < 400
    assert cut_middle("short", 300) == "short"


def test_chat_messages_render_as_text():
    assert render_text([{"role": "assistant", "content": "42"}]) == "42"
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    assert render_text(prompt) == "system: Be brief.\nuser: 2+2?"


def test_sample_batch_round_trips_with_nan_scores():
    batch = SampleBatch(step=3, graders=["a", "b"], rows=[
        {"prompt": "p", "completion": "c", "scores": {"a": 1.0, "b": math.nan}, "reward": 1.0,
         "advantage": -0.5, "group": 0}], total_rows=4)
    back = event_from_json(batch.to_json())
    assert isinstance(back, SampleBatch) and back.step == 3 and back.total_rows == 4
    assert math.isnan(back.rows[0]["scores"]["b"]) and back.rows[0]["scores"]["a"] == 1.0


def _count_a(completions, **kwargs):
    return [float(c.count("a")) for c in completions]


def _length(completions, **kwargs):
    return [len(c) / 10 for c in completions]


@pytest.mark.slow
def test_grpo_trainer_samples_arrive_with_scores_groups_and_advantages(tiny_model_dir, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from backend.training.event_callback import EventCallback

    events = []
    callback = EventCallback(events.append, threading.Event())
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    data = Dataset.from_list([{"prompt": f"Question {i}: " + "long words " * 200} for i in range(8)])
    args = GRPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=6, max_steps=2, logging_steps=1, report_to=[], use_cpu=True,
                      reward_weights=[1.0, 0.5], save_strategy="no", bf16=False)
    trainer = GRPOTrainer(model=model, reward_funcs=[_count_a, _length], args=args, train_dataset=data,
                          processing_class=tok, callbacks=[callback])
    callback.watch_samples(trainer)
    trainer.train()

    batches = [e for e in events if isinstance(e, SampleBatch)]
    assert [b.step for b in batches] == [1, 2]
    batch = batches[-1]
    assert batch.graders == ["_count_a", "_length"] and batch.total_rows == 4
    assert [row["group"] for row in batch.rows] == [0, 0, 1, 1]
    for row in batch.rows:
        assert set(row["scores"]) == {"_count_a", "_length"}
        assert row["scores"]["_count_a"] == row["completion"].count("a")
        assert row["reward"] == pytest.approx(row["scores"]["_count_a"] + 0.5 * row["scores"]["_length"])
        assert math.isfinite(row["advantage"])
        assert "characters cut" in row["prompt"] and len(row["prompt"]) < 700
        assert len(row["completion"]) <= COMPLETION_CHARS + 60
    # Advantages are relative within a group: they sum to about zero in each.
    for group in (0, 1):
        assert abs(sum(r["advantage"] for r in batch.rows if r["group"] == group)) < 1e-3


class _FakeTrainer:
    """The shape TRL keeps its last generation batch in, for the cap and the fallbacks."""

    def __init__(self, rows: int, group: int):
        self.num_generations = group
        self.reward_func_names = ["g"]
        self._logs = {"prompt": [f"p{i // group}" for i in range(rows)],
                      "completion": [f"c{i}" for i in range(rows)],
                      "rewards": {"g": [float(i) for i in range(rows)]},
                      "advantages": [0.0] * rows}


def test_only_the_latest_whole_groups_travel_and_a_batch_is_sent_once():
    capture = SampleCapture(_FakeTrainer(rows=40, group=6), max_rows=32)
    batch = capture.collect(5)
    assert len(batch.rows) == 30 and batch.total_rows == 40  # five whole groups of six, the latest
    assert batch.rows[0]["completion"] == "c10" and batch.rows[-1]["group"] == 6
    assert capture.collect(6) is None  # the same generation batch, seen at the next log


def test_a_trainer_without_the_sample_log_is_reported_once_not_fatal():
    callback_events = []
    from backend.training.event_callback import EventCallback

    callback = EventCallback(callback_events.append, threading.Event())
    callback._samples = SampleCapture(object())
    callback._emit_samples(1)
    callback._emit_samples(2)
    assert len(callback_events) == 1 and "sample table stays empty" in callback_events[0].message
