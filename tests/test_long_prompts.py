"""Long prompts: what Max length would cut, the Long prompts policy (truncate_left, drop,
refuse) applied by the worker for every method, the pre-flight counts, and a NaN loss
explained by what its batch held."""

from __future__ import annotations

import pytest

from backend.core.events import RunFailed, RunFinished, RunStarted, TrainLog, WorkerWarning
from backend.data.long_prompts import (answer_floor, fit_dataset, kept_prompt_tokens, measure_fit, outcome_text,
                                  refusal, row_lengths)
from backend.testing.synthetic_long_prompts import long_prompt_rows, write_long_prompt_set
from tests.conftest import tiny_run_config

MAX_LENGTH = 128  # the synthetic set's median prompt fits; its tail (10 of 48) is longer than this alone


@pytest.fixture(scope="module")
def tokenizer():
    from backend.models.chat_templates import ensure_chat_template
    from backend.testing.tiny_model import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    ensure_chat_template(tok)
    return tok


@pytest.fixture
def long_set(tmp_path):
    return write_long_prompt_set(tmp_path / "long_prompts.jsonl")


def _dataset(rows):
    from datasets import Dataset

    return Dataset.from_list(rows)


def _pair_lengths(tok, row):
    return row_lengths(tok, row["prompt"], [row["chosen"], row["rejected"]])


# ------------------------------------------------------------------ arithmetic
def test_a_cut_prompt_leaves_the_answer_whole_or_at_least_its_budget():
    assert kept_prompt_tokens(100, 20, 512) == 100  # fits: untouched
    assert kept_prompt_tokens(1200, 100, 512) == 412  # answer kept whole
    assert kept_prompt_tokens(1200, 800, 512) == 512 - answer_floor(512) == 256  # answer gets its budget
    assert kept_prompt_tokens(10, 1000, 512) == 10  # a short prompt is never the problem
    fit = measure_fit([(100, 20), (600, 10), (500, 30), (10, 900)], 512)
    assert (fit.fits, fit.answer_lost, fit.answer_cut, fit.prompt_cut, fit.answer_still_cut) == (1, 1, 2, 2, 1)
    assert fit.length_that_fits_all() == 960
    assert "1 of 4 (25%) examples would lose all of their answer" in outcome_text(fit, "truncate_left")
    assert "2 prompts are cut from the start" in outcome_text(fit, "truncate_left")
    message = refusal(fit, "refuse", name="chats.jsonl")
    assert "Max length to 960" in message and "chats.jsonl" in message and "truncate_left" in message
    assert refusal(fit, "truncate_left") is None
    assert "most of the data" in refusal(fit, "drop")  # 3 of 4 would be left out
    assert refusal(measure_fit([(100, 20)] * 3 + [(600, 10)], 512), "drop") is None


# ------------------------------------------------------------ the worker's data step
def test_truncate_left_keeps_every_answer_and_the_end_of_each_prompt(tokenizer):
    rows = long_prompt_rows()
    data, result = fit_dataset(_dataset(rows), tokenizer, MAX_LENGTH, "truncate_left")
    assert result.fit.answer_lost == 10 and result.fit.fits == 38 and len(data) == len(rows)
    assert len(result.truncated_rows) == 10
    for i in result.truncated_rows:
        prompt_len, answer_len = _pair_lengths(tokenizer, data[i])
        assert prompt_len + answer_len <= MAX_LENGTH and answer_len > 0
        assert rows[i]["prompt"].endswith(data[i]["prompt"][-40:])  # the end (the question) is kept
        assert (data[i]["chosen"], data[i]["rejected"]) == (rows[i]["chosen"], rows[i]["rejected"])
    untouched = [i for i in range(len(rows)) if i not in result.truncated_rows]
    assert all(data[i] == rows[i] for i in untouched)


def test_drop_leaves_those_rows_out_and_refuse_changes_nothing(tokenizer):
    rows = long_prompt_rows()
    data, result = fit_dataset(_dataset(rows), tokenizer, MAX_LENGTH, "drop")
    assert len(data) == 38 and len(result.dropped_rows) == 10
    assert all(sum(_pair_lengths(tokenizer, r)) <= MAX_LENGTH for r in data)
    data, result = fit_dataset(_dataset(rows), tokenizer, MAX_LENGTH, "refuse")
    assert len(data) == 48 and "Max length to" in refusal(result.fit, "refuse")
    with pytest.raises(ValueError, match="long_prompts"):
        fit_dataset(_dataset(rows), tokenizer, MAX_LENGTH, "keep_end")


