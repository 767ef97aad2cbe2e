"""Preference accuracy, implicit reward and length change from scored rows (no model needed)."""

from __future__ import annotations

import math

import pytest

from backend.compare.scoring import (CompareRow, CompareSummary, ResponseScore, implicit_reward, length_change,
                                     preference_accuracy, summarize)


def _pair_row(i, chosen_base, rejected_base, chosen_aligned, rejected_aligned, beta=0.1):
    row = CompareRow(index=i, prompt=f"p{i}")
    row.set_pair_scores(ResponseScore.from_sums(0, "chosen", 5, chosen_base, chosen_aligned, beta),
                        ResponseScore.from_sums(1, "rejected", 6, rejected_base, rejected_aligned, beta))
    return row


def test_implicit_reward_is_beta_times_logp_difference():
    assert implicit_reward(0.1, -10.0, -14.0) == pytest.approx(0.4)
    assert implicit_reward(0.5, -10.0, None) is None
    score = ResponseScore.from_sums(0, "x", 4, -8.0, -6.0, beta=0.2)
    assert score.logp_base_mean == -2.0 and score.logp_aligned_mean == -1.5
    assert score.implicit_reward == pytest.approx(0.4)
    assert ResponseScore.from_sums(0, "empty", 0, 0.0, 0.0, 0.1).logp_base_mean is None


def test_preference_accuracy_counts_pairs_and_treats_ties_as_not_preferred():
    rows = [
        _pair_row(0, -10, -12, -8, -15),   # both prefer chosen; reward chosen 0.2 > rejected -0.3
        _pair_row(1, -12, -10, -9, -11),   # base prefers rejected, aligned chosen
        _pair_row(2, -10, -10, -10, -10),  # a tie everywhere: not preferred
        CompareRow(index=3, prompt="no pair"),
    ]
    acc = preference_accuracy(rows)
    assert acc.n_pairs == 3
    assert acc.base == pytest.approx(1 / 3)
    assert acc.aligned == pytest.approx(2 / 3)
    assert acc.reward == pytest.approx(2 / 3)
    assert acc.base_mean_logp_margin == pytest.approx((2 - 2 + 0) / 3)
    assert rows[1].base_prefers_chosen is False and rows[1].aligned_prefers_chosen is True
    assert rows[3].base_prefers_chosen is None


def test_no_pairs_and_no_adapter_give_none_not_zero():
    row = CompareRow(index=0, prompt="p")
    row.set_pair_scores(ResponseScore.from_sums(0, "chosen", 3, -3.0, None, 0.1),
                        ResponseScore.from_sums(1, "rejected", 3, -4.0, None, 0.1))
    acc = preference_accuracy([row])
    assert acc.base == 1.0 and acc.aligned is None and acc.reward is None
    empty = preference_accuracy([])
    assert empty.n_pairs == 0 and empty.base is None
    headline = summarize([row], source="rows").headline()
    assert "1 preference pair, the base model prefers the chosen response 100%" in headline


def test_length_change_uses_rows_with_both_answers():
    rows = [
        CompareRow(index=0, prompt="a", base_tokens=10, aligned_tokens=15, base_finish="stop", aligned_finish="stop"),
        CompareRow(index=1, prompt="b", base_tokens=20, aligned_tokens=25, base_finish="length",
                   aligned_finish="stop"),
        CompareRow(index=2, prompt="c", base_tokens=99, base_finish="stop"),  # no aligned answer
    ]
    change = length_change(rows)
    assert change.n_rows == 2
    assert change.base_mean_tokens == 15 and change.aligned_mean_tokens == 20
    assert change.ratio == pytest.approx(20 / 15)
    assert change.mean_change_tokens == 5
    assert rows[0].length_change == 5 and rows[2].length_change is None


def test_summary_and_headline():
    rows = [_pair_row(i, -10, -12 + (i % 2) * 4, -6, -20) for i in range(4)]
    for r in rows:
        r.base_tokens, r.aligned_tokens, r.base_finish, r.aligned_finish = 10, 13, "stop", "stop"
        r.base_answer_reward, r.aligned_answer_reward = -0.1, 0.4
    summary = summarize(rows, beta=0.1, source="heldout", seconds=1.5)
    assert summary.n_rows == 4 and summary.n_pairs == 4
    assert summary.base_accuracy == 0.5 and summary.aligned_accuracy == 1.0 and summary.reward_accuracy == 1.0
    assert summary.length_ratio == pytest.approx(1.3)
    assert summary.aligned_reward_win_rate == 1.0
    text = summary.headline()
    assert "100%" in text and "50%" in text and "30% longer" in text
    again = CompareSummary.from_dict(summary.to_dict())
    assert again == summary
    assert "Nothing to summarise" in summarize([]).headline()


def test_row_round_trips_through_dict_with_derived_fields():
    row = _pair_row(7, -1.0, -2.0, -0.5, -3.0)
    data = row.to_dict()
    assert data["base_prefers_chosen"] is True and data["reward_prefers_chosen"] is True
    assert CompareRow.from_dict(data) == row
    nan_row = _pair_row(8, math.nan, -2.0, -1.0, -2.0)
    assert nan_row.base_prefers_chosen is None


def _run_folder(root, method: str):
    from backend.runs.config import default_config, save_yaml

    run = root / f"run-{method}"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text('{"peft_type": "LORA", "base_model_name_or_path": "x"}')
    save_yaml(default_config(method, model="some-model"), run / "config.yaml")
    return run


def test_only_methods_with_an_implicit_reward_get_one_in_compare(tmp_path):
    """β·(log p aligned − log p base) is the reward of the methods whose spec says so; for the
    others Compare shows the log-prob change alone, not a reward the run never optimised."""
    from backend.models.adapter_loading import resolve_load_spec
    from backend.methods import all_methods

    specs = {s.key: s for s in all_methods()}
    with_reward = [k for k, s in specs.items() if s.implicit_reward]
    without = [k for k, s in specs.items() if not s.implicit_reward]
    assert with_reward and without
    for key in with_reward[:1] + without[:1]:
        spec = resolve_load_spec(run_dir=_run_folder(tmp_path, key))
        assert spec.method == key and spec.implicit_reward is specs[key].implicit_reward
    assert resolve_load_spec(model="m").implicit_reward  # a model alone: nothing says otherwise
    none = ResponseScore.from_sums(0, "base", 4, -10.0, -9.0, None)
    assert none.implicit_reward is None and none.logp_aligned_mean == -9.0 / 4
    assert ResponseScore.from_sums(0, "base", 4, -10.0, -9.0, 0.5).implicit_reward == 0.5
