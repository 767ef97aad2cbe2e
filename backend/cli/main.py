"""The headless command line: ``alignstudio train``, ``alignstudio data inspect``, ``alignstudio runs``.

It drives the same worker process as the window, through ``TrainingRun``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from backend.cli.interrupts import install_two_stage_stop
from backend.core.events import (CheckpointSaved, EvalLog, EvalProgress, PhaseChanged, RunFailed, RunFinished,
                            RunStarted, TrainLog, WorkerWarning)
from backend.runs.clock import format_duration
from backend.methods import DEFAULT_METHOD, find_method, grouped_methods, method_keys, method_label
from backend.core.paths import resource_path
from backend.runs.diagnostics import TrainingDiagnostics
from backend.runs.config import (ConfigError, apply_values, default_config, describe_problems, load_yaml,
                                read_yaml_mapping, replace_values, user_fields, validate)

def _demo_dir() -> Path:
    return resource_path("demo")


DEMO_DIR = _demo_dir()
DEMO_DATA = DEMO_DIR / "demo_preferences.jsonl"
DEMO_CONFIG = DEMO_DIR / "demo_dpo.yaml"

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alignstudio", description="Fine-tune and preference-align language models.")
    sub = parser.add_subparsers(dest="command")

    train = sub.add_parser("train", help="train headless (same worker as the studio window)")
    train.add_argument("--method", choices=method_keys(), type=_method_key,
                       help=f"{', '.join(method_keys())} (default: from --config, else {DEFAULT_METHOD}); "
                       "`alignstudio methods` says what each needs")
    train.add_argument("--data", help="dataset file or folder, or a Hugging Face dataset id owner/name "
                       "(default: the demo preference set)")
    _add_split_arguments(train)
    train.add_argument("--model", help="hub id, model folder or .gguf file (default: embedded Gemma 3 270M)")
    train.add_argument("--config", help="a config.yaml (e.g. from an earlier run folder)")
    train.add_argument("--steps", type=int, help="max optimizer steps")
    train.add_argument("--epochs", type=float, help="epochs (when --steps is not given)")
    train.add_argument("--lr", type=float, help="learning rate")
    train.add_argument("--batch-size", type=int, help="examples per forward pass")
    train.add_argument("--max-length", type=int, help="max tokens per example")
    train.add_argument("--quantization", choices=("4bit", "8bit", "none"))
    train.add_argument("--runs-dir", help="folder for run folders (default ~/AlignStudio/runs)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="any other setting, e.g. --set beta=0.2 (repeatable); see `alignstudio settings`")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped or crashed run from its last checkpoint")
    # Only these flags grant permission to run code: config files and run folders cannot.
    train.add_argument("--trust-remote-code", action="store_true",
                       help="let this model run its own Python code (only for a model whose author you trust)")
    train.add_argument("--allow-pickle-weights", action="store_true",
                       help="let this model's pickle weights (pytorch_model.bin) be unpickled")
    train.add_argument("--allow-reward-code", action="store_true",
                       help="let a reward-functions Python file run during training")
    train.add_argument("--quiet", action="store_true", help="only the final summary")
    train.add_argument("--accelerate-config", metavar="FILE",
                       help="train in several processes under `accelerate launch` with this config "
                            "(DDP, FSDP, DeepSpeed; `alignstudio export RUN --as-command` writes one)")
    from backend.cli.rewards import add_graders_parser, add_reward_arguments

    add_reward_arguments(train)
    add_graders_parser(sub)

    data = sub.add_parser("data", help="dataset tools")
    data_sub = data.add_subparsers(dest="data_command")
    inspect = data_sub.add_parser("inspect", help="detect the format and report on a dataset")
    inspect.add_argument("path", help="dataset file or folder, or a Hugging Face dataset id owner/name")
    _add_split_arguments(inspect)
    inspect.add_argument("--format", help="force a format instead of detecting it")
    inspect.add_argument("--tokenizer", help="tokenizer folder for token counts (default: the embedded model's)")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")

    runs = sub.add_parser("runs", help="list run folders")
    runs.add_argument("--runs-dir")

    settings = sub.add_parser("settings", help="list every setting of a method with its default and help")
    settings.add_argument("method", choices=method_keys(), type=_method_key)

    sub.add_parser("methods", help="list every training method with the data it needs")

    from backend.cli.export import add_export_parser

    add_export_parser(sub)
    from backend.cli.generate import add_generate_parser

    add_generate_parser(sub)
    from backend.cli.evaluate import add_eval_parser

    add_eval_parser(sub)
    return parser


def _method_key(name: str) -> str:
    """A method's key from its key or one of its aliases (``reward`` for the reward model)."""
    spec = find_method(name)
    return spec.key if spec else name


