"""``alignstudio generate ai-feedback|constitutional|best-of-n ...``: jobs that write a new data file.

ai-feedback: a judge model labels answer pairs (from the file, or sampled from one or two models),
asked in both orders; a pair is kept only when both orders agree.
constitutional: a model answers each prompt, critiques its answer against a principle and revises
it; the answer and the revision become a rejected/chosen pair, with the critique beside them.

Both run in the same worker the window uses. Ctrl-C stops after the row in progress is cut
short; the finished rows are kept, and the same command continues from them (--restart starts
over). Each writes its output file whole at the end and prints where.

Each subcommand of the group registers its own parser and sets ``func`` (``set_defaults``) to
the function that runs it; ``cmd_generate`` calls it.
"""

from __future__ import annotations

import argparse

from backend.cli.interrupts import failure_code, follow_events
from backend.generation.preferences.request import AI_FEEDBACK, CONSTITUTIONAL, QUANTIZATIONS


def add_generate_parser(sub) -> None:
    generate = sub.add_parser("generate", help="make data with models: AI feedback, Constitutional AI, best-of-N",
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              description=__doc__.split("\n\n", 1)[1].rsplit("\n\n", 1)[0])
    generate_sub = generate.add_subparsers(dest="generate_command")

    feedback = generate_sub.add_parser(AI_FEEDBACK, help="label answer pairs with a local judge model (RLAIF)")
    _add_common(feedback)
    feedback.add_argument("--judge", default="", metavar="MODEL",
                          help="the judge: a model folder, .gguf file, cached hub id or run folder "
                               "(default: the embedded model)")
    feedback.add_argument("--answer-model", action="append", default=[], metavar="MODEL",
                          help="sample the answers: once for two samples of one model, twice for one answer of "
                               "each of two models (default: the answers in the file)")
    feedback.set_defaults(func=cmd_ai_feedback)

    constitutional = generate_sub.add_parser(CONSTITUTIONAL, help="answer, critique and revise against principles")
    _add_common(constitutional)
    constitutional.add_argument("--model", default="", metavar="MODEL",
                                help="the model that answers, critiques and revises (default: the embedded model)")
    constitutional.add_argument("--constitution", default="", metavar="FILE.yaml",
                                help="the principles (default: the list shipped in resources/constitution.yaml)")
    constitutional.set_defaults(func=cmd_constitutional)

    # Further jobs of the group register here, each from its own module.
    from backend.cli.best_of_n import add_best_of_n_parser

    add_best_of_n_parser(generate_sub)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="FILE", help="the input: prompts, pairs, or two answer columns")
    parser.add_argument("--out", default="", metavar="FILE.jsonl",
                        help="the output (default: <input>.<job>.jsonl next to the input)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N usable rows (default: all)")
    add_sampling_options(parser, max_new_tokens=96, temperature=0.7)
    parser.add_argument("--quantization", choices=QUANTIZATIONS, default="none",
                        help="load the models in 4-bit or 8-bit (default: unquantized)")
    parser.add_argument("--restart", action="store_true", help="discard a half-done run of this output")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow the models named here to run their own code while loading")
    parser.add_argument("--allow-pickle-weights", action="store_true",
                        help="allow the models named here to load pickle weights")


def add_sampling_options(parser: argparse.ArgumentParser, *, max_new_tokens: int, temperature: float) -> None:
    """How every generating command samples: --max-new-tokens, --temperature, --seed (each
    with the default that suits its job)."""
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens,
                        help=f"longest generated text in tokens (default {max_new_tokens})")
    parser.add_argument("--temperature", type=float, default=temperature,
                        help=f"sampling temperature, 0 for greedy (default {temperature})")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed; the same seed repeats the same text (default 0)")


def cmd_generate(args) -> int:
    func = getattr(args, "func", None)
    if func is None:
        print("Choose what to generate: alignstudio generate {ai-feedback,constitutional,...} --help")
        return 2
    return func(args)


def _request(args, job: str, **fields):
    from backend.generation.preferences.request import GenerationRequest

    return GenerationRequest(job=job, input_path=args.data, output_path=args.out, limit=args.limit,
                             max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed,
                             quantization=args.quantization, restart=args.restart, **fields)


def cmd_ai_feedback(args) -> int:
    return _run(args, _request(args, AI_FEEDBACK, model=args.judge, answer_models=list(args.answer_model)))


def cmd_constitutional(args) -> int:
    from backend.generation.preferences.constitution import default_principles, load_principles
    from backend.generation.preferences.request import RequestError

    try:
        principles = load_principles(args.constitution) if args.constitution else default_principles()
    except RequestError as exc:
        print(f"Cannot generate: {exc}")
        return 2
    return _run(args, _request(args, CONSTITUTIONAL, model=args.model, principles=principles))


def _run(args, request) -> int:
    from backend.generation.preferences.events import JobFailed, JobFinished, JobPhase, JobStarted, RowDone
    from backend.generation.preferences.job_run import GenerationJob, model_grants
    from backend.generation.preferences.request import RequestError

    try:
        job = GenerationJob.start(request, grants=model_grants(request, args.trust_remote_code,
                                                               args.allow_pickle_weights))
    except RequestError as exc:
        print(f"Cannot generate: {exc}")
        return 2

    def show(event) -> int | None:
        if isinstance(event, JobStarted):
            again = f", {event.rows_done} already done by an earlier run" if event.rows_done else ""
            print(f"Input: {event.input_summary}{again}", flush=True)
            for message in event.input_skip_messages[:5]:
                print(f"  skipped: {message}")
        elif isinstance(event, JobPhase):
            print(event.message, flush=True)
        elif isinstance(event, RowDone):
            rate = f", agreement {event.agreement_rate:.0%}" if event.agreement_rate is not None else ""
            outcome = "kept" if event.kept else f"dropped ({event.reason})"
            print(f"[{event.rows_done}/{event.rows_total}] {_where(request, event)}: {outcome}; "
                  f"{event.kept_total} pairs{rate}; {event.seconds:.1f} s", flush=True)
        elif isinstance(event, JobFinished):
            _print_summary(event.report)
            print(f"Wrote {event.report['kept']} preference pairs to {event.path}")
            print(f"Report: {event.report_path}")
            return 0
        elif isinstance(event, JobFailed):
            print(f"Generation {'stopped' if event.kind == 'stopped' else 'failed'}: {event.message}")
            return failure_code(event.kind)
        return None

    return follow_events(job, "Stopping (the finished rows are kept; Ctrl-C again to terminate)...", show)


def _where(request, event) -> str:
    from pathlib import Path

    return f"{Path(request.input_path).name} line {event.line}"


def _print_summary(report: dict) -> None:
    if report.get("agreement_rate") is not None:
        print(f"Judge agreement between the two orders: {report['agreement_rate']:.0%} of {report['judged']} pairs")
    if report.get("file_label_agreement") is not None:
        print(f"The judge agrees with the file's own chosen/rejected on {report['file_label_agreement']:.0%} "
              "of the kept pairs")
    for reason, n in sorted(report.get("dropped", {}).items()):
        print(f"  dropped {n}: {reason}")
    if report.get("seconds_per_row") is not None:
        print(f"{report['seconds_per_row']:.2f} s per row")
    if report.get("judge_note"):
        print(f"note: {report['judge_note']}")
