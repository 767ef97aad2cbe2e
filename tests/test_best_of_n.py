"""Best-of-N: N answers per prompt from one batched generation, scored, ranked, reported."""

from __future__ import annotations

import math

import pytest

from backend.generation.best_of_n import (BestOfNError, BestOfNReport, BestOfNResult, RankedAnswer, RewardFunctionScorer,
                               rank_answers, run_batch, summarize)
from backend.generation.protocol import (BestOfNReportReady, BestOfNRequest, BestOfNRowReady, GenerationError,
                                         LoadRequest, ModelReady, RequestFinished, SamplingSettings,
                                         event_from_json, request_from_json)

PROMPTS = ["Question 1: can you help me?", "Question 2: what is water?", "Question 3: say thank you."]


def letter_share(prompts, completions, **_columns):
    """A controlled reward: the share of the letter e in the answer (varies with the sample)."""
    return [c.count("e") / max(1, len(c)) for c in completions]


def _answers(rewards):
    return [RankedAnswer(sample=i, text=f"answer {i}", reward=r) for i, r in enumerate(rewards)]


# ----------------------------------------------------------------- pure parts


def test_ranking_puts_the_best_first_nan_last_and_keeps_sample_order_on_ties():
    ranked = rank_answers(_answers([0.2, math.nan, 0.9, 0.2, -1.0]))
    assert [a.sample for a in ranked] == [2, 0, 3, 4, 1]
    assert [a.rank for a in ranked] == [1, 2, 3, 4, 5]


def test_report_numbers_on_controlled_rewards():
    results = []
    for i, rewards in enumerate(([0.1, 0.5, 0.3], [0.4, 0.2, 0.0], [math.nan, 0.6, 0.9])):
        answers = _answers(rewards)
        results.append(BestOfNResult(index=i, prompt=f"p{i}", n=3, side="base", answers=rank_answers(answers),
                                     single=RankedAnswer(**answers[0].to_dict())))
    report = summarize(results, n=3, side="base", baseline="first", scorer="letters", generation_calls=1,
                       generation_seconds=2.0, scoring_seconds=0.5)
    assert report.mean_best == pytest.approx((0.5 + 0.4 + 0.9) / 3)
    assert report.mean_single == pytest.approx((0.1 + 0.4) / 2)  # an unscored single answer is left out
    assert report.win_rate == pytest.approx(0.5)  # won on the first, tied on the second
    assert (report.samples, report.single_samples, report.scored) == (9, 3, 9)
    assert report.seconds == pytest.approx(2.5) and report.seconds_per_prompt == pytest.approx(2.5 / 3)
    assert "Best-of-3" in report.headline() and "9 samples instead of 3" in report.headline()
    assert results[0].gain == pytest.approx(0.4)


def test_the_protocol_carries_the_request_and_both_events():
    request = request_from_json('{"op": "best_of_n", "id": "b1", "prompt": "hi", "n": 8, "side": "base", '
                                '"graders": [{"grader": "length"}], "baseline": "greedy"}')
    assert isinstance(request, BestOfNRequest) and request.n == 8 and request.graders == [{"grader": "length"}]
    answers = _answers([0.3, math.nan])
    row = BestOfNRowReady(request_id="b1", total=1, result=BestOfNResult(
        index=0, prompt="hi", n=2, side="base", answers=rank_answers(answers), single=answers[0]))
    back = event_from_json(row.to_json())
    assert isinstance(back, BestOfNRowReady) and back.result.winner.reward == pytest.approx(0.3)
    assert math.isnan(back.result.answers[1].reward) and back.result.single.sample == 0
    report = BestOfNReportReady(request_id="b1", report=BestOfNReport(prompts=1, n=2, mean_best=0.3),
                                headline="h")
    again = event_from_json(report.to_json())
    assert isinstance(again.report, BestOfNReport) and again.report.mean_best == pytest.approx(0.3)


def test_a_scorer_returning_the_wrong_number_of_values_is_named():
    scorer = RewardFunctionScorer([lambda prompts, completions, **kw: [1.0]], [1.0], ["short_list"])
    with pytest.raises(BestOfNError, match="short_list returned 1 values for 2 answers"):
        scorer.score(["a", "b"], ["x", "y"], [[1], [2]], {})


# ------------------------------------------------------- on the tiny model


class _Service:
    """The generation worker's service in this process, its events in a list."""

    def __init__(self):
        from backend.generation.worker import GenerationService

        self.events = []
        self.service = GenerationService(self.events.append, log=lambda _m: None)

    def run(self, request):
        import threading

        self.events.clear()
        self.service.handle(request, threading.Event())
        return list(self.events)


@pytest.fixture(scope="module")
def tiny_service(tiny_model_dir):
    holder = _Service()
    events = holder.run(LoadRequest(id="load", model=str(tiny_model_dir), quantization="none"))
    assert any(isinstance(e, ModelReady) for e in events), events
    return holder


