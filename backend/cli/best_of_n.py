"""``alignstudio generate best-of-n``: N answers per prompt, scored, the best kept.

Samples N answers to every prompt of ``--data`` (prompts, or pairs' prompts) in one
batched generation per group of prompts, scores them with ``--reward-model`` and/or
``--reward`` graders, and writes one JSON line per prompt: the best answer, the
single answer it is measured against (the first sample, or ``--baseline greedy``) and
all N ranked. Plain-text prompts framed as "Question: ... Answer:" stop at the next
"Question:", as in Compare. Prints the batch report (mean reward of best-of-N against
the single answer, and the cost) and where the file is; the report is saved beside it.
The model runs in this process with the generation worker's own code.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path
from types import SimpleNamespace


def add_best_of_n_parser(generate_sub) -> None:
    from backend.cli.generate import add_sampling_options
    from backend.generation.best_of_n import BASELINES, MAX_N

    p = generate_sub.add_parser("best-of-n", help="sample N answers per prompt, score them, keep the best",
                                description=__doc__.split("\n\n", 1)[1])
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", default="", metavar="MODEL",
                        help="the model that answers: a folder, .gguf file or cached hub id (default: the embedded "
                             "model)")
    source.add_argument("--run", default="", metavar="RUN",
                        help="a training run: sample from its aligned model (the adapter on)")
    p.add_argument("--side", choices=("auto", "base", "aligned"), default="auto",
                   help="with --run: aligned (default) or base (the adapter off)")
    p.add_argument("--data", required=True, metavar="FILE", help="prompts (or pairs, whose prompts are used)")
    p.add_argument("-n", type=int, default=4, help=f"answers per prompt, 1 to {MAX_N} (default 4)")
    p.add_argument("--out", default="", metavar="FILE.jsonl",
                   help="the output (default: <input>.best-of-<N>.jsonl next to the input)")
    p.add_argument("--limit", type=int, default=0, help="only the first N prompts (default: all)")
    add_sampling_options(p, max_new_tokens=64, temperature=0.8)
    p.add_argument("--baseline", choices=BASELINES, default="first",
                   help="the single answer to beat: the first sample (free) or the greedy answer (one more call)")
    p.add_argument("--quantization", choices=("4bit", "8bit", "none"), default=None,
                   help="how the model loads (default: the run's, else the studio's default)")
    p.add_argument("--reward", action="append", default=[], metavar="NAME[:KEY=VALUE,...]",
                   help="score with this grader (repeatable); `alignstudio graders` lists them")
    p.add_argument("--reward-model", metavar="RUN_OR_FOLDER", help="score with a reward model run or model folder")
    p.add_argument("--reward-file", metavar="FILE.py", help="your own reward functions; runs only with "
                                                              "--allow-reward-code")
    p.add_argument("--allow-reward-code", action="store_true", help="let --reward-file's code run")
    p.set_defaults(func=cmd_best_of_n)


def default_output(data: str, n: int) -> Path:
    from backend.data.hub import is_hub_id

    # A hub dataset has no folder of its own to write beside: its name lands in the current one.
    if is_hub_id(data):
        return Path(f"{data.rstrip('/').rsplit('/', 1)[-1]}.best-of-{n}.jsonl")
    path = Path(data)
    return path.with_name(f"{path.stem}.best-of-{n}.jsonl")


def read_prompt_rows(path: str, limit: int) -> list[dict]:
    """The rows of ``path`` that hold a prompt, every other column kept for the graders
    (DatasetError names the file and line otherwise). Read as prompts first: detected
    freely, a prompt/answer file would be a demonstration set whose answer column became
    ``completion``, and a grader asking for ``answer`` would not find it."""
    from backend.data.formats import DataFormat, DatasetError
    from backend.data.loading import load_dataset_file
    from backend.data.prompt_rendering import row_prompt

    try:
        loaded = load_dataset_file(path, format=DataFormat.PROMPT_ONLY)
    except DatasetError:
        loaded = load_dataset_file(path)  # conversations: their prompt is up to the last answer
    rows = [r for r in loaded.dataset.to_list() if row_prompt(r) is not None]
    return rows[:limit] if limit > 0 else rows


def output_line(row: dict, result) -> dict:
    """One output line: the row's own columns, the best and the single answer, all N ranked."""
    line = {k: v for k, v in row.items() if k not in ("chosen", "rejected")}
    line.update(best=result.winner.text, best_reward=result.winner.reward, best_sample=result.winner.sample,
                single=result.single.text if result.single else None,
                single_reward=result.single.reward if result.single else None,
                answers=[{"sample": a.sample, "rank": a.rank, "reward": a.reward, "scores": a.scores,
                          "text": a.text, "tokens": a.n_tokens, "finish": a.finish_reason} for a in result.answers])
    return line


