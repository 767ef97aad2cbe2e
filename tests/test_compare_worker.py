"""The generation worker end to end, on a tiny DPO adapter trained through the real engine.

One run is trained for the module and one worker serves most tests (a model
load costs seconds even for the tiny model); the lifetime tests start their own.
"""

from __future__ import annotations

import csv
import json
import time

import psutil
import pytest

from backend.compare.export import export_compare
from backend.compare.scoring import summarize
from backend.core.events import EvalLog
from backend.generation.client import GenerationSession, SessionClosed
from backend.generation.protocol import (BatchRowReady, BatchSummaryReady, GenerationDone, GenerationError,
                                         ModelReady, RequestFinished, ResponsesScored, TokenStreamed,
                                         WorkerExited, WorkerStatus)
from backend.data.prompt_rendering import read_heldout_rows
from backend.runs.folder import read_events

pytestmark = pytest.mark.slow

PROMPT = "Question 3: can you help me with task 3?"


@pytest.fixture(scope="module")
def trained_run(trained_dpo_run):
    return trained_dpo_run


class _SessionHolder:
    def __init__(self, run_dir, log_path):
        self.run_dir, self.log_path, self.session, self.ready = run_dir, log_path, None, None

    def get(self) -> GenerationSession:
        if self.session is None or not self.session.is_running():
            self.session = GenerationSession.start(run_dir=self.run_dir, log_path=self.log_path)
            self.ready = self.session.wait_ready(timeout=180)
        return self.session

    def close(self):
        if self.session is not None:
            self.session.close()


@pytest.fixture(scope="module")
def worker(trained_run, tmp_path_factory):
    holder = _SessionHolder(trained_run, tmp_path_factory.mktemp("gen-log") / "generation.log")
    yield holder
    holder.close()


def _mean(values):
    return sum(values) / len(values)


def _of(events, cls):
    return [e for e in events if isinstance(e, cls)]


def test_ready_describes_the_run(worker, trained_run):
    worker.get()
    ready = worker.ready
    assert isinstance(ready, ModelReady)
    assert ready.method == "dpo" and ready.beta == pytest.approx(0.1) and ready.quantization == "4bit"
    assert ready.adapter.endswith("adapter") and ready.run_dir == str(trained_run.resolve())
    assert ready.heldout_rows == 16 and ready.heldout_pairs == 16
    assert ready.prompt_style == "raw"  # plain-text training data: prompts are sent as they are
    assert ready.stop_tokens == ["</s>"] and ready.device["kind"] == "cpu"


def test_both_sides_stream_tokens_then_done_and_scored(worker):
    session = worker.get()
    rid = session.generate(PROMPT, side="both", sampling={"seed": 7, "max_new_tokens": 24, "temperature": 1.0})
    events = session.collect(rid, timeout=120)
    tokens = _of(events, TokenStreamed)
    done = {e.side: e for e in _of(events, GenerationDone)}
    assert set(done) == {"base", "aligned"}
    for side in ("base", "aligned"):
        streamed = "".join(t.text for t in tokens if t.side == side)
        assert done[side].text.startswith(streamed) or streamed == done[side].text
        assert done[side].finish_reason in ("stop", "length") and done[side].seed == 7
        assert 0 < done[side].n_tokens <= 24 and done[side].prompt_tokens > 0
    # Lockstep: the sides interleave rather than one finishing before the other starts.
    sides = [t.side for t in tokens]
    if len(sides) > 4:
        assert sides[:4].count("base") >= 1 and sides[:4].count("aligned") >= 1
    (scored,) = _of(events, ResponsesScored)
    by = scored.by_label()
    assert by["base"].n_tokens >= done["base"].n_tokens and by["aligned"].logp_aligned_sum is not None
    assert by["aligned"].implicit_reward == pytest.approx(
        0.1 * (by["aligned"].logp_aligned_sum - by["aligned"].logp_base_sum), rel=1e-6)
    assert isinstance(events[-1], RequestFinished) and events[-1].ok and not events[-1].cancelled

    # The same seed gives the same answers.
    again = session.collect(session.generate(PROMPT, side="both", score=False,
                                             sampling={"seed": 7, "max_new_tokens": 24, "temperature": 1.0}))
    assert {e.side: e.text for e in _of(again, GenerationDone)} == {s: d.text for s, d in done.items()}