def _add_split_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", help="split of a dataset folder or hub dataset to use (default: train)")
    parser.add_argument("--subset", help="subset (configuration) of a hub dataset (default: its default)")


def load_config_file(path: str | Path):
    """A config file whose data_path is relative is read relative to the file's folder."""
    path = Path(path).expanduser()
    return _data_path_beside(load_yaml(path), path)


def _data_path_beside(cfg, config_path: Path):
    from backend.data.hub import is_hub_id

    beside = config_path.parent / cfg.data_path if cfg.data_path else None
    if beside is not None and not beside.exists() and is_hub_id(cfg.data_path):
        return cfg
    if cfg.data_path and not Path(cfg.data_path).expanduser().is_absolute():
        cfg = replace_values(cfg, {"data_path": str((config_path.parent / cfg.data_path).resolve())})
    return cfg


def _config_file_and_problems(path: str | Path):
    """The config a file describes, with every setting it gets wrong (not just the first)."""
    from backend.runs.code_permissions import file_asked_message, strip_file_only_settings

    path = Path(path).expanduser()
    data, asked = strip_file_only_settings(read_yaml_mapping(path))
    if asked:
        print(f"note: {file_asked_message(path, asked)}", file=sys.stderr)
    cfg = default_config(str(data.get("method") or ""))
    cfg, problems = apply_values(cfg, {k: v for k, v in data.items() if k != "method"})
    return _data_path_beside(cfg, path), problems


def _at_recorded_revision(cfg, folder: Path):
    """A run folder's config trained again reads the hub commit the run recorded, as the
    window's Train again does (``--set data_revision=`` asks for the latest instead)."""
    from backend.data.hub import with_recorded_revision

    pinned = with_recorded_revision(cfg, folder)
    if pinned.data_revision != cfg.data_revision:
        print(f"note: {cfg.data_path} is read at revision {pinned.data_revision[:12]}, the commit this run "
              "trained on; --set data_revision= reads the latest.", file=sys.stderr)
    return pinned


def switch_method(cfg, method: str):
    """Carry the shared settings over to another method's config; method-specific ones reset."""
    if method == cfg.method:
        return cfg
    target = default_config(method)
    shared = {f.name for f in user_fields(target)} & {f.name for f in user_fields(cfg)}
    keep = {k: getattr(cfg, k) for k in shared if k not in ("learning_rate",)}
    return replace_values(target, keep)