def test_a_long_conversation_loses_its_oldest_turns_first(tokenizer):
    long = long_prompt_rows()[0]["prompt"] + " " + long_prompt_rows()[-1]["prompt"]
    row = {"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": long},
                        {"role": "assistant", "content": "Earlier reply."}, {"role": "user", "content": "And now?"},
                        {"role": "assistant", "content": "Sure, happy to help."}]}
    data, result = fit_dataset(_dataset([row]), tokenizer, MAX_LENGTH, "truncate_left")
    messages = data[0]["messages"]
    assert result.truncated_rows == [0]
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[1]["content"] == "And now?" and messages[-1]["content"] == "Sure, happy to help."


# ------------------------------------------------------------------ pre-flight
def test_preflight_counts_examples_that_would_lose_their_answer(tiny_model_dir, long_set):
    from backend.runs.preflight import max_length_notes, max_length_problems, measure_dataset

    cfg = tiny_run_config("orpo", tiny_model_dir, long_set, max_length=MAX_LENGTH)
    report = measure_dataset(cfg)
    assert report.length_unit == "tokens"  # the model's own tokenizer
    assert report.lengths["prompt"].median < MAX_LENGTH  # the old median-only check let this through
    assert max_length_problems(cfg, report) == []
    notes = max_length_notes(cfg, report)
    assert len(notes) == 1 and "of 48" in notes[0] and "would lose all of their answer" in notes[0]
    assert "cut from the start" in notes[0] and "No example trains on an empty answer" in notes[0]

    refused = dict(max_length_problems(tiny_run_config("orpo", tiny_model_dir, long_set, max_length=MAX_LENGTH,
                                                       long_prompts="refuse"), report))
    fits_all = report.length_fit(MAX_LENGTH).length_that_fits_all()
    assert f"raise Max length to {fits_all}" in refused["max_length"]
    roomy = tiny_run_config("orpo", tiny_model_dir, long_set, max_length=fits_all, long_prompts="refuse")
    assert max_length_problems(roomy, report) == [] and max_length_notes(roomy, report) == []