def _count_generate_calls(engine, monkeypatch):
    calls = []
    original = engine.generate

    def spy(prompts, side, sampling, cancel, **kwargs):
        calls.append(len(prompts))
        return original(prompts, side, sampling, cancel, **kwargs)

    monkeypatch.setattr(engine, "generate", spy)
    return calls


@pytest.mark.slow
def test_n_scored_samples_come_from_one_batched_call(tiny_service, monkeypatch):
    engine = tiny_service.service.engine
    calls = _count_generate_calls(engine, monkeypatch)
    scorer = RewardFunctionScorer([letter_share], [1.0], ["letter_share"])
    sampling = SamplingSettings(max_new_tokens=12, temperature=1.0, top_p=1.0, top_k=0, seed=11)
    results, report = run_batch(engine, [({"prompt": p}, p) for p in PROMPTS], 4, scorer, side="base",
                                sampling=sampling)
    assert calls == [12], "three prompts x four samples in one batched generation call"
    assert report.generation_calls == 1 and report.samples == 12 and report.prompts == 3
    for result in results:
        assert len(result.answers) == 4 and sorted(a.sample for a in result.answers) == [0, 1, 2, 3]
        assert [a.rank for a in result.answers] == [1, 2, 3, 4]
        rewards = [a.reward for a in result.answers]
        assert rewards == sorted(rewards, reverse=True)
        assert all(a.reward == pytest.approx(letter_share([], [a.text])[0]) for a in result.answers)
        assert result.single.sample == 0 and result.winner.reward >= result.single.reward
        assert len({a.seed for a in result.answers}) == 4
    texts = [a.text for r in results for a in r.answers]
    assert len(set(texts)) > len(PROMPTS), "the repeated prompts sampled different answers"
    assert report.mean_best >= report.mean_single
    assert report.mean_best == pytest.approx(sum(r.winner.reward for r in results) / 3)
    # The same seed repeats the same answers.
    again, _ = run_batch(engine, [({"prompt": p}, p) for p in PROMPTS], 4, scorer, side="base", sampling=sampling)
    assert [a.text for r in again for a in r.answers] == texts


@pytest.mark.slow
def test_greedy_baseline_costs_one_more_batched_call(tiny_service, monkeypatch):
    engine = tiny_service.service.engine
    calls = _count_generate_calls(engine, monkeypatch)
    scorer = RewardFunctionScorer([letter_share], [1.0], ["letter_share"])
    sampling = SamplingSettings(max_new_tokens=8, temperature=1.0, seed=3)
    results, report = run_batch(engine, [({"prompt": p}, p) for p in PROMPTS[:2]], 3, scorer, side="base",
                                sampling=sampling, baseline="greedy")
    assert calls == [6, 2] and report.generation_calls == 2 and report.scored == 8
    assert report.single_seconds is not None and report.single_seconds > 0
    assert all(r.baseline == "greedy" and r.single.seed == 3 for r in results)


@pytest.mark.slow
def test_the_worker_request_refuses_bad_settings_by_name(tiny_service):
    events = tiny_service.run(BestOfNRequest(id="b", prompt="Hi", n=4, side="base",
                                             sampling={"greedy": True}, graders=[]))
    error = next(e for e in events if isinstance(e, GenerationError))
    assert "Greedy decoding gives the same answer N times" in error.message and error.kind == "bad_request"
    assert isinstance(events[-1], RequestFinished) and not events[-1].ok
    events = tiny_service.run(BestOfNRequest(id="c", prompt="Hi", n=2, side="aligned"))
    assert "Only the base model is loaded" in next(e for e in events if isinstance(e, GenerationError)).message