def config_and_problems(args) -> tuple[object, list[tuple[str, str]]]:
    """The config the arguments describe as far as it can be built, and every problem
    with it: unreadable values are left at their defaults and reported."""
    problems: list[tuple[str, str]] = []
    if args.config:
        cfg, problems = _config_file_and_problems(args.config)
        if not args.data:
            cfg = _at_recorded_revision(cfg, Path(args.config).expanduser().parent)
    elif getattr(args, "demo", None):
        from backend.cli.rewards import demo_config

        cfg, problems = demo_config(args.demo)
    elif not args.data:
        cfg = load_config_file(DEMO_CONFIG)  # no data named: the demo run, sized for a laptop
    else:
        cfg = default_config(args.method or DEFAULT_METHOD)
    if args.method:
        cfg = switch_method(cfg, args.method)
    values: dict[str, object] = {}
    if args.data:
        from backend.data.hub import is_hub_id

        values["data_path"] = args.data.strip() if is_hub_id(args.data) else str(Path(args.data).expanduser().resolve())
        if values["data_path"] != cfg.data_path:  # a commit of the config's dataset names nothing in another
            values["data_revision"] = ""
    for name, key in (("split", "data_split"), ("subset", "data_subset")):
        if getattr(args, name, None) is not None:
            values[key] = getattr(args, name)
    if args.model is not None:
        model = args.model
        values["model"] = str(Path(model).expanduser().resolve()) if Path(model).expanduser().exists() else model
    for name, key in (("steps", "max_steps"), ("epochs", "num_train_epochs"), ("lr", "learning_rate"),
                      ("batch_size", "per_device_train_batch_size"), ("max_length", "max_length"),
                      ("quantization", "quantization")):
        if getattr(args, name) is not None:
            values[key] = getattr(args, name)
    for name in ("trust_remote_code", "allow_pickle_weights"):
        if getattr(args, name, False):
            values[name] = True
    for item in args.set:
        if "=" not in item:
            problems.append((item, f"--set {item}: expected KEY=VALUE, e.g. --set beta=0.2"))
            continue
        key, value = item.split("=", 1)
        values[key.strip().replace("-", "_")] = value.strip()
    from backend.cli.rewards import reward_values

    problems += reward_values(args, cfg, values)
    cfg, found = apply_values(cfg, values)
    problems += found
    flagged = {name for name, _ in problems}
    problems += [(name, message) for name, message in validate(cfg) if name not in flagged]
    return cfg, problems


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:
            return "nan"
        return f"{value:.4g}"
    return str(value)


# A terminal gets an evaluation progress line every few seconds, not every batch.
EVAL_LINE_EVERY_S = 5.0


def _eval_line_due(event, last: list[float]) -> bool:
    if not event.batch:
        return False
    now = time.monotonic()
    if event.batch < event.total_batches and now - last[0] < EVAL_LINE_EVERY_S:
        return False
    last[0] = now
    return True


def _print_notes(diagnostics: TrainingDiagnostics, step: int, metrics: dict, evaluation: bool) -> None:
    """New diagnostics as the window's notes panel would show them, on stderr."""
    raised, _cleared = diagnostics.observe(step, metrics, evaluation=evaluation)
    for note in raised:
        print(f"{note.severity} @ step {step}: {note.title}. {note.text} {note.advice}".rstrip(), file=sys.stderr,
              flush=True)


def _bar(step: int, total: int, width: int = 24) -> str:
    frac = min(1.0, step / total) if total else 0.0
    filled = int(frac * width)
    return "[" + "#" * filled + "." * (width - filled) + f"] {step}/{total}"


