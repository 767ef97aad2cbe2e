"""What a generation job is asked to do, and the checks that can be made before any model loads.

A request travels as JSON (window or CLI -> worker). ``check_request`` reads files only: a
missing input, an output path that cannot be written, a model that is not there or that would
run unreviewed code, an empty constitution, all fail in milliseconds with a sentence naming the
setting, instead of half a minute into a model load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AI_FEEDBACK = "ai-feedback"
CONSTITUTIONAL = "constitutional"
JOBS = (AI_FEEDBACK, CONSTITUTIONAL)
JOB_LABELS = {AI_FEEDBACK: "AI feedback (a judge labels answer pairs)",
              CONSTITUTIONAL: "Constitutional AI (critique and revise against principles)"}
QUANTIZATIONS = ("none", "4bit", "8bit")
PARTIAL_SUFFIX = ".partial.jsonl"
REPORT_SUFFIX = ".report.json"


class RequestError(ValueError):
    """The request cannot run; ``setting`` names the field to change."""

    def __init__(self, message: str, setting: str = ""):
        super().__init__(message)
        self.setting = setting


@dataclass
class GenerationRequest:
    job: str
    input_path: str
    output_path: str = ""  # empty: next to the input, named for the job
    # AI feedback: the judge; Constitutional AI: the model that answers, critiques and revises.
    # "" is the embedded model; also a model folder, a .gguf file, a cached hub id or a run folder.
    model: str = ""
    # AI feedback on a prompts-only file: one model (two samples each) or two models (one answer each).
    answer_models: list[str] = field(default_factory=list)
    principles: list[dict[str, str]] = field(default_factory=list)  # Constitutional AI
    max_new_tokens: int = 96
    temperature: float = 0.7
    seed: int = 0
    limit: int = 0  # 0: every row
    quantization: str = "none"
    restart: bool = False  # True: discard a partial file instead of continuing it

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GenerationRequest":
        if not isinstance(data, dict):
            raise RequestError("A generation request is a JSON object.")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise RequestError(f"Unknown request field(s): {', '.join(unknown)}.")
        try:
            return cls(**data)
        except TypeError as exc:
            raise RequestError(f"The request is incomplete: {exc}.") from None

    # ------------------------------------------------------------ paths
    def absolute(self) -> "GenerationRequest":
        """The same request with every local path made absolute: the worker runs in another folder."""
        def local(value: str) -> str:
            path = Path(value).expanduser()
            return str(path.resolve()) if value.strip() and path.exists() else value

        return dataclasses.replace(self, input_path=local(self.input_path), output_path=str(self.output.resolve()),
                                   model=local(self.model), answer_models=[local(m) for m in self.answer_models])

    @property
    def output(self) -> Path:
        if self.output_path.strip():
            return Path(self.output_path).expanduser()
        source = Path(self.input_path).expanduser()
        stem = source.name.split(".")[0] or "data"
        return source.parent / f"{stem}.{self.job}.jsonl"

    @property
    def partial(self) -> Path:
        return self.output.with_name(self.output.name + PARTIAL_SUFFIX)

    @property
    def report(self) -> Path:
        out = self.output
        return out.with_name(out.name[: -len(out.suffix)] + REPORT_SUFFIX if out.suffix else out.name + REPORT_SUFFIX)

    def models(self) -> list[str]:
        return [self.model] + (list(self.answer_models) if self.job == AI_FEEDBACK else [])

    def fingerprint(self) -> str:
        """What the done rows depend on: a partial file made under another fingerprint is not continued.
        The row limit and the output path are left out (more rows can be asked for later)."""
        source = Path(self.input_path).expanduser()
        try:
            st = source.stat()
            stamp = [str(source.resolve()), st.st_size, int(st.st_mtime)]
        except OSError:
            stamp = [str(source)]
        keep = {k: v for k, v in self.to_dict().items() if k not in ("output_path", "limit", "restart")}
        text = json.dumps([keep, stamp], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def check_request(request: GenerationRequest) -> None:
    """Raise RequestError for anything that can be seen wrong without loading a model."""
    if request.job not in JOBS:
        raise RequestError(f"Unknown job '{request.job}'; choose one of {', '.join(JOBS)}.", "job")
    source = Path(request.input_path).expanduser() if request.input_path.strip() else None
    if source is None:
        raise RequestError("Choose an input file: prompts (and, for AI feedback, optionally two answers each).",
                           "input_path")
    if not source.exists():
        raise RequestError(f"The input file {source} does not exist.", "input_path")
    out = request.output
    if out.resolve() == source.resolve():
        raise RequestError(f"The output {out} is the input file; choose another name so the input stays as it is.",
                           "output_path")
    if out.suffix.lower() != ".jsonl":
        raise RequestError(f"The output {out.name} must be a .jsonl file (JSON Lines).", "output_path")
    if out.is_dir():
        raise RequestError(f"The output {out} is a folder; give a file name ending in .jsonl.", "output_path")
    parent = out.parent
    if not parent.is_dir():
        raise RequestError(f"The folder {parent} for the output does not exist.", "output_path")
    if not os.access(parent, os.W_OK):
        raise RequestError(f"The folder {parent} cannot be written to; choose another output.", "output_path")
    if not 1 <= int(request.max_new_tokens) <= 4096:
        raise RequestError(f"Max new tokens must be between 1 and 4096; got {request.max_new_tokens}.",
                           "max_new_tokens")
    if not 0.0 <= float(request.temperature) <= 5.0:
        raise RequestError(f"Temperature must be between 0 and 5; got {request.temperature}.", "temperature")
    if int(request.limit) < 0:
        raise RequestError(f"The row limit must be 0 (all rows) or more; got {request.limit}.", "limit")
    if request.quantization not in QUANTIZATIONS:
        raise RequestError(f"Quantization must be one of {', '.join(QUANTIZATIONS)}; got {request.quantization!r}.",
                           "quantization")
    if request.job == AI_FEEDBACK and len(request.answer_models) > 2:
        raise RequestError("Give at most two answer models: one (sampled twice) or two (one answer each).",
                           "answer_models")
    if request.job == CONSTITUTIONAL:
        from backend.generation.preferences.constitution import check_principles

        check_principles(request.principles)
    for index, model in enumerate(request.models()):
        setting = "model" if index == 0 else "answer_models"
        check_model(model, setting)


def check_model(model: str, setting: str = "model") -> None:
    """A model the studio can load: embedded, folder, .gguf, cached hub id, run or adapter folder."""
    from backend.models.source import ModelSourceError, resolve_checked_model

    try:
        resolve_checked_model(run_base_model(model))
    except ModelSourceError as exc:
        if exc.setting in ("trust_remote_code", "allow_pickle_weights"):
            # Granted (or not) by the launch: the window asks, the CLI reads its flag, and the
            # worker loads the model only with what that launch granted.
            return
        raise RequestError(str(exc), setting) from None


def run_base_model(model: str) -> str:
    """The base model of a run or adapter folder; ``model`` itself otherwise."""
    folder = Path(model).expanduser() if model.strip() else None
    if folder is None or not folder.is_dir():
        return model
    from backend.models.adapter_loading import AdapterLoadError, resolve_load_spec
    from backend.runs.folder import CONFIG_FILE

    try:
        if (folder / CONFIG_FILE).is_file():
            return resolve_load_spec(run_dir=folder).model
        if (folder / "adapter_config.json").is_file():
            return resolve_load_spec(adapter_dir=folder).model
    except AdapterLoadError as exc:
        raise RequestError(str(exc), "model") from None
    return model
