"""Checks made before a run starts, so that nothing fails half an hour into it for a
reason that could be seen up front.

``validate`` in run_config judges the settings alone. This module looks at the
world around them: the model (is it there, is it safe to load, can a hub id be
downloaded), the runs folder (can it be written, is there room for what the
run will write) and the data (do the prompts even fit in Max length).

Every problem comes back as a ``(setting, message)`` pair, like ``validate``'s,
so the CLI prints both the same way and the window flags the same fields.
Nothing here imports torch or transformers: the window runs it on Train.
"""

from __future__ import annotations

import dataclasses

import math
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from backend.data.hub import is_hub_id
from backend.data.long_prompts import outcome_text, refusal
from backend.runs.config import BaseRunConfig, ConfigError, check, field_label

MiB = 2**20
GiB = 2**30

# peft saves LoRA weights in the dtype they trained in: fp32 unless TRL cast them
# to bf16. Counting 4 bytes never under-estimates.
ADAPTER_BYTES_PER_PARAM = 4
# A checkpoint holds the adapter plus AdamW's two moments of the same size.
CHECKPOINT_ADAPTER_MULTIPLE = 3
# When the model's shape cannot be read (a hub id not downloaded yet): the adapter
# of a 7-8B Llama at rank 16 on all linear layers is ~170 MB; this rounds it up.
UNKNOWN_ADAPTER_BYTES_AT_RANK_16 = 256 * MiB
# Each checkpoint and the final adapter carry a copy of the tokenizer files.
UNKNOWN_TOKENIZER_BYTES = 40 * MiB
RUN_LOG_BYTES = 32 * MiB  # metrics.jsonl, worker.log, the held-out split
SAFETY_MARGIN_BYTES = 512 * MiB
SAFETY_MARGIN_FRACTION = 0.10
# The embedded model's first use joins a 253 MB GGUF from the installed package
# and converts it to a bf16 folder (FACTS.md); both sit in the cache meanwhile.
EMBEDDED_GGUF_BYTES = 253 * 10**6
BF16_BYTES = 2
MAX_LENGTH_LIMIT = 131072  # the Max length setting's own maximum
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "chat_template.jinja")

FreeSpace = Callable[[Path], int]
HubProbe = Callable[[], "str | None"]


# --------------------------------------------------------------------- entry
def run_preflight(cfg: BaseRunConfig, *, runs_root: str | Path | None = None, data_report=None,
                  measure_data: bool = True, free_space: FreeSpace | None = None,
                  reach_hub: HubProbe | None = None, notes: list[str] | None = None) -> list[tuple[str, str]]:
    """Every reason ``cfg`` cannot start now, as (setting, message) pairs; empty when it can.
    ``notes``, when given, receives what the run will do to the data without refusing it
    (``max_length_notes``) and the method's advice about the data (``method_advice``).

    ``data_report`` is the dataset's report when the caller already has one (the
    window does); otherwise the data is read here unless ``measure_data`` is off.
    ``free_space(folder) -> bytes`` and ``reach_hub() -> error or None`` replace the
    real disk and network look-ups (tests use them)."""
    problems = input_problems(cfg) + model_problems(cfg, reach_hub=reach_hub)
    root = runs_folder(cfg, runs_root)
    writable = runs_folder_problem(root)
    if writable:
        problems.append(("output_dir", writable))
    else:
        problems += disk_space_problems(disk_needs(cfg, root), free_space=free_space)
    if data_report is None and measure_data:
        data_report = measure_dataset(cfg)
    problems += method_data_problems(cfg, data_report) + max_length_problems(cfg, data_report)
    if notes is not None:
        from backend.data.report import method_advice

        notes += max_length_notes(cfg, data_report) + method_advice(cfg, data_report)
    return problems


def input_problems(cfg: BaseRunConfig) -> list[tuple[str, str]]:
    """The other models or files the method needs and the config does not name yet."""
    from backend.methods import find_method

    spec = find_method(cfg.method)
    return list(spec.missing_inputs(cfg)) if spec and spec.missing_inputs else []


def check_before_training(cfg: BaseRunConfig, **kwargs) -> BaseRunConfig:
    """``validate`` and ``run_preflight`` together; raises ConfigError listing every problem."""
    check(cfg)
    problems = run_preflight(cfg, **kwargs)
    if problems:
        raise ConfigError(problems)
    return cfg