def test_greedy_base_equals_the_base_model_loaded_with_plain_transformers(worker, tiny_model_dir):
    session = worker.get()
    prompts = [PROMPT, "The quick brown fox"]
    worker_answers = []
    for prompt in prompts:
        events = session.collect(session.generate(prompt, side="base", score=False,
                                                  sampling={"greedy": True, "max_new_tokens": 30}))
        (done,) = _of(events, GenerationDone)
        worker_answers.append(done)

    from tests.plain_tiny_model import load_plain_4bit

    tokenizer, model = load_plain_4bit(tiny_model_dir)
    for prompt, done in zip(prompts, worker_answers):
        inputs = tokenizer(prompt, return_tensors="pt")
        out = model.generate(**inputs, do_sample=False, max_new_tokens=30, pad_token_id=tokenizer.pad_token_id)
        new = out[0, inputs["input_ids"].shape[1]:].tolist()
        stopped = new[-1] == tokenizer.eos_token_id
        assert done.text == tokenizer.decode(new, skip_special_tokens=True)
        assert done.n_tokens == len(new) - int(stopped)
        assert done.finish_reason == ("stop" if stopped else "length")


def test_aligned_log_probs_differ_from_base_and_prefer_chosen(worker, trained_run):
    session = worker.get()
    pair = read_heldout_rows(trained_run)[0]
    events = session.collect(session.score(pair["prompt"], [pair["chosen"], pair["rejected"]],
                                           labels=["chosen", "rejected"]))
    (scored,) = _of(events, ResponsesScored)
    chosen, rejected = scored.by_label()["chosen"], scored.by_label()["rejected"]
    assert chosen.n_tokens > 1 and chosen.logp_base_sum < 0
    assert abs(chosen.logp_aligned_sum - chosen.logp_base_sum) > 0.5
    assert abs(rejected.logp_aligned_sum - rejected.logp_base_sum) > 0.5
    assert chosen.implicit_reward > rejected.implicit_reward