def cmd_best_of_n(args) -> int:
    from backend.core.atomic_files import write_json_atomic, write_text_atomic
    from backend.cli.rewards import reward_values
    from backend.data.formats import DatasetError

    values: dict = {}
    problems = reward_values(args, SimpleNamespace(graders=[]), values)
    if not values.get("graders"):
        problems.append(("graders", "nothing scores the answers: give --reward-model and/or --reward"))
    if not 1 <= args.n <= 64:
        problems.append(("n", f"-n must be from 1 to 64; got {args.n}"))
    if args.side != "auto" and not args.run:
        problems.append(("side", "--side chooses a side of --run's model; without --run the model has no adapter"))
    if problems:
        for _field, message in problems:
            print(f"Cannot generate: {message}")
        return 2
    from backend.cli.download_lines import printing_downloads

    try:
        with printing_downloads():
            rows = read_prompt_rows(args.data, args.limit)
    except DatasetError as exc:
        print(f"Cannot generate: {exc}")
        return 2
    if not rows:
        print(f"Cannot generate: {args.data} holds no prompts.")
        return 2
    out = Path(args.out) if args.out else default_output(args.data, args.n)
    side = "aligned" if args.run and args.side != "base" else "base"

    from backend.generation.protocol import (BestOfNReportReady, BestOfNRequest, BestOfNRowReady, GenerationError,
                                             LoadRequest, ModelReady, WorkerStatus)
    from backend.generation.worker import GenerationService
    from backend.data.prompt_rendering import default_stop_strings

    found: dict = {"rows": [], "report": None, "errors": []}

    def emit(event) -> None:
        if isinstance(event, BestOfNRowReady):
            found["rows"].append(event.result)
            r = event.result
            print(f"[{len(found['rows'])}/{event.total}] best {r.winner.reward:.3f} (sample {r.winner.sample}) vs "
                  f"single {r.single.reward:.3f}", flush=True)
        elif isinstance(event, BestOfNReportReady):
            found["report"] = event.report
        elif isinstance(event, GenerationError):
            found["errors"].append(f"{event.message} {event.hint}".strip())
        elif isinstance(event, (WorkerStatus, ModelReady)) and getattr(event, "message", ""):
            print(event.message, flush=True)

    service = GenerationService(emit, log=lambda _m: None)
    cancel = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: (print("\nStopping after this batch...", flush=True),
                                                        cancel.set()))
    try:
        service.handle(LoadRequest(id="load", run_dir=args.run or None, model=None if args.run else
                                   args.model, quantization=args.quantization), threading.Event())
        if found["errors"]:
            print(f"Cannot generate: {found['errors'][0]}")
            return 1
        service.handle(BestOfNRequest(
            id="best-of-n", rows=rows, n=args.n, side=side,
            sampling={"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "seed": args.seed,
                      "top_p": 1.0, "top_k": 0, "stop_strings": default_stop_strings(rows)},
            reward_model=values.get("reward_model", ""), graders=values["graders"],
            reward_file=values.get("reward_file", ""), allow_reward_code=bool(values.get("allow_reward_code")),
            baseline=args.baseline), cancel)
    finally:
        signal.signal(signal.SIGINT, previous)
    if found["errors"] and not found["rows"]:
        print(f"Cannot generate: {found['errors'][0]}")
        return 1
    lines = [json.dumps(output_line(row, result), ensure_ascii=False) for row, result in
             zip(rows, sorted(found["rows"], key=lambda r: r.index))]
    write_text_atomic(out, "".join(line + "\n" for line in lines))
    report = found["report"]
    report_path = out.with_suffix(".report.json")
    if report is not None:
        write_json_atomic(report_path, report.to_dict())
        print(report.headline())
    print(f"Wrote {len(lines)} prompts with their best of {args.n} answers to {out}")
    if report is not None:
        print(f"Report: {report_path}")
    return 0
