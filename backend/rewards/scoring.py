"""Score answers with a reward model: a reward-model run folder, its adapter folder, or a model
folder with a one-output sequence-classification head.

``is_reward_model`` and ``locate_reward_model`` read files only (the GUI process may call
them). ``load_reward_scorer`` imports torch and loads the model with the same builders
the training worker used, so a run trained on a 4-bit base scores on that 4-bit base.
Graders (of the RL and online methods), Best-of-N and reward evaluation all go through
``RewardScorer.score``.

Answers are encoded the way TRL's reward trainer encoded the training pairs: a string
prompt and answer are joined and end with EOS; message lists (or a string joined to a
message list) go through the tokenizer's chat template. The score is the head's output at
the last non-pad token.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from backend.runs.folder import ADAPTER_DIR, CONFIG_FILE

# Written into a reward model's adapter folder when its run saves: says what the folder is
# and which base model its adapter and score head belong on.
REWARD_MARKER = "reward_model.json"
MARKER_KIND = "reward_model"


class RewardModelError(ValueError):
    """The source is not a usable reward model; the message says why and what to pick instead."""


@dataclass(frozen=True)
class RewardModelLocation:
    """Where a reward model's parts are (files only)."""

    label: str  # for messages and column headers
    base_model: str  # as resolve_model_source reads it: "" (embedded), a folder, a .gguf file or a hub id
    adapter_dir: str  # "" for a full sequence-classification model
    quantization: str  # how the base is loaded: as the run trained it
    max_length: int  # longer inputs are cut from the start; the score is read at the end
    run_dir: str = ""


def write_reward_marker(adapter_dir: str | Path, cfg: Any) -> Path:
    """Record in ``adapter_dir`` that it holds a reward model's adapter and score head, and on which base."""
    path = Path(adapter_dir) / REWARD_MARKER
    data = {
        "kind": MARKER_KIND,
        "head": "score",
        "num_labels": 1,
        "base_model": str(getattr(cfg, "model", "") or ""),
        "quantization": str(getattr(cfg, "quantization", "none")),
        "max_length": int(getattr(cfg, "max_length", 0) or 0),
        "method": str(getattr(cfg, "method", "")),
        "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _marker(adapter_dir: Path) -> dict | None:
    data = _read_json(adapter_dir / REWARD_MARKER)
    return data if data is not None and data.get("kind") == MARKER_KIND else None


def _has_score_head(model_dir: Path) -> bool:
    config = _read_json(model_dir / "config.json")
    if config is None:
        return False
    architectures = config.get("architectures") or []
    labels = config.get("num_labels") or len(config.get("id2label") or {}) or None
    return any(str(a).endswith("ForSequenceClassification") for a in architectures) and labels == 1


def is_reward_model(source: str | Path) -> bool:
    """Whether ``source`` is a reward model this module can load (reads files only, never raises)."""
    try:
        locate_reward_model(source)
    except RewardModelError:
        return False
    return True


def locate_reward_model(source: str | Path) -> RewardModelLocation:
    """Where the reward model named by ``source`` keeps its parts. Raises RewardModelError
    with a sentence saying what ``source`` is instead."""
    text = str(source or "").strip()
    if not text:
        raise RewardModelError("No reward model was given. Pick a reward model run (trained with the Reward model "
                               "method) or a model folder with a one-output classification head.")
    path = Path(text).expanduser()
    if not path.is_dir():
        raise RewardModelError(f"The reward model {text} is not a folder. Pick a reward model run folder, its "
                               f"{ADAPTER_DIR}/ folder, or a model folder with a one-output classification head.")
    path = path.resolve()
    run_dir = path if (path / CONFIG_FILE).is_file() else (
        path.parent if (path.parent / CONFIG_FILE).is_file() else None)
    adapter = path / ADAPTER_DIR if run_dir == path else path
    marker = _marker(adapter)
    if marker is not None:
        base, quant, max_length = marker.get("base_model", ""), marker.get("quantization", "none"), \
            int(marker.get("max_length") or 0)
        if run_dir is not None:
            from backend.runs.config import ConfigError, load_yaml

            try:  # the run's own settings win over a marker that may have been copied about
                cfg = load_yaml(run_dir / CONFIG_FILE)
                base, quant, max_length = cfg.model, cfg.quantization, cfg.max_length
            except ConfigError:
                pass
        label = run_dir.name if run_dir is not None else adapter.name
        return RewardModelLocation(label=label, base_model=base or "", adapter_dir=str(adapter),
                                   quantization=quant or "none", max_length=max_length or 1024,
                                   run_dir=str(run_dir or ""))
    if _has_score_head(path):
        return RewardModelLocation(label=path.name, base_model=str(path), adapter_dir="", quantization="none",
                                   max_length=0)
    raise RewardModelError(_not_a_reward_model(path, run_dir))


def _not_a_reward_model(path: Path, run_dir: Path | None) -> str:
    if run_dir is not None:
        from backend.methods import find_method
        from backend.runs.config import ConfigError, load_yaml

        try:
            method = load_yaml(run_dir / CONFIG_FILE).method
        except ConfigError:
            method = ""
        spec = find_method(method)
        if spec is not None and spec.model_head != "score":
            return (f"The run {run_dir.name} trained {spec.label}, which makes a language model, not a reward "
                    "model. Pick a run trained with the Reward model method.")
        return (f"The run {run_dir.name} has no saved reward model yet ({ADAPTER_DIR}/{REWARD_MARKER} is "
                "missing). Wait for it to finish, or pick a finished reward model run.")
    if (path / "config.json").is_file():
        return (f"{path} is a model folder without a one-output classification head, so it cannot score "
                "answers. Pick a reward model run or a sequence-classification model with one label.")
    return (f"{path} is neither a reward model run, a reward model's {ADAPTER_DIR}/ folder, nor a model folder. "
            "Pick a run trained with the Reward model method.")


def _as_messages(value: Any, role: str) -> list[dict]:
    return value if isinstance(value, list) else [{"role": role, "content": str(value)}]


def encode_pair_text(tokenizer, prompt: Any, completion: Any) -> list[int]:
    """Token ids of one prompt + answer, as TRL's reward trainer built them for training."""
    if isinstance(prompt, list) or isinstance(completion, list):
        messages = _as_messages(prompt, "user") + _as_messages(completion, "assistant")
        encoded = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)
        return list(encoded["input_ids"])
    text = str(prompt) + str(completion)
    eos = tokenizer.eos_token or ""
    if eos and not text.endswith(eos):
        text += eos
    return list(tokenizer(text=text)["input_ids"])


