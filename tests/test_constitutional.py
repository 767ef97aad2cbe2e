"""Constitutional AI: answer, critique against a principle, revise; the pair keeps its critique."""

from __future__ import annotations

import json

import pytest

from backend.data.formats import DataFormat
from backend.data.loading import load_dataset_file
from backend.generation.preferences.constitution import (default_principles, load_principles, principle_for_row,
                                                        save_principles)
from backend.generation.preferences.events import JobFinished, RowDone
from backend.generation.preferences.inputs import read_input_rows
from backend.generation.preferences.job_run import GenerationJob
from backend.generation.preferences.jobs import run_job
from backend.generation.preferences.partial_file import PartialFile
from backend.generation.preferences.request import CONSTITUTIONAL, GenerationRequest, RequestError, check_request

PRINCIPLES = [{"name": "Polite", "critique": "Say what is rude.", "revision": "Rewrite it politely."},
              {"name": "Correct", "critique": "Say what is wrong.", "revision": "Rewrite it correctly."}]


class ScriptedModel:
    """Answers rudely, critiques by naming the principle, revises politely; on prompts mentioning
    'stubborn' its revision repeats the answer, which makes no pair."""

    label = "scripted"

    def __init__(self):
        self.conversations = []

    def answer(self, prompt, *, seed, max_new_tokens, temperature):
        self.conversations.append(prompt)
        last = prompt[-1]["content"]
        if last.startswith("Critique request:"):
            return f"Critique: {last.split(':', 1)[1].strip()} The answer was curt."
        if last.startswith("Revision request:"):
            return "No. Figure it out." if "stubborn" in prompt[0]["content"] else "Happy to help: here is how."
        return "No. Figure it out."


class Provider:
    def __init__(self, model):
        self.model = model

    def answerer(self, name):
        return self.model

    def judge(self, name):
        raise AssertionError("Constitutional AI has no judge")


def write_prompts(path, prompts):
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    return path


def test_critiques_are_kept_with_each_pair_and_an_unrevised_answer_makes_none(tmp_path):
    data = write_prompts(tmp_path / "prompts.jsonl", ["Help me?", "A stubborn one?", "And this?"])
    request = GenerationRequest(job=CONSTITUTIONAL, input_path=str(data), output_path=str(tmp_path / "cai.jsonl"),
                                principles=PRINCIPLES)
    model = ScriptedModel()
    report, _ = run_job(request, read_input_rows(data), Provider(model), PartialFile(request))

    rows = [json.loads(line) for line in (tmp_path / "cai.jsonl").read_text().splitlines()]
    assert [r["source_line"] for r in rows] == [1, 3]
    assert report["dropped"] == {"the revision is the same as the answer": 1}
    first = rows[0]
    assert (first["rejected"], first["chosen"]) == ("No. Figure it out.", "Happy to help: here is how.")
    assert first["principle"] == "Polite" and first["critique_request"] == "Say what is rude."
    assert first["critique"] == "Critique: Say what is rude. The answer was curt."
    assert rows[1]["principle"] == "Polite"  # rows 1, 2, 3 take Polite, Correct, Polite
    assert report["principles_used"] == {"Polite": 2}
    # The revision is asked in the same conversation: prompt, answer, critique request, critique, revision request.
    revision_turns = model.conversations[2]
    assert [m["role"] for m in revision_turns] == ["user", "assistant", "user", "assistant", "user"]
    assert revision_turns[3]["content"] == first["critique"]
    assert '"Help me?"' in revision_turns[4]["content"]  # the request is restated for the revision

    loaded = load_dataset_file(tmp_path / "cai.jsonl")
    assert loaded.format is DataFormat.PREFERENCE and loaded.rows_kept == 2
    assert "dpo" in loaded.supported_methods


def test_principles_default_list_file_round_trip_and_bad_files_named(tmp_path):
    shipped = default_principles()
    assert len(shipped) >= 5 and all(p["critique"] and p["revision"] for p in shipped)
    path = tmp_path / "mine.yaml"
    save_principles(path, PRINCIPLES)
    assert load_principles(path) == PRINCIPLES
    assert principle_for_row(PRINCIPLES, 0, seed=1)["name"] == "Correct"

    bad = tmp_path / "bad.yaml"
    bad.write_text("principles:\n  - name: Kind\n    critique: Is it kind?\n")
    with pytest.raises(RequestError, match="bad.yaml: principle 1 \\(Kind\\) has no revision request"):
        load_principles(bad)
    bad.write_text("principles: [unclosed\n")
    with pytest.raises(RequestError, match="bad.yaml is not valid YAML"):
        load_principles(bad)
    data = write_prompts(tmp_path / "p.jsonl", ["Hi?"])
    with pytest.raises(RequestError, match="at least one principle") as err:
        check_request(GenerationRequest(job=CONSTITUTIONAL, input_path=str(data), principles=[]))
    assert err.value.setting == "principles"


@pytest.mark.slow
def test_constitutional_job_through_the_worker_on_a_tiny_model(tmp_path, tiny_model_dir):
    from backend.runs.preflight import check_before_training

    data = write_prompts(tmp_path / "prompts.jsonl", ["Question 1: can you help?", "Question 2: what is water?"])
    request = GenerationRequest(job=CONSTITUTIONAL, input_path=str(data), output_path=str(tmp_path / "cai.jsonl"),
                                model=str(tiny_model_dir), principles=PRINCIPLES, max_new_tokens=6)
    events = []
    job = GenerationJob.start(request)
    for event in job.events():
        events.append(event)
    job.wait(timeout=60)
    job.close()
    assert isinstance(events[-1], JobFinished), events[-1]
    done = [e for e in events if isinstance(e, RowDone)]
    assert len(done) == 2
    rows = [json.loads(line) for line in request.output.read_text().splitlines()]
    assert len(rows) == events[-1].report["kept"] >= 1
    for row in rows:
        assert row["critique"] and row["chosen"] != row["rejected"]
        assert row["principle"] in ("Polite", "Correct") and row["model"]
    assert json.loads(request.report.read_text())["principles"] == PRINCIPLES
    # DPO then trains on the file, through its own worker.
    from backend.training.client import run_to_completion
    from tests.conftest import tiny_run_config

    cfg = tiny_run_config("dpo", tiny_model_dir, request.output, max_steps=2, per_device_train_batch_size=1)
    check_before_training(cfg, runs_root=tmp_path / "runs", reach_hub=lambda: None)
    _run, run_events = run_to_completion(cfg, runs_root=tmp_path / "runs", timeout=300)
    assert type(run_events[-1]).__name__ == "RunFinished", run_events[-1]