def resume_problems(run_dir: str | Path, *, free_space: FreeSpace | None = None,
                    reach_hub: HubProbe | None = None, permissions: dict | None = None) -> list[tuple[str, str]]:
    """Every reason the run in ``run_dir`` cannot be continued now. Between a crash and
    a resume the world moves: the dataset or the model may have been moved, the disk
    filled up, or the run may already be running in another window."""
    from backend.runs.folder import CONFIG_FILE, load_run_config, worker_alive

    run_dir = Path(run_dir).expanduser()
    if not (run_dir / CONFIG_FILE).is_file():
        return [("run", f"{run_dir} is not a run folder (it has no {CONFIG_FILE}).")]
    try:
        cfg = load_run_config(run_dir)
    except (ConfigError, OSError) as exc:
        return [("run", f"The run's {CONFIG_FILE} cannot be read: {exc}")]
    if worker_alive(run_dir):
        return [("run", f"{run_dir.name} is still training (in this or another window); it cannot be resumed twice.")]
    if permissions:  # granted by the user for this resume (a run folder never carries them)
        cfg = dataclasses.replace(cfg, **permissions)
    problems = model_problems(cfg, reach_hub=reach_hub)
    if cfg.data_path and not Path(cfg.data_path).expanduser().exists() and not is_hub_id(cfg.data_path):
        problems.append(("data_path", f"The run's dataset {cfg.data_path} is no longer there. Put it back, or "
                                      "train again with its settings and a new dataset path."))
    from backend.core.output_containment import escaping_links_problem

    writable = runs_folder_problem(run_dir) or escaping_links_problem(run_dir)
    if writable:
        problems.append(("output_dir", writable))
    else:
        problems += disk_space_problems(disk_needs(cfg, run_dir.parent), free_space=free_space)
    return problems


# --------------------------------------------------------------------- model
def model_problems(cfg: BaseRunConfig, reach_hub: HubProbe | None = None) -> list[tuple[str, str]]:
    from backend.models.source import ModelSourceError, hub_offline, model_source_for_config

    try:
        source = model_source_for_config(cfg)
    except ModelSourceError as exc:
        return [("model", str(exc))]
    if source.kind == "hub" and not source.cached_folder and not hub_offline():
        error = (reach_hub or hub_unreachable_reason)()
        if error:
            return [("model", f"'{source.location}' is not in the Hugging Face cache and huggingface.co cannot be "
                              f"reached ({error}), so it cannot be downloaded. Connect to the internet and "
                              "start again, pick a local model folder or .gguf file, or leave the model empty "
                              "to use the embedded Gemma 3 270M, which works offline.")]
    return []