@pytest.mark.slow
def test_cli_writes_the_best_answers_and_the_report_with_a_reward_model_and_a_grader(
        tiny_model_dir, tiny_reward_model_run, easy_preferences, tmp_path, capsys):
    import json

    from backend.cli.main import main

    out = tmp_path / "best.jsonl"
    code = main(["generate", "best-of-n", "--model", str(tiny_model_dir), "--quantization", "none",
                 "--data", str(easy_preferences), "--limit", "5", "-n", "3", "--max-new-tokens", "8",
                 "--reward-model", str(tiny_reward_model_run),
                 "--reward", "length_target:unit=characters,target=20,weight=0.5", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert f"to {out}" in printed and "Best-of-3" in printed
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [line["prompt"] for line in lines] == [f"Question {i}: can you help me with task {i}?" for i in range(5)]
    for line in lines:
        assert len(line["answers"]) == 3 and line["answers"][0]["text"] == line["best"]
        for answer in line["answers"]:
            # The total is the weighted sum of the reward model's score and the grader's.
            parts = answer["scores"]
            assert set(parts) == {"reward_model", "length_target"}
            assert answer["reward"] == pytest.approx(parts["reward_model"] + 0.5 * parts["length_target"])
        assert line["best_reward"] >= line["single_reward"]
    report = json.loads(out.with_suffix(".report.json").read_text(encoding="utf-8"))
    assert report["prompts"] == 5 and report["samples"] == 15 and report["generation_calls"] == 1
    assert report["mean_best"] == pytest.approx(sum(line["best_reward"] for line in lines) / 5)
    assert report["mean_single"] == pytest.approx(sum(line["single_reward"] for line in lines) / 5)


def test_cli_refuses_without_a_scorer(easy_preferences, capsys):
    from backend.cli.main import main

    assert main(["generate", "best-of-n", "--data", str(easy_preferences), "-n", "2"]) == 2
    assert "nothing scores the answers" in capsys.readouterr().out


# ------------------------------------------------------------ in Compare

GUI_GRADERS = "length_target:unit=characters,target=20,tolerance=2"


@pytest.fixture(scope="module")
def compare_tab(qapp, trained_dpo_run, tmp_path_factory):
    from app.compare.tab import CompareTab
    from app.theme import apply_theme
    from backend.runs.folder import list_runs

    apply_theme(qapp)
    widget = CompareTab(log_path=str(tmp_path_factory.mktemp("bon-log") / "generation.log"))
    widget.resize(1480, 900)
    widget.set_runs(list_runs(trained_dpo_run.parent))
    widget.sampling_panel.set_values({"greedy": False, "temperature": 1.0, "top_p": 1.0, "top_k": 0,
                                      "max_new_tokens": 10, "seed": 5})
    widget.show()
    yield widget
    widget.release_worker()
    widget.link.wait_released(15)
    widget.close()
    widget.deleteLater()


@pytest.mark.slow
@pytest.mark.gui
def test_compare_shows_the_n_answers_ranked_with_the_winner_highlighted(qtbot, compare_tab):
    view = compare_tab.best_of_n
    compare_tab.views.setCurrentWidget(view)
    qtbot.waitUntil(lambda: compare_tab.link.state() == "ready", timeout=120_000)
    view.n.setValue(4)
    view.graders.setText(GUI_GRADERS)
    view.prompt_edit.setPlainText("Question 3: can you help me with task 3?")
    qtbot.waitUntil(view.sample_button.isEnabled, timeout=10_000)
    view.sample_button.click()
    qtbot.waitUntil(lambda: len(view.cards()) == 4 and not view.is_running(), timeout=120_000)
    cards = view.cards()
    rewards = [card.answer.reward for card in cards]
    assert rewards == sorted(rewards, reverse=True)
    assert [card.is_winner for card in cards] == [True, False, False, False]
    assert sorted(card.answer.sample for card in cards) == [0, 1, 2, 3]
    assert "best first" in view.answers_title.text()


@pytest.mark.slow
@pytest.mark.gui
def test_compare_batch_report_fills_figures_and_table(qtbot, compare_tab):
    view = compare_tab.best_of_n
    qtbot.waitUntil(lambda: compare_tab.link.state() == "ready" and view.report_button.isEnabled(),
                    timeout=120_000)
    view.graders.setText(GUI_GRADERS)
    view.n.setValue(3)
    view.report_count.setValue(4)
    view.report_button.click()
    qtbot.waitUntil(lambda: view.report() is not None and not view.is_running(), timeout=120_000)
    report = view.report()
    assert report.prompts == 4 and report.samples == 12 and report.generation_calls == 1
    assert view.table.rowCount() == 4
    assert view.tiles["best"].value.text() == f"{report.mean_best:.3f}"
    assert view.tiles["cost"].value.text() == "12 vs 4"
    assert "Best-of-3" in view.headline.text()
    assert "tokens/s" in view.tiles["time"].note.text()
    assert "ranked by length_target" in view.answers_title.text()
    view.table.selectRow(2)
    assert view.cards()[0].answer.reward == pytest.approx(report_row_best(view, 2))


def report_row_best(view, row: int) -> float:
    return float(view.table.item(row, 1).text())


def test_a_grader_entry_that_does_not_parse_is_named(qtbot):
    from app.compare.best_of_n import parse_graders

    assert parse_graders("length_target:unit=words,target=30; required_words:words=please") == [
        {"grader": "length_target", "unit": "words", "target": 30}, {"grader": "required_words", "words": "please"}]
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_graders("length_target:thirty")


def test_a_prompt_answer_file_keeps_its_answer_column_for_the_graders(tmp_path):
    import json

    from backend.cli.best_of_n import read_prompt_rows

    path = tmp_path / "sums.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"What is {i} plus 1?", "answer": str(i + 1)}) + "\n"
                            for i in range(5)), encoding="utf-8")
    rows = read_prompt_rows(str(path), limit=3)
    assert rows == [{"prompt": f"What is {i} plus 1?", "answer": str(i + 1)} for i in range(3)]
