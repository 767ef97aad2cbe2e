"""Reward evaluation: the per-subset arithmetic against hand counts, reading RewardBench-style
files, the CLI on a tiny reward model run (through the real worker), the implicit reward of a
DPO run, and the panel driven with pytest-qt."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest

from backend.rewards.evaluation import (PairScore, RewardEvalError, RewardEvalReport, length_note, read_preference_pairs,
                                       reward_source, summarize)
from backend.runs.config import default_config, save_yaml
from backend.runs.folder import ADAPTER_DIR, CONFIG_FILE, EVAL_SPLIT_FILE
from tests.conftest import POLITE, RUDE


def _score(subset, chosen, rejected, chosen_len=10, rejected_len=10):
    return PairScore(0, subset, chosen, rejected, chosen_len, rejected_len)


def test_accuracy_per_subset_matches_hand_counts_and_ties_count_as_wrong():
    scores = [_score("chat", 2.0, 1.0), _score("chat", 0.5, 0.1), _score("chat", 1.0, 1.0),  # 2 of 3
              _score("math", -1.0, 0.0), _score("math", 3.0, -3.0),  # 1 of 2
              _score("safety", 0.0, 1.0)]  # 0 of 1
    report = summarize(scores, source="run", reward_kind="reward model", data="x.jsonl")
    assert (report.pairs, report.correct) == (6, 3) and report.accuracy == 0.5
    assert [(s.name, s.pairs, s.correct) for s in report.subsets] == [("chat", 3, 2), ("math", 2, 1), ("safety", 1, 0)]
    assert report.subsets[0].accuracy == pytest.approx(2 / 3)
    again = RewardEvalReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again.subsets[1].accuracy == 0.5 and again.accuracy == 0.5
    # No subset column: no per-subset rows.
    assert summarize([_score("", 1.0, 0.0)]).subsets == []


def test_length_figures_and_the_note_say_when_the_reward_follows_length():
    # The longer answer always wins, whether it is the chosen one or not: a pure length reward.
    scores = [_score("", 5.0, 1.0, 50, 10), _score("", 4.0, 2.0, 40, 20), _score("", 1.0, 6.0, 10, 60),
              _score("", 3.0, 3.5, 30, 35)]
    report = summarize(scores)
    rewards = [v for s in scores for v in (s.chosen, s.rejected)]
    lengths = [v for s in scores for v in (s.chosen_length, s.rejected_length)]
    assert report.length_r == pytest.approx(statistics.correlation(lengths, rewards))
    assert report.longer_wins == 1.0 and report.unequal_pairs == 4
    assert report.accuracy_chosen_longer == 1.0 and report.accuracy_chosen_shorter == 0.0
    assert "mostly follows length" in report.length_note and "100%" in report.length_note
    assert report.length_verdict == "follows_length"
    # A reward that ignores length: the longer answer wins half the time.
    fair = summarize([_score("", 1.0, 0.0, 50, 10), _score("", 1.0, 0.0, 10, 50), _score("", 0.0, 1.0, 50, 10),
                      _score("", 0.0, 1.0, 10, 50)])
    assert fair.longer_wins == 0.5 and "explains little" in fair.length_note
    assert "same length" in length_note(summarize([_score("", 1.0, 0.0), _score("", 0.0, 1.0)]))


def test_reads_subset_or_category_keeps_duplicates_and_names_dropped_lines(tmp_path):
    rows = [{"prompt": "p1", "chosen": "a", "rejected": "b", "Category": "chat"},
            {"prompt": "p1", "chosen": "a", "rejected": "b", "Category": "chat"},
            {"prompt": "p2", "chosen": "a"},
            {"prompt": "p3", "chosen": "c", "rejected": "d", "Category": "math"}]
    path = tmp_path / "bench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    pairs = read_preference_pairs(path)
    assert pairs.subset_column == "Category"
    assert [(p.position, p.subset) for p in pairs.pairs] == [(1, "chat"), (2, "chat"), (4, "math")]
    assert [(d.line, d.field) for d in pairs.dropped] == [(3, "rejected")]
    assert len(read_preference_pairs(path, limit=2).pairs) == 2

    sft = tmp_path / "sft.jsonl"
    sft.write_text(json.dumps({"prompt": "p", "completion": "c"}) + "\n", encoding="utf-8")
    with pytest.raises(RewardEvalError, match="sft.jsonl.*not preference pairs"):
        read_preference_pairs(sft)
    with pytest.raises(RewardEvalError, match="does not exist"):
        read_preference_pairs(tmp_path / "missing.jsonl")


def test_a_run_without_any_reward_is_refused_with_its_method_named(tmp_path):
    run = tmp_path / "sft-run"
    (run / ADAPTER_DIR).mkdir(parents=True)
    (run / ADAPTER_DIR / "adapter_config.json").write_text("{}")
    save_yaml(default_config("sft"), run / CONFIG_FILE)
    with pytest.raises(RewardEvalError, match="SFT.*neither a score head nor an implicit reward"):
        reward_source(run)
    with pytest.raises(RewardEvalError, match="Pick a run"):
        reward_source("")


def write_controlled_pairs(path: Path) -> Path:
    """Subset "kept": polite chosen over rude (the tiny reward model agrees); subset "flipped": the
    same answers with the labels swapped (it disagrees on every one). Hand count: 5/5 and 0/3."""
    rows = []
    for i in range(5):
        rows.append({"prompt": f"Question {i}: can you help me with task {i}?", "chosen": " " + POLITE[i % 3],
                     "rejected": " " + RUDE[i % 3], "subset": "kept"})
    for i in range(3):
        rows.append({"prompt": f"Question {i + 5}: can you help me with task {i}?", "chosen": " " + RUDE[i],
                     "rejected": " " + POLITE[i], "subset": "flipped"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.slow
def test_cli_reports_per_subset_accuracy_of_a_reward_model_run(tiny_reward_model_run, tmp_path, capsys):
    from backend.cli.main import main

    data = write_controlled_pairs(tmp_path / "controlled.jsonl")
    out = tmp_path / "report.json"
    code = main(["eval", "rewards", "--run", str(tiny_reward_model_run), "--data", str(data), "--json", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    report = json.loads(out.read_text())
    assert report["reward_kind"] == "reward model" and report["pairs"] == 8
    assert {s["name"]: (s["pairs"], s["correct"]) for s in report["subsets"]} == {"kept": (5, 5), "flipped": (3, 0)}
    assert report["correct"] == 5 and report["accuracy"] == pytest.approx(5 / 8)
    assert "Accuracy: 62.5% (5/8)" in printed.out
    assert "kept" in printed.out and "flipped" in printed.out and "Pearson r" in printed.out
    # The polite answers are the longer ones here, so the reward tracks length on this file.
    assert report["longer_wins"] is not None and report["length_note"]

    code = main(["eval", "rewards", "--run", str(tmp_path), "--data", str(data)])
    assert code == 2 and "Pick a run trained with the Reward model method" in capsys.readouterr().err


@pytest.mark.slow
def test_implicit_reward_of_a_dpo_run_ranks_its_held_out_pairs(trained_dpo_run):
    from backend.rewards.evaluation import evaluate

    seen = []
    report = evaluate(str(trained_dpo_run), str(trained_dpo_run / EVAL_SPLIT_FILE), limit=8,
                      on_progress=lambda done, total, message: seen.append((done, total)), log=lambda m: None)
    assert report.reward_kind == "implicit reward" and report.pairs == 8
    assert report.accuracy >= 0.75, report
    assert seen[-1] == (8, 8)


@pytest.mark.slow
def test_panel_evaluates_a_run_shows_subsets_and_the_length_note(qtbot, tiny_reward_model_run, tmp_path):
    from app.runs.reward_eval_panel import RewardEvalPanel

    data = write_controlled_pairs(tmp_path / "controlled.jsonl")
    panel = RewardEvalPanel(str(tiny_reward_model_run), run_dirs=[str(tiny_reward_model_run), str(tmp_path)])
    qtbot.addWidget(panel)
    # Only runs that give a reward are listed; the held-out pairs are the default file.
    assert panel.run_box.count() == 1 and panel.run_dir() == str(tiny_reward_model_run)
    assert panel.data_edit.text() == str(tiny_reward_model_run / EVAL_SPLIT_FILE)
    panel.data_edit.setText(str(data))
    panel.show()
    with qtbot.waitSignal(panel.sig_finished, timeout=180_000):
        panel.evaluate_button.click()
    qtbot.waitUntil(lambda: not panel.following, timeout=10_000)
    cells = [[panel.table.item(r, c).text() for c in range(4)] for r in range(panel.table.rowCount())]
    assert cells == [["All pairs", "8", "5", "62.5%"], ["flipped", "3", "0", "0.0%"], ["kept", "5", "5", "100.0%"]]
    assert "62.5%" in panel.headline.text() and "Pearson r" in panel.length_banner._title.text()
    assert re.search(r"mean reward chosen [+-]\d+\.\d{3}, rejected [+-]\d+\.\d{3}", panel.headline.text())
    assert panel.length_banner.isVisible() and panel.length_banner._text.text()
    assert panel.evaluate_button.isEnabled() and not panel.stop_button.isEnabled()

    # Stop right after starting: the worker ends between batches and nothing is shown as a result.
    with qtbot.waitSignal(panel.sig_finished, timeout=120_000) as stopped:
        panel.evaluate_button.click()
        panel.stop_button.click()
    assert stopped.args[0].kind == "stopped" and "Stopped" in panel.status.text()
    assert panel.table.rowCount() == 0 and panel.evaluate_button.isEnabled()

    # A file that is not pairs: refused in the banner by the worker, the window stays usable.
    bad = tmp_path / "sft.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "completion": "c"}) + "\n", encoding="utf-8")
    panel.data_edit.setText(str(bad))
    with qtbot.waitSignal(panel.sig_finished, timeout=120_000):
        panel.evaluate_button.click()
    assert panel.banner.isVisible() and "not preference pairs" in panel.banner._text.text()
    assert panel.evaluate_button.isEnabled()