def test_the_cli_prints_the_counts_before_training_and_refuses_with_the_length_that_fits(tiny_model_dir,
                                                                                         long_set, tmp_path):
    import subprocess
    import sys

    base = [sys.executable, "-m", "backend.cli.main", "train", "--method", "orpo", "--data", str(long_set),
            "--model", str(tiny_model_dir), "--runs-dir", str(tmp_path / "runs"), "--steps", "1",
            "--set", f"max_length={MAX_LENGTH}"]
    refused = subprocess.run(base + ["--set", "long_prompts=refuse"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "No run was started" in refused.stderr
    assert "would lose all of their answer" in refused.stderr and "raise Max length to" in refused.stderr
    assert not (tmp_path / "runs").exists()


def test_long_prompts_setting_is_validated():
    from backend.runs.config import default_config, validate

    assert validate(default_config("dpo")) == []
    assert default_config("sft").long_prompts == "truncate_left"
    assert "long_prompts" in dict(validate(default_config("dpo", long_prompts="keep_end")))


# --------------------------------------------------------------------- worker
def _run(cfg, **kwargs):
    from backend.training.client import run_to_completion

    return run_to_completion(cfg, timeout=240, **kwargs)[1]


@pytest.mark.slow
def test_orpo_on_long_prompts_trains_without_nan_and_says_what_was_cut(tiny_model_dir, long_set):
    # The run: ORPO, batch 1, a max length most prompts fit and a tail does not. It
    # used to stop at a NaN loss; truncate_left (the default) keeps every answer.
    cfg = tiny_run_config("orpo", tiny_model_dir, long_set, max_length=MAX_LENGTH, per_device_train_batch_size=1,
                          max_steps=12, learning_rate=5e-4, eval_fraction=0.25, eval_steps=6)
    events = _run(cfg)
    assert isinstance(events[-1], RunFinished), events[-1]
    warning = next(e for e in events if isinstance(e, WorkerWarning) and e.kind == "long_prompts")
    assert "training examples would lose all of their answer" in warning.message
    assert "cut from the start" in warning.message
    losses = [e.metrics["loss"] for e in events if isinstance(e, TrainLog) and "loss" in e.metrics]
    assert len(losses) == 12 and all(loss == loss and abs(loss) < 1e6 for loss in losses)


@pytest.mark.slow
def test_drop_leaves_rows_out_and_refuse_stops_naming_max_length(tiny_model_dir, long_set):
    events = _run(tiny_run_config("sft", tiny_model_dir, long_set, max_length=MAX_LENGTH, long_prompts="drop",
                                  max_steps=2))
    assert isinstance(events[-1], RunFinished), events[-1]
    started = next(e for e in events if isinstance(e, RunStarted))
    assert started.train_rows == 38
    assert any(isinstance(e, WorkerWarning) and "are left out (Long prompts: drop)" in e.message for e in events)

    events = _run(tiny_run_config("dpo", tiny_model_dir, long_set, max_length=MAX_LENGTH,
                                  long_prompts="refuse", max_steps=2))
    failed = events[-1]
    assert isinstance(failed, RunFailed) and failed.kind == "bad_config", failed
    assert "Max length" in failed.message and "long_prompts.jsonl" in failed.message


@pytest.mark.slow
def test_the_workers_estimate_counts_only_the_answers_its_head_projects(tiny_model_dir, long_set):
    from backend.core.device_info import describe_device
    from backend.runs.config import from_dict
    from backend.training.memory_estimate import estimate_memory, model_shape

    events = _run(tiny_run_config("dpo", tiny_model_dir, long_set, max_length=MAX_LENGTH, max_steps=1))
    assert isinstance(events[-1], RunFinished), events[-1]
    started = next(e for e in events if isinstance(e, RunStarted))
    as_run = from_dict(started.config)
    assert as_run.score_trained_tokens_only  # chosen by the speed options on this CPU
    every_position = estimate_memory(as_run, describe_device(), model_shape(str(tiny_model_dir))).total_mb
    assert started.memory_estimate_mb < every_position  # the answers' tokens, not 2 x 128 per pair


# ---------------------------------------------------------------- NaN diagnosis
def test_nan_diagnosis_reads_empty_answers_from_a_real_collated_batch():
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from backend.training.batch_watch import batch_stats, diagnose

    collate = DataCollatorForPreference(pad_token_id=0, max_length=16)
    batch = collate([{"prompt_ids": list(range(1, 20)), "chosen_ids": [5, 6], "rejected_ids": [7]},
                     {"prompt_ids": [1, 2, 3], "chosen_ids": [5, 6], "rejected_ids": [7, 8]}])
    stats = batch_stats(batch)
    assert stats.lengths == [16, 5, 16, 5] and stats.answer_tokens == [0, 2, 0, 2]
    finding = diagnose([stats], max_length=16, fp16=False, learning_rate=2e-4)
    assert finding.causes[0] == "empty_answers"
    assert "2 had no answer tokens at all" in finding.summary
    assert finding.hint.startswith("An empty answer makes the loss NaN whatever the learning rate")
    assert finding.hint.index("Long prompts") < finding.hint.index("lower the learning rate")
    ordinary = diagnose([batch_stats(collate([{"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4]}]))],
                        max_length=16, fp16=True, learning_rate=2e-4)
    assert ordinary.causes == ["fp16"] and "fp16" in ordinary.hint


@pytest.mark.slow
def test_nan_failure_says_what_its_batches_held(tiny_model_dir, long_set, monkeypatch):
    from backend.testing.fault_injection import ENV_VAR

    monkeypatch.setenv(ENV_VAR, "nan@2")
    events = _run(tiny_run_config("orpo", tiny_model_dir, long_set, max_length=MAX_LENGTH, max_steps=6,
                                  gradient_accumulation_steps=2))
    failed = events[-1]
    assert isinstance(failed, RunFailed) and failed.kind == "nan_loss", failed
    assert "The batches of the steps before the NaN held 16 sequences" in failed.message  # 2 x 4 pairs
    assert "no answer tokens" not in failed.message
    assert failed.hint.startswith("No batch held an empty or cut answer")
