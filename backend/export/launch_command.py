"""Export a run as a command: train it again, in several processes, outside the window.

The folder holds the run's ``config.yaml``, an accelerate config for the chosen
layout (DDP, FSDP, DeepSpeed ZeRO-2/3), ``launch.sh`` (the studio's own runner
under ``accelerate launch``) and, for the methods TRL's command line has, the
normalised data, a ``trl_<method>.yaml`` that ``trl <method> --config`` reads as
it is, and ``launch_trl.sh``. It appears under its final name by one rename.
Torch-free; reading the data uses ``datasets``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

from backend.export.launch_layouts import LAYOUT_LABELS, LAYOUTS, write_accelerate_config
from backend.runs.config import replace_values, save_yaml
from backend.runs.folder import CONFIG_FILE, load_run_config
from backend.export.trl_cli_config import (RecordedSpeedError, as_trained, trl_cli_config, trl_cli_methods,
                                           trl_cli_yaml)


class CommandExportError(ValueError):
    """The run cannot be exported as a command; the message says why."""


@dataclass
class CommandExport:
    folder: Path
    layout: str
    num_processes: int
    files: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)  # what to type, one per runner
    notes: list[str] = field(default_factory=list)


def _script(path: Path, lines: list[str]) -> None:
    path.write_text("#!/usr/bin/env bash\nset -euo pipefail\ncd \"$(dirname \"$0\")\"\n" + "\n".join(lines) + "\n",
                    encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def export_as_command(run_dir: str | Path, layout: str = "ddp", num_processes: int = 2,
                      out_dir: str | Path | None = None, on_gpu: bool = True, log=print) -> CommandExport:
    """Write the command folder for ``run_dir``; CommandExportError naming what is wrong."""
    run_dir = Path(run_dir)
    if layout not in LAYOUTS:
        raise CommandExportError(f"Layout {layout!r} is not one of {', '.join(LAYOUTS)}.")
    if num_processes < 1:
        raise CommandExportError(f"Processes must be at least 1; got {num_processes}.")
    if not (run_dir / CONFIG_FILE).exists():
        raise CommandExportError(f"{run_dir} is not a run folder: it has no {CONFIG_FILE}.")
    try:
        cfg = load_run_config(run_dir)
    except Exception as exc:  # noqa: BLE001 - any unreadable config is named with its file
        raise CommandExportError(f"{run_dir / CONFIG_FILE} cannot be read: {exc}") from exc
    from backend.training.speed_options import read_recorded

    try:
        trained, choices = as_trained(cfg, read_recorded(run_dir))
    except RecordedSpeedError as exc:
        raise CommandExportError(f"{run_dir}: {exc}") from None

    final = Path(out_dir) if out_dir else run_dir / "exports" / f"command-{layout}-{num_processes}"
    tmp = final.with_name(final.name + ".writing")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        result = _write(cfg, tmp, final, layout, num_processes, on_gpu, log, trained, choices)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return result


def _write(cfg, tmp: Path, final: Path, layout: str, num_processes: int, on_gpu: bool, log, trained,
           choices) -> CommandExport:
    """``trained``: ``cfg`` with the values the speed options chose for the run (``choices``)."""
    result = CommandExport(folder=final, layout=layout, num_processes=num_processes)
    # A fresh run folder each launch: the exported config names no run folder of its own.
    save_yaml(replace_values(cfg, {"run_name": ""}), tmp / CONFIG_FILE)
    accel = f"accelerate_{layout}.yaml"
    write_accelerate_config(tmp / accel, layout, num_processes)
    runner = f"alignstudio train --config {CONFIG_FILE} --accelerate-config {accel}"
    _script(tmp / "launch.sh", [f"# {num_processes} processes, {LAYOUT_LABELS[layout]}.",
                                "# Extra arguments go to `alignstudio train`, e.g. --steps 100.",
                                f'{runner} "$@"'])
    result.commands.append(f"bash {shlex.quote(str(final / 'launch.sh'))}")
    result.files += [CONFIG_FILE, accel, "launch.sh"]

    commands = trl_cli_methods()
    if cfg.method in commands:
        trl_method = commands[cfg.method]
        log("Writing the training rows for TRL's command line")
        rows = _write_training_rows(cfg, tmp / "train.jsonl")
        model_path = _model_path(cfg, log)
        keys = trl_cli_config(trained, model_path, final / "train.jsonl", final / "trl-output", on_gpu=on_gpu)
        trl_file = f"trl_{trl_method}.yaml"
        (tmp / trl_file).write_text(trl_cli_yaml(keys, trl_method, trl_file, choices), encoding="utf-8")
        _script(tmp / "launch_trl.sh", [f"trl {trl_method} --config {trl_file} --accelerate_config {accel} \"$@\""])
        result.commands.append(f"bash {shlex.quote(str(final / 'launch_trl.sh'))}")
        result.files += ["train.jsonl", trl_file, "launch_trl.sh"]
        result.notes.append(f"train.jsonl holds the {rows} normalised rows the run trained on "
                            "(held-out rows included: TRL's command line holds none out).")
        if choices:
            result.notes.append(f"{trl_file} has the settings the studio chose when the run started (speed "
                                "options), marked in the file; config.yaml keeps speed_options: auto, so the "
                                "studio's runner chooses again for the machine it runs on.")
    else:
        result.notes.append(f"TRL's command line has no {cfg.method} command; launch.sh trains it with the "
                            "studio's runner.")
    if cfg.quantization != "none" and layout in ("fsdp", "zero3"):
        result.notes.append("Sharding a 4-bit base needs bitsandbytes' quant storage in the compute dtype; "
                            "if the launch refuses it, set quantization: none in config.yaml.")
    return result


def _write_training_rows(cfg, path: Path) -> int:
    from backend.data.loading import dataset_for_method
    from backend.data.run_data import load_run_data

    dataset = dataset_for_method(load_run_data(cfg), cfg.method)
    dataset.to_json(str(path), lines=True, force_ascii=False)
    return len(dataset)


def _model_path(cfg, log) -> str:
    """A folder or hub id TRL's loader opens (the embedded model and GGUF files converted once, as for training)."""
    from backend.models.source import local_model_folder, model_source_for_config

    return local_model_folder(model_source_for_config(cfg), log=log)