def test_preference_accuracy_on_heldout_pairs_and_exports(worker, tmp_path):
    session = worker.get()
    # Scores only: every held-out pair, fast.
    events = session.collect(session.batch_compare(generate=False))
    rows = [e.row for e in _of(events, BatchRowReady)]
    (summary_event,) = _of(events, BatchSummaryReady)
    summary = summary_event.summary
    assert len(rows) == 16 and summary.n_pairs == 16 and summary.source == "heldout"
    assert summary.aligned_accuracy >= summary.base_accuracy
    assert summary.aligned_accuracy >= 0.75 and summary.reward_accuracy >= 0.75
    assert summary.mean_reward_margin > 0
    assert "held-out pairs" in summary_event.headline
    # The same numbers TRL logged on the same rows at the end of training: the prompt
    # rendering and the log-prob sums match DPO's own.
    final_eval = [e for e in read_events(worker.run_dir) if isinstance(e, EvalLog)][-1].metrics
    assert _mean([r.chosen_logp_aligned for r in rows]) == pytest.approx(final_eval["logps/chosen"], rel=1e-3)
    assert _mean([r.rejected_logp_aligned for r in rows]) == pytest.approx(final_eval["logps/rejected"], rel=1e-3)
    assert _mean([r.chosen_reward for r in rows]) == pytest.approx(final_eval["rewards/chosen"], abs=0.02)
    assert summary.reward_accuracy == pytest.approx(final_eval["rewards/accuracies"])

    # With answers: a few prompts, both sides, then every export.
    events = session.collect(session.batch_compare(n=3, sampling={"greedy": True, "max_new_tokens": 12}))
    rows = [e.row for e in _of(events, BatchRowReady)]
    (summary_event,) = _of(events, BatchSummaryReady)
    assert [r.index for r in rows] == [0, 1, 2] and all(e.total == 3 for e in _of(events, BatchRowReady))
    assert all(r.base_finish and r.aligned_finish and r.has_pair for r in rows)
    assert all(r.aligned_answer_reward is not None for r in rows)
    assert summary_event.summary.length_ratio is not None and summary_event.summary.sampling["greedy"] is True

    summary = summary_event.summary
    csv_path, _ = export_compare(tmp_path / "batch.csv", rows, summary)
    with open(csv_path, newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert [t["prompt"] for t in table] == [r.prompt for r in rows]
    assert [t["aligned_answer"] for t in table] == [r.aligned_answer for r in rows]
    (jsonl,) = export_compare(tmp_path / "batch.jsonl", rows, summary)
    lines = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 4 and lines[1]["base_answer"] == rows[0].base_answer
    (page,) = export_compare(tmp_path / "batch.html", rows, summary)
    assert "Question" in page.read_text(encoding="utf-8")
    assert summarize(rows, beta=summary.beta).n_rows == 3


def test_chat_uses_the_template_and_prompts_can_be_given_as_rows(worker):
    session = worker.get()
    messages = [{"role": "user", "content": "Can you help me?"}, {"role": "assistant", "content": "Sure."},
                {"role": "user", "content": "Thank you!"}]
    events = session.collect(session.chat(messages, side="aligned",
                                           sampling={"greedy": True, "max_new_tokens": 10}))
    (done,) = _of(events, GenerationDone)
    raw = session.collect(session.generate("Thank you!", side="aligned", score=False,
                                           sampling={"greedy": True, "max_new_tokens": 10}))
    assert done.side == "aligned" and done.prompt_tokens > _of(raw, GenerationDone)[0].prompt_tokens
    assert not _of(events, ResponsesScored)

    events = session.collect(session.batch_compare(prompts=["Hello", [{"role": "user", "content": "Hi"}]],
                                                   sampling={"greedy": True, "max_new_tokens": 5}))
    rows = [e.row for e in _of(events, BatchRowReady)]
    assert len(rows) == 2 and not rows[0].has_pair and rows[1].prompt == "user: Hi"
    assert _of(events, BatchSummaryReady)[0].summary.n_pairs == 0


def test_bad_requests_fail_alone_and_the_worker_keeps_serving(worker):
    session = worker.get()
    events = session.collect(session.generate(42, side="base"))
    (error,) = _of(events, GenerationError)
    assert error.kind == "bad_request" and not error.fatal
    assert isinstance(events[-1], RequestFinished) and not events[-1].ok
    events = session.collect(session.load(adapter_dir=str(worker.run_dir)))  # a run folder is not an adapter
    assert _of(events, GenerationError)[0].kind == "bad_adapter" and not _of(events, GenerationError)[0].fatal
    events = session.collect(session.generate(PROMPT, side="base", sampling={"greedy": True, "max_new_tokens": 3}))
    assert _of(events, GenerationDone)[0].finish_reason in ("stop", "length")


def test_reloading_an_adapter_on_the_same_base_reuses_the_weights(worker):
    session = worker.get()
    events = session.collect(session.load(run_dir=worker.run_dir))
    (ready,) = _of(events, ModelReady)
    assert ready.reused_base and ready.adapter.endswith("adapter")
    assert any(isinstance(e, WorkerStatus) and e.phase == "loading_adapter" for e in events)
    events = session.collect(session.generate(PROMPT, sampling={"greedy": True, "max_new_tokens": 4}))
    assert {e.side for e in _of(events, GenerationDone)} == {"base", "aligned"}


def test_cancel_stops_a_long_generation_within_a_token(worker):
    session = worker.get()
    limit = 400
    rid = session.generate(PROMPT, side="both", score=True,
                           sampling={"seed": 1, "max_new_tokens": limit, "min_new_tokens": limit})
    cancelled_at = None
    events = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        event = session.read_event(5)
        if event is None or event.request_id != rid:
            continue
        events.append(event)
        if isinstance(event, TokenStreamed) and event.index >= 3 and cancelled_at is None:
            session.cancel(rid)
            cancelled_at = (time.monotonic(), event.index)
        if isinstance(event, RequestFinished):
            break
    assert not _of(events, GenerationError), _of(events, GenerationError)
    done = _of(events, GenerationDone)
    assert cancelled_at is not None and len(done) == 2
    assert all(d.finish_reason == "cancelled" for d in done)
    # Tokens already in the pipe when the cancel was sent still arrive, so only "far short" is exact here.
    assert max(d.n_tokens for d in done) < limit // 2
    assert time.monotonic() - cancelled_at[0] < 5
    assert not _of(events, ResponsesScored)  # a cancelled answer is not scored
    assert events[-1].cancelled


def test_close_releases_the_process(worker):
    session = worker.get()
    pid = session.pid
    proc = psutil.Process(pid)
    family = [proc] + proc.children(recursive=True)
    started = time.monotonic()
    session.close()
    assert time.monotonic() - started < 10
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in family)
    events = list(session.events(timeout=5))
    assert isinstance(events[-1], WorkerExited) and not events[-1].unexpected
    with pytest.raises(SessionClosed):
        session.generate("again")
    session.close()  # twice is fine


def test_a_worker_whose_client_vanishes_exits_by_itself(trained_run, tmp_path):
    # Closing stdin without a shutdown request is what the studio's death looks like to the worker.
    session = GenerationSession.start(run_dir=trained_run, log_path=tmp_path / "gen.log")
    time.sleep(0.5)  # mid-start: imports or the model load are under way
    session.process.stdin.close()
    started = time.monotonic()
    code = session.process.wait(timeout=30)
    assert time.monotonic() - started < 30 and code == 0
    assert not psutil.pid_exists(session.pid) or psutil.Process(session.pid).status() == psutil.STATUS_ZOMBIE
    session.close()


def test_a_crashed_worker_is_reported(trained_run, tmp_path):
    session = GenerationSession.start(log_path=tmp_path / "gen.log")  # empty: waits for a load
    psutil.Process(session.pid).kill()
    events = list(session.events(timeout=30))
    assert isinstance(events[-1], WorkerExited) and events[-1].unexpected and events[-1].exit_code != 0
    session.close()