def hub_unreachable_reason(timeout: float = 3.0) -> str | None:
    """None when the Hugging Face endpoint accepts a connection, else why it does not.

    A TCP connect only, no request: enough to tell "offline" from "online" before a
    worker spends seconds importing torch to find out."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout).close()
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__
    return None


# --------------------------------------------------------------- runs folder
def runs_folder(cfg: BaseRunConfig, runs_root: str | Path | None = None) -> Path:
    """Where the run folder will be created, with the same precedence as create_run_dir."""
    from backend.core.paths import runs_dir

    return Path(runs_root or cfg.output_dir or runs_dir()).expanduser().absolute()


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def runs_folder_problem(root: Path) -> str | None:
    """Why no run folder can be made under ``root``, or None. Writes and removes one empty file."""
    existing = _nearest_existing(root)
    if not existing.is_dir():
        return (f"The runs folder {root} cannot be created: {existing} is a file, not a folder. "
                f"Choose another {field_label('output_dir')} (Advanced settings, Output; CLI: --runs-dir).")
    try:
        fd, probe = tempfile.mkstemp(prefix=".alignstudio-write-test-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        where = root if existing == root else f"{root} (its parent {existing})"
        return (f"The runs folder {where} cannot be written: {exc.strerror or exc}. Choose another "
                f"{field_label('output_dir')} (Advanced settings, Output; CLI: --runs-dir), or give yourself "
                "write permission there.")
    return None


# ---------------------------------------------------------------- disk space
@dataclass(frozen=True)
class DiskNeed:
    """Bytes a run will write under ``folder``; ``setting`` is what the user can change about it."""

    folder: Path
    bytes: int
    what: str
    setting: str


def disk_needs(cfg: BaseRunConfig, root: Path) -> list[DiskNeed]:
    """What the run writes: checkpoints and the adapter in its run folder, and a
    converted model in the cache when a .gguf (or the embedded model) is used the first time."""
    from backend.training.memory_estimate import model_shape

    shape = model_shape(cfg.model)
    adapter = adapter_bytes(cfg, shape)
    tokenizer = tokenizer_bytes(cfg)
    saves = checkpoints_on_disk(cfg)
    checkpoint = CHECKPOINT_ADAPTER_MULTIPLE * adapter + tokenizer
    # The final adapter is written next to the old one before it replaces it: two copies at once.
    run = saves * checkpoint + 2 * (adapter + tokenizer) + RUN_LOG_BYTES
    what = f"the adapter ({_size(adapter)})"
    if saves:
        what += f" and up to {saves} checkpoints with optimizer state ({_size(checkpoint)} each)"
    needs = [DiskNeed(root, run, what, "output_dir")]
    conversion = conversion_need(cfg)
    if conversion:
        needs.append(conversion)
    return needs


def adapter_bytes(cfg: BaseRunConfig, shape) -> int:
    """LoRA adds r x (in + out) weights to each targeted linear layer."""
    if shape is None:
        return max(1, UNKNOWN_ADAPTER_BYTES_AT_RANK_16 * cfg.lora_r // 16)
    from backend.training.memory_estimate import _lora_targets  # the same target resolution the memory estimate uses

    targets = _lora_targets(shape, cfg.lora_target_modules) or shape.layer_linears()
    params = shape.num_layers * sum(cfg.lora_r * (fan_in + fan_out) for _, fan_in, fan_out in targets)
    return params * ADAPTER_BYTES_PER_PARAM


def checkpoints_on_disk(cfg: BaseRunConfig) -> int:
    """The Trainer writes a new checkpoint before deleting the oldest: one more than the limit."""
    if cfg.save_steps <= 0:
        return 0
    if cfg.max_steps > 0:
        return min(cfg.save_total_limit + 1, max(1, cfg.max_steps // cfg.save_steps) + 1)
    return cfg.save_total_limit + 1


def tokenizer_bytes(cfg: BaseRunConfig) -> int:
    folder = tokenizer_folder(cfg)
    if folder is None:
        return UNKNOWN_TOKENIZER_BYTES
    return sum((folder / name).stat().st_size for name in TOKENIZER_FILES if (folder / name).is_file())


def _source_and_folder(cfg: BaseRunConfig):
    """The model's source and the folder its files are (or, once converted, will be) in;
    (None, None) when the model cannot be resolved: the model check reports that."""
    from backend.models.source import ModelSourceError, gguf_cache_folder, resolve_model_source

    try:
        source = resolve_model_source(cfg.model)
    except ModelSourceError:
        return None, None
    if source.kind == "embedded":
        from backend.models.embedded_model import embedded_model_folder

        return source, embedded_model_folder()
    if source.kind == "gguf":
        return source, gguf_cache_folder(source.location)
    if source.kind == "hub":
        return source, Path(source.cached_folder) if source.cached_folder else None
    return source, Path(source.location)


def conversion_need(cfg: BaseRunConfig) -> DiskNeed | None:
    from backend.export.gguf_conversion import is_converted

    source, folder = _source_and_folder(cfg)
    if source is None or source.kind not in ("embedded", "gguf") or is_converted(folder):
        return None
    if source.kind == "embedded":
        from backend.training.memory_estimate import GEMMA3_270M

        size = GEMMA3_270M.total_params * BF16_BYTES + EMBEDDED_GGUF_BYTES
        return DiskNeed(folder.parent, size, "the embedded model, converted once on first use", "model")
    if source.kind == "gguf":
        from backend.training.memory_estimate import shape_from_gguf

        shape = shape_from_gguf(source.location)
        # Without a readable header: a 4-5 bit GGUF grows about 3.5x when written as bf16.
        size = shape.total_params * BF16_BYTES if shape else 4 * Path(source.location).stat().st_size
        return DiskNeed(folder.parent, size, f"{Path(source.location).name} converted to safetensors once",
                        "model")
    return None


def disk_space_problems(needs: list[DiskNeed], free_space: FreeSpace | None = None) -> list[tuple[str, str]]:
    """Compare what will be written with the free space of each filesystem written to."""
    free_space = free_space or (lambda folder: shutil.disk_usage(folder).free)
    by_device: dict[int, list[DiskNeed]] = {}
    for need in needs:
        existing = _nearest_existing(need.folder)
        by_device.setdefault(existing.stat().st_dev, []).append(need)
    problems = []
    for group in by_device.values():
        written = sum(n.bytes for n in group)
        needed = written + SAFETY_MARGIN_BYTES + int(SAFETY_MARGIN_FRACTION * written)
        folder = group[0].folder
        free = free_space(_nearest_existing(folder))
        if free >= needed:
            continue
        parts = "; ".join(f"{n.what} in {n.folder}" for n in group)
        message = (f"Not enough free disk space for this run: {_size(free)} free where {folder} is, about "
                   f"{_size(needed)} needed ({parts}; plus a safety margin). Free up space there")
        if any(n.setting == "output_dir" for n in group):
            message += (f", choose a {field_label('output_dir')} on another disk (Advanced settings, Output; "
                        "CLI: --runs-dir), or keep fewer checkpoints or a lower LoRA rank.")
        else:
            message += ", or set ALIGNSTUDIO_CACHE to a folder on a disk with more room."
        problems.append((group[0].setting, message))
    return problems


def _size(n: float) -> str:
    if n >= GiB:
        return f"{n / GiB:.1f} GB"
    if n >= MiB:
        return f"{n / MiB:.0f} MB"
    return f"{max(n, 0) / 1024:.0f} KB"


# ----------------------------------------------------------------------- data
def tokenizer_folder(cfg: BaseRunConfig) -> Path | None:
    """A folder on disk with the model's tokenizer files, if there is one already."""
    _source, folder = _source_and_folder(cfg)
    return folder if folder is not None and (folder / "tokenizer.json").is_file() else None


