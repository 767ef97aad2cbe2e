"""The window's reports count tokens in a helper process: same counts, no parse in the window's process."""

from __future__ import annotations

import json

import pytest

from backend.data import token_counts
from backend.data.loading import load_dataset_file
from backend.data.report import build_report
from backend.models import tokenizer_cache


@pytest.fixture
def helpers(monkeypatch):
    monkeypatch.setattr(token_counts, "_enabled", False)
    monkeypatch.setattr(tokenizer_cache, "_cache", {})
    token_counts.count_in_helper_processes()
    yield
    token_counts.close_helpers()


TEXTS = ["", "Hello world", "Ünïcödé — 🙂 and \"quotes\"\n\ttabs", "word " * 300]


def test_the_helper_counts_as_the_tokenizer_does(helpers, tiny_model_dir):
    file = tokenizer_cache.tokenizer_file(tiny_model_dir)
    counter = token_counts.counter_for(file)
    expected = [len(e.ids) for e in tokenizer_cache.load_tokenizer(file).encode_batch(TEXTS, add_special_tokens=False)]
    assert counter.counts(TEXTS) == expected and expected[-1] > 100
    assert token_counts.counter_for(file) is counter  # parsed once, kept for the next report


def test_a_report_measured_in_the_helper_equals_one_measured_here(helpers, tiny_model_dir, easy_preferences):
    loaded = load_dataset_file(easy_preferences)
    elsewhere = build_report(loaded, tokenizer_path=str(tiny_model_dir))
    assert not tokenizer_cache.is_loaded(tiny_model_dir)  # this process never parsed it
    token_counts.count_in_helper_processes(False)
    here = build_report(loaded, tokenizer_path=str(tiny_model_dir))
    assert tokenizer_cache.is_loaded(tiny_model_dir)
    assert elsewhere.length_unit == here.length_unit == "tokens"
    assert elsewhere.lengths == here.lengths and elsewhere.warnings == here.warnings
    assert elsewhere.suggested_max_length == here.suggested_max_length


def test_a_file_that_is_no_tokenizer_is_reported_as_without_the_helper(helpers, tmp_path, easy_preferences):
    bad = tmp_path / "tokenizer.json"
    bad.write_text(json.dumps({"not": "a tokenizer"}))
    loaded = load_dataset_file(easy_preferences)
    elsewhere = build_report(loaded, tokenizer_path=str(tmp_path))
    token_counts.count_in_helper_processes(False)
    here = build_report(loaded, tokenizer_path=str(tmp_path))
    assert elsewhere.length_unit == here.length_unit == "approx. tokens"
    assert [w for w in elsewhere.warnings if "could not be loaded" in w] == \
        [w for w in here.warnings if "could not be loaded" in w] != []


def test_a_helper_that_went_away_is_replaced_or_counted_here(helpers, tiny_model_dir, easy_preferences,
                                                             monkeypatch):
    file = tokenizer_cache.tokenizer_file(tiny_model_dir)
    counter = token_counts.counter_for(file)
    counter._process.kill()
    counter._process.wait()
    with pytest.raises(token_counts.TokenCounterError):
        counter.counts(TEXTS)
    assert token_counts.counter_for(file) is not counter  # the next report starts a new helper
    # One that dies after parsing, while a report measures: the report counts here instead.
    monkeypatch.setattr(token_counts, "counter_for", lambda _file: counter)
    report = build_report(load_dataset_file(easy_preferences), tokenizer_path=str(tiny_model_dir))
    assert report.length_unit == "tokens" and report.lengths
    assert not [w for w in report.warnings if "tokenizer" in w]
    assert tokenizer_cache.is_loaded(tiny_model_dir)
