"""``alignstudio export RUN --format adapter|merged|gguf|ollama [--quantization Q] [--out DIR] [--push REPO]``
or ``alignstudio export RUN --as-command [--layout ddp|fsdp|zero2|zero3] [--processes N]``.

The export runs in the same worker process the window uses. Ctrl-C asks it to
stop at the next safe point; a second Ctrl-C terminates it. Either way nothing
is left under the final name.

--as-command writes the run's config, an accelerate config for the layout and a
launch script (plus, for a method TRL's command line has, a config that `trl <method> --config` reads).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from backend.cli.interrupts import failure_code, follow_events
from backend.export.plan import EXPORT_FORMATS, GGUF_TYPES, MERGED_PRECISIONS
from backend.export.launch_layouts import LAYOUTS


def add_export_parser(sub) -> None:
    export = sub.add_parser("export", help="export a run: adapter, merged model, GGUF or Ollama",
                            formatter_class=argparse.RawDescriptionHelpFormatter,
                            description=__doc__.split("\n\n", 1)[1])
    export.add_argument("run", help="a run folder, or a run's name in the runs folder")
    export.add_argument("--format", choices=EXPORT_FORMATS, help="what to export (or --as-command)")
    export.add_argument("--as-command", action="store_true",
                        help="write a command that trains the run again in several processes")
    export.add_argument("--layout", choices=LAYOUTS, default="ddp",
                        help="--as-command: ddp (a copy per GPU), fsdp, zero2 or zero3 (DeepSpeed); default ddp")
    export.add_argument("--processes", type=int, default=2, help="--as-command: processes (GPUs), default 2")
    export.add_argument("--cpu", action="store_true",
                        help="--as-command: TRL's config trains on the CPU in fp32 (default: GPUs in bf16)")
    export.add_argument("--quantization", default="",
                        help=f"merged: {', '.join(MERGED_PRECISIONS)} (default float32); "
                             f"gguf/ollama: {', '.join(GGUF_TYPES)} (default f16 / q8_0)")
    export.add_argument("--out", default="", help="output folder (default: the run's exports/ folder)")
    export.add_argument("--push", default="", metavar="REPO_ID",
                        help="also upload to this Hugging Face repo (needs `hf auth login` and network)")
    export.add_argument("--compare", default="", metavar="FILE.jsonl",
                        help="a batch-compare JSON Lines export whose summary goes into the model card "
                             "(default: one saved in the run folder, if any)")
    export.add_argument("--runs-dir", help="where to look up a run given by name (default ~/AlignStudio/runs)")
    export.add_argument("--check-tokens", type=int, default=24,
                        help="greedy tokens compared after merging or converting (default 24)")


def resolve_run(run: str, runs_dir: str | None = None) -> Path:
    from backend.core.paths import runs_dir as default_runs_dir

    path = Path(run).expanduser()
    if path.is_dir():
        return path
    candidate = Path(runs_dir or default_runs_dir()).expanduser() / run
    return candidate if candidate.is_dir() else path


def cmd_export_as_command(args) -> int:
    from backend.export.launch_command import CommandExportError, export_as_command

    try:
        result = export_as_command(resolve_run(args.run, args.runs_dir), layout=args.layout,
                                   num_processes=args.processes, out_dir=args.out or None, on_gpu=not args.cpu,
                                   log=lambda m: print(m, flush=True))
    except CommandExportError as exc:
        print(f"Cannot export: {exc}")
        return 2
    print(f"Exported as a command to {result.folder}: {', '.join(result.files)}")
    for command in result.commands:
        print(f"  {command}")
    for note in result.notes:
        print(f"note: {note}")
    return 0


def cmd_export(args) -> int:
    if args.as_command:
        if args.format:
            print("Cannot export: choose either --format or --as-command, not both.")
            return 2
        return cmd_export_as_command(args)
    if not args.format:
        print(f"Cannot export: say what to export with --format ({', '.join(EXPORT_FORMATS)}) or --as-command.")
        return 2
    from backend.export.events import ExportFailed, ExportFinished, ExportPhase
    from backend.export.plan import ExportError, ExportRequest
    from backend.export.client import ExportRun

    request = ExportRequest(run_dir=str(resolve_run(args.run, args.runs_dir)), format=args.format,
                            quantization=args.quantization, out_dir=args.out, push_repo=args.push,
                            compare_file=args.compare,
                            check_tokens=args.check_tokens)
    try:
        export = ExportRun.start(request)
    except ExportError as exc:
        print(f"Cannot export: {exc}")
        return 2

    def show(event) -> int | None:
        if isinstance(event, ExportPhase):
            pct = f"{event.fraction:4.0%} " if event.fraction is not None else "     "
            print(f"{pct}{event.message}", flush=True)
        elif isinstance(event, ExportFinished):
            for check in event.checks:
                print(f"  check: {check['name']}: {check['verdict']}")
            print(f"Exported to {event.path} in {event.seconds:.0f} s")
            if event.pushed_to:
                print(f"Pushed to {event.pushed_to}")
            return 0
        elif isinstance(event, ExportFailed):
            print(f"Export failed: {event.message}")
            return failure_code(event.kind)
        return None

    return follow_events(export, "Stopping the export (Ctrl-C again to terminate it)...", show)