def cmd_train(args) -> int:
    from backend.training.client import TrainingRun

    try:
        if args.resume:
            from backend.runs.preflight import resume_problems

            granted = {name: True for name in ("trust_remote_code", "allow_pickle_weights")
                       if getattr(args, name, False)}
            from backend.cli.rewards import resume_reward_grant

            granted.update(resume_reward_grant(args, args.resume))
            problems = resume_problems(args.resume, permissions=granted)
            if problems:
                raise ConfigError(problems)
            run = TrainingRun.resume(args.resume, granted=replace_values(
                load_yaml(Path(args.resume) / "config.yaml"), granted))
            method = load_yaml(Path(args.resume) / "config.yaml").method
        else:
            from backend.cli.download_lines import printing_downloads
            from backend.runs.preflight import run_preflight

            cfg, problems = config_and_problems(args)
            # Before the run folder exists, so a refused run leaves nothing behind. The
            # world is checked even when settings are wrong: every problem shows at once.
            # Measuring the data is where a hub dataset comes down; the worker then finds it cached.
            flagged = {name for name, _ in problems}
            notes: list[str] = []
            with printing_downloads():
                problems += [(name, message) for name, message in run_preflight(cfg, runs_root=args.runs_dir,
                                                                                notes=notes)
                             if name not in flagged]
            if problems:
                raise ConfigError(problems)
            for note in notes:
                print(f"note: {note}", file=sys.stderr)
            method = cfg.method
            run = TrainingRun.start(cfg, args.runs_dir, accelerate_config=args.accelerate_config)
    except ConfigError as exc:
        for line in describe_problems(exc.problems):
            print(f"error: {line}", file=sys.stderr)
        print("No run was started.", file=sys.stderr)
        return 2
    print(f"Run folder: {run.run_dir}")
    print(f"Worker log: {run.log_path}")

    previous = install_two_stage_stop(
        run, "Stopping after the current step and saving the adapter (Ctrl-C again to abort)...", sys.stderr)
    # Every metric still lands in metrics.jsonl; the per-step line shows the method's headline ones.
    spec = find_method(method)
    keys = spec.headline if spec else ("loss",)
    code = 1
    last_eval_line = [0.0]
    diagnostics = TrainingDiagnostics(method=method)  # the notes the window shows, in words here too
    try:
        for event in run.events():
            if isinstance(event, PhaseChanged) and not args.quiet:
                print(f"... {event.message or event.phase}")
            elif isinstance(event, RunStarted):
                diagnostics.reset(event.total_steps, event.method, event.eval_rows)
                dev = event.device
                print(f"Training {method_label(event.method)} on {dev.get('name') or dev.get('kind')} "
                      f"({dev.get('precision')}): {event.train_rows} rows, {event.eval_rows} held out, "
                      f"{event.total_steps} steps, {event.trainable_params:,} of {event.total_params:,} "
                      "parameters trainable")
            elif isinstance(event, TrainLog) and not args.quiet:
                metrics = "  ".join(f"{k}={_fmt(event.metrics[k])}" for k in keys if k in event.metrics)
                tps = f"{event.tokens_per_second:.0f} tok/s" if event.tokens_per_second else ""
                print(f"{_bar(event.step, event.total_steps)}  {metrics}  {tps}  "
                      f"elapsed {format_duration(event.elapsed_seconds)} eta {format_duration(event.eta_seconds)}",
                      flush=True)
                _print_notes(diagnostics, event.step, event.metrics, evaluation=False)
            elif isinstance(event, EvalProgress) and not args.quiet and _eval_line_due(event, last_eval_line):
                print(f"  evaluating @ step {event.step}: {_bar(event.batch, event.total_batches)} batches  "
                      f"elapsed {format_duration(event.elapsed_seconds)} "
                      f"eval eta {format_duration(event.eval_eta_seconds)} eta {format_duration(event.eta_seconds)}",
                      flush=True)
            elif isinstance(event, EvalLog) and not args.quiet:
                metrics = "  ".join(f"{k}={_fmt(event.metrics[k])}" for k in keys if k in event.metrics)
                print(f"  eval @ step {event.step}: {metrics}")
                _print_notes(diagnostics, event.step, event.metrics, evaluation=True)
            elif isinstance(event, CheckpointSaved) and not args.quiet:
                print(f"  checkpoint saved: {event.path}")
            elif isinstance(event, WorkerWarning):
                print(f"warning: {event.message}", file=sys.stderr)
            elif isinstance(event, RunFinished):
                state = "Stopped" if event.stopped else "Finished"
                print(f"{state} at step {event.step}/{event.total_steps} in {format_duration(event.elapsed_seconds)}.")
                shown = {k: event.summary[k] for k in keys if k in event.summary}
                if shown:
                    print("Final: " + "  ".join(f"{k}={_fmt(v)}" for k, v in shown.items()))
                if event.adapter_path:
                    print(f"Adapter: {event.adapter_path}")
                code = 0
            elif isinstance(event, RunFailed):
                print(f"error ({event.kind}): {event.message}", file=sys.stderr)
                if event.hint:
                    print(f"hint: {event.hint}", file=sys.stderr)
                if event.kind in ("crash", "killed") and event.traceback:
                    print("--- end of worker log ---\n" + event.traceback, file=sys.stderr)
                print(f"Details: {run.log_path}", file=sys.stderr)
                code = 1
    finally:
        signal.signal(signal.SIGINT, previous)
        run.wait(timeout=30)
        run.close()
    return code


