"""A model the studio can load, as a judge and as an answerer, on the shared generation engine.

Loading goes through ``backend.models.adapter_loading`` exactly as the Compare tab loads: the embedded
model, a folder, a .gguf file, a cached hub id, or a run or adapter folder (then the answers come
from the adapter), with the same refusals of pickle weights and repository code unless the launch
granted them. Imports torch; runs only inside the generation job worker.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

from backend.generation.protocol import SamplingSettings
from backend.generation.preferences.jobs import JobStopped
from backend.generation.preferences.judging import judge_messages
from backend.generation.preferences.request import RequestError
from backend.data.prompt_rendering import prompt_token_ids


def load_spec_for(model: str, quantization: str):
    """(LoadSpec, side): a run or adapter folder answers with its adapter, anything else is a base model."""
    from backend.models.adapter_loading import resolve_load_spec
    from backend.runs.folder import CONFIG_FILE

    folder = Path(model).expanduser() if model.strip() else None
    if folder is not None and folder.is_dir() and (folder / CONFIG_FILE).is_file():
        return resolve_load_spec(run_dir=folder, quantization=quantization), "aligned"
    if folder is not None and folder.is_dir() and (folder / "adapter_config.json").is_file():
        return resolve_load_spec(adapter_dir=folder, quantization=quantization), "aligned"
    return resolve_load_spec(model=model, quantization=quantization), "base"


class LocalModel:
    def __init__(self, model: str, quantization: str, cancel: threading.Event, log: Callable[[str], None] = print,
                 on_phase: Callable[[str, str], None] | None = None, stop_strings: list[str] | None = None):
        from backend.models.adapter_loading import load_model
        from backend.generation.engine import GenerationEngine

        spec, self.side = load_spec_for(model, quantization)
        self.loaded = load_model(spec, log=log, on_phase=on_phase)
        self.engine = GenerationEngine(self.loaded)
        self.cancel = cancel
        self.tokenizer = self.loaded.tokenizer
        self.text_stop_strings = list(stop_strings or [])
        self.label = self.loaded.model_label + (f" + {Path(spec.adapter_dir).parent.name}" if spec.adapter_dir else "")
        self._letters: dict[str, list[int]] | None = None

    # ------------------------------------------------------------ answering
    def answer(self, prompt: Any, *, seed: int, max_new_tokens: int, temperature: float) -> str:
        # Plain-text prompts stop where the next framed turn would begin; chat turns end at the template's own token.
        stops = self.text_stop_strings if isinstance(prompt, str) else []
        # An empty answer makes no pair; at least one token is asked for.
        sampling = SamplingSettings(max_new_tokens=max_new_tokens, min_new_tokens=1, greedy=temperature <= 0,
                                    temperature=max(temperature, 0.01), seed=seed, stop_strings=stops)
        result = self.engine.generate([prompt], self.side, sampling, self.cancel)[0][self.side]
        if result.finish_reason == "cancelled":
            raise JobStopped("Stopped while generating.")
        return result.text

    # ------------------------------------------------------------ judging
    def letter_ids(self) -> dict[str, list[int]]:
        """The single tokens that spell each verdict letter (with and without a leading space)."""
        if self._letters is None:
            letters: dict[str, list[int]] = {}
            for letter in ("A", "B"):
                ids = {tuple(self.tokenizer.encode(v, add_special_tokens=False)) for v in (letter, " " + letter)}
                letters[letter] = sorted(i[0] for i in ids if len(i) == 1)
                if not letters[letter]:
                    raise RequestError(f"The judge {self.label} has no single token for the letter {letter}, so "
                                       "its verdict cannot be read; choose another judge model.", "model")
            self._letters = letters
        return self._letters

    def prob_first_better(self, prompt: Any, first: str, second: str) -> float:
        import torch

        if self.cancel.is_set():
            raise JobStopped("Stopped while judging.")
        letters = self.letter_ids()
        ids = prompt_token_ids(self.tokenizer, judge_messages(prompt, first, second))
        inputs = torch.tensor([ids], dtype=torch.long, device=self.engine.device)
        with self.engine.adapter_state(self.side):
            logits = self.engine.forward(input_ids=inputs, use_cache=False, logits_to_keep=1).logits[0, -1].float()
        score_a = torch.logsumexp(logits[letters["A"]], dim=0)
        score_b = torch.logsumexp(logits[letters["B"]], dim=0)
        return float(torch.sigmoid(score_a - score_b))


class LocalModels:
    """Loads each named model once; the judge and an answerer that name the same model share it."""

    def __init__(self, quantization: str, cancel: threading.Event, log: Callable[[str], None] = print,
                 on_phase: Callable[[str, str], None] | None = None, stop_strings: list[str] | None = None):
        self.quantization, self.cancel, self.log, self.on_phase = quantization, cancel, log, on_phase
        self.stop_strings = stop_strings
        self._models: dict[str, LocalModel] = {}

    def _get(self, model: str) -> LocalModel:
        key = model.strip()
        if key not in self._models:
            self._models[key] = LocalModel(key, self.quantization, self.cancel, log=self.log, on_phase=self.on_phase,
                                           stop_strings=self.stop_strings)
        return self._models[key]

    judge = _get
    answerer = _get
