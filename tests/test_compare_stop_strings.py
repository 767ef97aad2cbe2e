"""Stop strings: an answer ends where the model writes one, and the stop string is cut off.

The rule that picks a default for a plain-text prompt format, and the form's
text for the list, are checked without a model; the rest runs the real
generation worker on tiny models: the DPO run every compare test shares, and a
tiny SFT run taught to go on with a new "Question:" after its answer, as a
base model does on the demo's "Question: ...\\nAnswer:" prompts.
"""

from __future__ import annotations

import json
import re

import pytest

from backend.generation.protocol import (GenerationDone, ProtocolError, ResponsesScored, SamplingSettings,
                                         TokenStreamed, parse_stop_strings, stop_strings_text)
from backend.data.prompt_rendering import default_stop_strings

QA_PROMPT = "Question: what is task 3?\nAnswer:"


def _of(events, cls):
    return [e for e in events if isinstance(e, cls)]


# ------------------------------------------------------------- no model needed


def test_the_form_text_round_trips_line_breaks_and_commas():
    stops = ["Question:", "\nUser:", "a, b", "back\\slash"]
    text = stop_strings_text(stops)
    assert text == "Question:, \\nUser:, a\\, b, back\\\\slash"
    assert parse_stop_strings(text) == stops
    assert parse_stop_strings("") == [] and parse_stop_strings(" , ") == []
    with pytest.raises(ValueError, match=r"'\\q' is not an escape"):
        parse_stop_strings("Question\\q")


def test_sampling_settings_take_and_check_stop_strings():
    assert SamplingSettings.from_dict({}).stop_strings is None  # None: the loaded run's default
    assert SamplingSettings.from_dict({"stop_strings": []}).stop_strings == []
    assert SamplingSettings.from_dict({"stop_strings": "Q:"}).stop_strings == ["Q:"]
    with pytest.raises(ProtocolError, match="empty stop string"):
        SamplingSettings.from_dict({"stop_strings": [""]})
    with pytest.raises(ProtocolError, match="list of strings"):
        SamplingSettings.from_dict({"stop_strings": [3]})
    with pytest.raises(ProtocolError, match="at most 8"):
        SamplingSettings.from_dict({"stop_strings": [f"s{i}" for i in range(9)]})


def test_the_default_stop_follows_the_prompt_format(tmp_path):
    from pathlib import Path

    demo = Path(__file__).resolve().parent.parent / "resources" / "demo" / "demo_preferences.jsonl"
    rows = [json.loads(line) for line in demo.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert default_stop_strings(rows) == ["Question:"]
    assert default_stop_strings([{"prompt": "Human: hi\n\nAssistant:"}]) == ["Human:"]
    # No turn framing, message lists (the template's end-of-turn token ends them), or mixed formats: none.
    assert default_stop_strings([{"prompt": "Question 3: can you help me with task 3?"}]) == []
    assert default_stop_strings([{"prompt": [{"role": "user", "content": "hi"}]}]) == []
    assert default_stop_strings([{"prompt": "Question: a\nAnswer:"}, {"prompt": "Human: b\nAssistant:"}]) == []
    assert default_stop_strings([]) == []


# --------------------------------------------------------- the real worker


@pytest.fixture(scope="module")
def dpo_session(trained_dpo_run, tmp_path_factory):
    from backend.generation.client import GenerationSession

    session = GenerationSession.start(run_dir=trained_dpo_run,
                                      log_path=tmp_path_factory.mktemp("stop-log") / "generation.log")
    session.wait_ready(timeout=180)
    yield session
    session.close()


@pytest.mark.slow
def test_a_stop_string_ends_the_answer_and_is_cut_off(dpo_session, tiny_model_dir):
    prompt = "The quick brown fox"
    free = dpo_session.collect(dpo_session.generate(prompt, side="base", score=False,
                                                    sampling={"greedy": True, "max_new_tokens": 40,
                                                              "stop_strings": []}))
    (full,) = _of(free, GenerationDone)
    # A word the model writes anyway, after the start of its answer, is the stop string.
    match = re.search(r"[A-Za-z]{4,}", full.text[1:])
    assert match is not None, full.text
    stop = match.group(0)
    expected = full.text[:full.text.find(stop)].rstrip()

    events = dpo_session.collect(dpo_session.generate(prompt, side="base", score=True,
                                                      sampling={"greedy": True, "max_new_tokens": 40,
                                                                "stop_strings": [stop]}))
    (done,) = _of(events, GenerationDone)
    assert done.finish_reason == "stop" and done.stop_string == stop
    assert done.text == expected and stop not in done.text
    assert done.n_tokens < full.n_tokens
    # Streaming held the stop string back: it never showed up in the pane.
    streamed = "".join(t.text for t in _of(events, TokenStreamed))
    assert stop not in streamed and expected.startswith(streamed.rstrip())
    # The score covers the tokens kept, not the stop string.
    (scored,) = _of(events, ResponsesScored)
    assert scored.by_label()["base"].n_tokens == done.n_tokens

    # transformers' own stop_strings in generate() stops at the same place.
    from tests.plain_tiny_model import load_plain_4bit

    tokenizer, model = load_plain_4bit(tiny_model_dir)
    inputs = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**inputs, do_sample=False, max_new_tokens=40, pad_token_id=tokenizer.pad_token_id,
                         stop_strings=[stop], tokenizer=tokenizer)
    text = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert stop in text
    assert text[:text.find(stop)].rstrip() == done.text