def cmd_data_inspect(args) -> int:
    from backend.cli.download_lines import printing_downloads
    from backend.data.loading import DatasetError, load_dataset_file
    from backend.data.report import build_report, format_report_text, scan_progress_text

    # A big file takes a while: on a terminal, one line that keeps saying how far the scan
    # (or, before it, a hub dataset's download) is.
    terminal = sys.stderr.isatty()

    def show_progress(done: int, total: int) -> None:
        print(f"\r\033[K{scan_progress_text(done, total)}", end="", file=sys.stderr, flush=True)

    with printing_downloads() as downloads:
        try:
            loaded = load_dataset_file(args.path, format=args.format or None, split=args.split or "",
                                       subset=args.subset or "", progress=show_progress if terminal else None)
        except DatasetError as exc:
            downloads.clear()
            print(f"error: {exc}", file=sys.stderr)
            return 1
        downloads.clear()
    tokenizer = args.tokenizer
    if tokenizer is None:
        from backend.models.embedded_model import embedded_model_folder

        folder = embedded_model_folder()
        tokenizer = str(folder) if (folder / "tokenizer.json").exists() else None
    report = build_report(loaded, tokenizer_path=tokenizer)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(format_report_text(report))
    return 0


def cmd_runs(args) -> int:
    from backend.runs.folder import list_runs

    runs = list_runs(args.runs_dir)
    if not runs:
        print("No runs yet.")
        return 0
    for r in runs:
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started_at)) if r.started_at else "-"
        loss = r.final_metrics.get("loss")
        print(f"{started}  {method_label(r.method):4}  {r.status:11}  step {r.step}/{r.total_steps}  "
              f"took {format_duration(r.duration_s):>7}  "
              f"loss {_fmt(loss)}  {r.run_dir}")
    return 0


def cmd_settings(args) -> int:
    cfg = default_config(args.method)
    for f in user_fields(cfg):
        meta = f.metadata
        extra = f" choices: {', '.join(meta['choices'])}" if meta.get("choices") else ""
        print(f"{f.name} = {getattr(cfg, f.name)!r}\n    {meta.get('help', '')}{extra}")
    return 0


def cmd_methods(args) -> int:
    """Each registered method under its group: what it is for and the data it needs."""
    width = max(len(key) for key in method_keys())  # the titles line up past the longest key
    indent = " " * (width + 3)
    for group, specs in grouped_methods():
        print(f"{group}:")
        for spec in specs:
            also = f" (also: {', '.join(spec.aliases)})" if spec.aliases else ""
            print(f"  {spec.key:<{width}} {spec.title}{also}\n{indent}{spec.summary}\n{indent}data: {spec.data.needs}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train":
        return cmd_train(args)
    if args.command == "data" and args.data_command == "inspect":
        return cmd_data_inspect(args)
    if args.command == "runs":
        return cmd_runs(args)
    if args.command == "settings":
        return cmd_settings(args)
    if args.command == "methods":
        return cmd_methods(args)
    if args.command == "export":
        from backend.cli.export import cmd_export

        return cmd_export(args)
    if args.command == "generate":
        from backend.cli.generate import cmd_generate

        return cmd_generate(args)
    if args.command == "eval":
        from backend.cli.evaluate import cmd_eval

        return cmd_eval(args)
    if args.command == "graders":
        from backend.cli.rewards import cmd_graders

        return cmd_graders(args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