def measure_dataset(cfg: BaseRunConfig):
    """The dataset's report (lengths in the model's tokens when its tokenizer is on disk),
    or None when the data cannot be read: the worker then reports that with its own hint."""
    if not cfg.data_path:
        return None
    from backend.data.loading import DatasetError
    from backend.data.report import build_report
    from backend.data.run_data import load_run_data

    try:
        loaded = load_run_data(cfg)
    except (DatasetError, OSError):
        return None
    folder = tokenizer_folder(cfg)
    return build_report(loaded, tokenizer_path=str(folder) if folder else None)


def method_data_problems(cfg: BaseRunConfig, report) -> list[tuple[str, str]]:
    """The method cannot train on this kind of data (pairs for a method of single answers,
    say): refused here, with the method's own reason, before a run folder is made for it."""
    if report is None or cfg.method in report.supported_methods:
        return []
    from backend.data.formats import DataFormat
    from backend.data.loading import unsupported_reason
    from backend.methods import find_method

    if find_method(cfg.method) is None:
        return []  # validate names an unknown method
    return [("method", f"{Path(cfg.data_path).name}: {unsupported_reason(cfg.method, DataFormat(report.format))}")]


def max_length_problems(cfg: BaseRunConfig, report) -> list[tuple[str, str]]:
    """Refuse a Max length that most prompts already fill, or that the Long prompts
    policy cannot live with (refuse: any example losing part of its answer; drop: most
    of them).

    Some of TRL 1.16's trainers drop an example whose prompt alone fills ``max_length``
    (their ``keep_start`` truncation would leave no answer to compare); others keep the
    start and cut the answer away, and an empty answer gives a NaN loss. The
    worker applies the policy with the model's tokenizer (``backend.data.long_prompts``);
    this sees the same from the data report, before anything starts."""
    stats = (getattr(report, "lengths", None) or {}).get("prompt")
    if stats is None:
        return []
    unit = "tokens" if report.length_unit == "tokens" else "tokens (estimated)"
    name = Path(report.path).name if getattr(report, "path", "") else "the dataset"
    label = field_label("max_length")
    if stats.median >= cfg.max_length:
        suggested = report.suggested_max_length or 0
        fits = "95% of the examples fit"
        if suggested <= stats.median:  # only when the answers are empty; leave room for one anyway
            suggested, fits = _round_up(stats.median * 1.5, 64), "room for an answer after a typical prompt"
        suggested = min(suggested, MAX_LENGTH_LIMIT)
        return [("max_length", f"{label} is {cfg.max_length}, but half of the prompts in {name} are "
                               f"{stats.median:g} {unit} or longer: most examples would be dropped or lose their "
                               f"answer and teach nothing. Raise it to about {suggested} ({fits}) or shorten the "
                               "prompts.")]
    fit = _length_fit(report, cfg.max_length)
    message = refusal(fit, _policy(cfg), unit, name) if fit else None
    return [("max_length", message)] if message else []


def max_length_notes(cfg: BaseRunConfig, report) -> list[str]:
    """What Max length and the Long prompts policy will do to the data, when they start
    anyway: shown before training so the counts are no surprise in the worker log."""
    fit = _length_fit(report, cfg.max_length)
    if fit is None or max_length_problems(cfg, report):
        return []
    unit = "tokens" if report.length_unit == "tokens" else "tokens (estimated)"
    text = outcome_text(fit, _policy(cfg), unit)
    return [text] if text else []


def _length_fit(report, max_length: int):
    length_fit = getattr(report, "length_fit", None)
    return length_fit(max_length) if callable(length_fit) else None


def _policy(cfg: BaseRunConfig) -> str:
    return getattr(cfg, "long_prompts", "truncate_left") or "truncate_left"


def _round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)