@pytest.fixture(scope="module")
def qa_run(tmp_path_factory, tiny_model_dir):
    """A tiny SFT run on "Question: ...\\nAnswer:" prompts whose answers go on with the
    next "Question:", the way a base model rambles on the demo's format."""
    from backend.training.client import run_to_completion
    from tests.conftest import tiny_run_config

    home = tmp_path_factory.mktemp("qa-home")
    data = home / "qa.jsonl"
    with data.open("w", encoding="utf-8") as fh:
        for i in range(48):
            fh.write(json.dumps({"prompt": f"Question: what is task {i}?\nAnswer:",
                                 "completion": " Sure.\nQuestion: and task 9?\nAnswer: Sure."}) + "\n")
    mp = pytest.MonkeyPatch()
    mp.setenv("ALIGNSTUDIO_HOME", str(home))
    try:
        cfg = tiny_run_config("sft", tiny_model_dir, data, max_steps=60, eval_fraction=0.25)
        run, events = run_to_completion(cfg, runs_root=home / "runs", timeout=300)
    finally:
        mp.undo()
    assert type(events[-1]).__name__ == "RunFinished", events[-1]
    return run.run_dir


@pytest.mark.slow
def test_a_plain_question_answer_run_stops_at_the_next_question_by_default(qa_run, tmp_path):
    from backend.generation.client import GenerationSession

    session = GenerationSession.start(run_dir=qa_run, log_path=tmp_path / "generation.log")
    try:
        ready = session.wait_ready(timeout=180)
        assert ready.prompt_style == "raw" and ready.default_stop_strings == ["Question:"]
        greedy = {"greedy": True, "max_new_tokens": 30}

        rambling = session.collect(session.generate(QA_PROMPT, side="aligned", score=False,
                                                    sampling={**greedy, "stop_strings": []}))
        (long,) = _of(rambling, GenerationDone)
        assert "\nQuestion:" in long.text and long.finish_reason == "length"

        # Sampling that leaves stop_strings unset gets the run's default.
        events = session.collect(session.generate(QA_PROMPT, side="aligned", score=False, sampling=greedy))
        (done,) = _of(events, GenerationDone)
        assert done.finish_reason == "stop" and done.stop_string == "Question:"
        assert done.text == long.text[:long.text.find("Question:")].rstrip() == " Sure."
        assert 0 < done.n_tokens < long.n_tokens

        # A batch compare stops its answers the same way.
        batch = session.collect(session.batch_compare(prompts=[QA_PROMPT], sampling=greedy))
        row = [e for e in batch if type(e).__name__ == "BatchRowReady"][0].row
        assert row.aligned_answer == " Sure." and row.aligned_finish == "stop"
        assert row.aligned_stop_string == "Question:"
    finally:
        session.close()
