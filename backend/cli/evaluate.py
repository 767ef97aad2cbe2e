"""``alignstudio eval rewards --run RUN --data FILE [--limit N] [--batch-size N] [--json OUT]``

Scores every pair of a preference file with a reward model run (or with the implicit reward
of a run whose method has one) and prints the accuracy overall and per subset (a ``subset``
or ``category`` column, as RewardBench has), and how much of the reward follows answer length.
The scoring runs in the same worker process the window uses; Ctrl-C stops it, a second
Ctrl-C terminates it.
"""

from __future__ import annotations

import argparse
import json
import sys

from backend.cli.interrupts import follow_events


def add_eval_parser(sub) -> None:
    evaluate = sub.add_parser("eval", help="evaluations of trained runs (rewards)")
    eval_sub = evaluate.add_subparsers(dest="eval_command")
    rewards = eval_sub.add_parser("rewards", help="accuracy of a run's reward on preference pairs, per subset",
                                  formatter_class=argparse.RawDescriptionHelpFormatter,
                                  description=__doc__.split("\n\n", 1)[1])
    rewards.add_argument("--run", required=True,
                         help="a reward model run (or its adapter folder), a run with an implicit reward, or a "
                              "run's name in the runs folder")
    rewards.add_argument("--data", required=True,
                         help="preference pairs: prompt, chosen, rejected (+ subset or category)")
    rewards.add_argument("--limit", type=int, default=0, help="score only the first N pairs (default all)")
    rewards.add_argument("--batch-size", type=int, default=8, help="pairs scored together (default 8)")
    rewards.add_argument("--json", default="", metavar="OUT.json", help="also write the report as JSON")
    rewards.add_argument("--runs-dir", help="where to look up a run given by name (default ~/AlignStudio/runs)")


def cmd_eval(args) -> int:
    if getattr(args, "eval_command", None) != "rewards":
        print("usage: alignstudio eval rewards --run RUN --data FILE", file=sys.stderr)
        return 2
    return cmd_eval_rewards(args)


def cmd_eval_rewards(args) -> int:
    from backend.cli.export import resolve_run
    from backend.rewards.evaluation import (EvalFailed, EvalFinished, EvalProgress, RewardEvalError,
                                           RewardEvalReport, RewardEvaluationRun, report_lines)

    run = resolve_run(args.run, args.runs_dir)
    try:
        worker = RewardEvaluationRun.start(str(run), args.data, limit=max(0, args.limit),
                                           batch_size=max(1, args.batch_size))
    except RewardEvalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    shown = -1
    ended = False

    def show(event) -> int | None:
        nonlocal shown, ended
        if isinstance(event, EvalProgress):
            percent = int(100 * event.done / event.total) if event.total else 0
            if percent // 10 != shown:  # a line per tenth: readable in a log as well as a terminal
                shown = percent // 10
                print(f"[{percent:3d}%] {event.message}", file=sys.stderr, flush=True)
        elif isinstance(event, EvalFinished):
            ended = True
            report = RewardEvalReport.from_dict(event.report)
            print("\n".join(report_lines(report)))
            if args.json:
                with open(args.json, "w", encoding="utf-8") as fh:
                    json.dump(report.to_dict(), fh, indent=2)
                    fh.write("\n")
                print(f"Report written to {args.json}.")
            return 0
        elif isinstance(event, EvalFailed):
            ended = True
            print(f"{'stopped' if event.kind == 'stopped' else 'error'}: {event.message}", file=sys.stderr)
            if event.kind not in ("stopped", "bad_request") and event.traceback:
                print(event.traceback, file=sys.stderr)
            return 130 if event.kind in ("stopped", "killed") else 1
        return None

    code = follow_events(worker, "Stopping the evaluation (Ctrl-C again to end it now)…", show, sys.stderr)
    if ended:
        return code
    print("error: the evaluation worker ended without a result.", file=sys.stderr)
    return 1