class RewardScorer:
    """A loaded reward model. ``score`` returns one float per (prompt, answer)."""

    def __init__(self, model, tokenizer, location: RewardModelLocation, device: str):
        self.model = model
        self.tokenizer = tokenizer
        self.location = location
        self.device = device
        self.label = location.label

    def score(self, prompts: list, completions: list, batch_size: int = 8,
              on_progress: Callable[[int, int], None] | None = None) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"score() got {len(prompts)} prompts but {len(completions)} answers; "
                             "give one prompt per answer.")
        if self.model is None:
            raise RuntimeError("This reward scorer was closed; load it again.")
        import torch

        encoded = [self._encode(p, c) for p, c in zip(prompts, completions)]
        # Similar lengths share a batch: less padding, same scores.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        scores: list[float] = [0.0] * len(encoded)
        pad = self.tokenizer.pad_token_id
        step = max(1, int(batch_size))
        with torch.inference_mode():
            for start in range(0, len(order), step):
                chunk = order[start:start + step]
                width = max(len(encoded[i]) for i in chunk)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, i in enumerate(chunk):
                    ids[row, :len(encoded[i])] = torch.tensor(encoded[i])
                    mask[row, :len(encoded[i])] = 1
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
                for row, value in zip(chunk, logits[:, 0].float().cpu().tolist()):
                    scores[row] = float(value)
                if on_progress is not None:
                    on_progress(min(start + step, len(order)), len(order))
        return scores

    def _encode(self, prompt: Any, completion: Any) -> list[int]:
        ids = encode_pair_text(self.tokenizer, prompt, completion)
        limit = self.location.max_length
        # The score is read at the answer's end, so an over-long input loses its start.
        return ids[-limit:] if limit and len(ids) > limit else ids

    def close(self) -> None:
        import gc

        self.model = None
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __enter__(self) -> "RewardScorer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_reward_scorer(source: str, *, trust_remote_code: bool = False, allow_pickle_weights: bool = False,
                       log: Callable[[str], None] = print) -> RewardScorer:
    """Load the reward model ``source`` names (see ``locate_reward_model``). Permission to run a
    model's code or read pickle weights comes from the caller, never from the run folder; the
    base model and the adapter are checked against it before anything is loaded."""
    from backend.models.source import ModelSourceError, local_model_folder, resolve_checked_model

    location = locate_reward_model(source)
    if location.adapter_dir and not (Path(location.adapter_dir) / "adapter_model.safetensors").is_file():
        if not allow_pickle_weights:
            raise ModelSourceError(
                f"The reward model {location.label} has no adapter_model.safetensors; its pickle weights were not "
                "loaded because unpickling can run code. Turn on allow_pickle_weights only if you trust the file.",
                setting="allow_pickle_weights")
    model_source = resolve_checked_model(location.base_model, trust_remote_code=trust_remote_code,
                                         allow_pickle_weights=allow_pickle_weights)
    model_path = local_model_folder(model_source, log=log)

    import transformers

    transformers.utils.logging.disable_progress_bar()
    from backend.methods import DEFAULT_METHOD
    from backend.runs.config import default_config
    from backend.training.trainer_builders import build_model, build_tokenizer, choose_precision

    cfg = default_config(DEFAULT_METHOD, quantization=location.quantization, trust_remote_code=trust_remote_code,
                         allow_pickle_weights=allow_pickle_weights)
    precision = choose_precision()
    started = time.time()
    tokenizer = build_tokenizer(model_path, cfg)
    model = build_model(model_path, cfg, precision, head="score")
    # The trainer set the pad id from the tokenizer; the score is read just before the first pad.
    model.config.pad_token_id = tokenizer.pad_token_id
    if location.adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, location.adapter_dir, is_trainable=False)
    model.eval()
    log(f"Reward model {location.label} loaded in {time.time() - started:.1f} s ({precision.label}, "
        f"{location.quantization}).")
    device = next(model.parameters()).device
    return RewardScorer(model, tokenizer, location, str(device))
