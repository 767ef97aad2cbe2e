"""Generation and scoring on one loaded model, with the adapter switched per side.

The base side runs under ``model.disable_adapter()``: the same weights with
the LoRA path really off, which is also the reference model that methods with
a reference pass trained against. Both sides decode in lockstep (one token for the base side, one for
the aligned side, and again), each with its own KV cache and its own random
generator seeded with the same seed; the answers stream into both panes
together, and the adapter is the only difference between them.

The decoding loop is ours rather than ``model.generate`` because ``generate``
cannot alternate between two adapter states token by token, and because a
loop of our own checks the cancel flag before every token. It uses
transformers' own logits processors, so temperature, top-p, top-k and the
repetition penalty mean what they mean in ``generate``; greedy decoding gives
the tokens ``generate`` gives (a test holds it to that).

Each step's logits come from one of two backends (the sampling setting
``backend``): the transformers model, or llama.cpp running the same model as a
GGUF file with the adapter as a GGUF LoRA (``llama_cpp_backend``). Everything
else (tokenizing, logits processors, random generators, stop tokens and stop
strings, detokenizing, scoring) is this module's, so it is the same on both.

Everything here runs inside the generation worker process and imports torch.
"""

from __future__ import annotations

import contextlib
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from backend.models.adapter_loading import LoadedModel
from backend.compare.scoring import ResponseScore
from backend.generation.protocol import SamplingSettings
from backend.data.prompt_rendering import prompt_token_ids, response_token_ids, stop_token_ids


class NoAdapterError(RuntimeError):
    """The aligned side was asked for, but only the base model is loaded."""


@dataclass
class Answer:
    """One side's answer to one prompt, as it grows."""

    row: int
    side: str
    prompt_ids: list[int]
    seed: int
    ids: list[int] = field(default_factory=list)  # generated tokens, the stop token included
    text: str = ""
    finish_reason: str = ""  # "" while generating; stop | length | cancelled | error
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0
    stop_string: str = ""  # the stop string that ended the answer, "" for the stop token or none
    backend: str = ""  # transformers | llama.cpp: what computed the answer's tokens
    kept_tokens: int = 0  # with a stop string: the tokens wholly before it

    @property
    def finished(self) -> bool:
        return bool(self.finish_reason)

    @property
    def content_ids(self) -> list[int]:
        if self.stop_string:
            return self.ids[:self.kept_tokens]
        return self.ids[:-1] if self.finish_reason == "stop" else self.ids

    @property
    def n_tokens(self) -> int:
        return len(self.content_ids)


TokenCallback = Callable[[Answer, str], None]  # (answer, new text)


def _log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def find_stop(text: str, stops: list[str]) -> tuple[int, str] | None:
    """(where the earliest stop string starts, which one), or None."""
    hits = [(text.find(s), s) for s in stops if s in text]
    return min(hits) if hits else None


def held_back(text: str, stops: list[str]) -> int:
    """How many characters at the end of ``text`` could be the start of a stop string
    still being written; streaming waits for them, so a stop string never flashes
    up in a pane before it is cut."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest
DoneCallback = Callable[[Answer], None]


class _SideDecoder:
    """Decoding state of one side for a batch of prompts: the prompts left-padded into
    one tensor that grows by a token per step (what the logits processors read), and
    one random generator per row. Subclasses say how a step's logits are computed."""

    backend = ""

    def __init__(self, engine: "GenerationEngine", side: str, answers: list[Answer], device=None):
        import torch

        self.engine, self.side, self.answers = engine, side, answers
        device = engine.device if device is None else device
        width = max(len(a.prompt_ids) for a in answers)
        self.prompt_width = width
        pad = engine.pad_id
        self.input_ids = torch.tensor([[pad] * (width - len(a.prompt_ids)) + a.prompt_ids for a in answers],
                                      dtype=torch.long, device=device)
        self.generators = [torch.Generator(device=device).manual_seed(a.seed) for a in answers]

    @property
    def active(self) -> bool:
        return any(not a.finished for a in self.answers)

    def next_logits(self, rows: list[int]):
        """Float logits of the next token for ``rows`` (indices of unfinished answers), one row each."""
        raise NotImplementedError

    def advance(self, tokens) -> None:
        """Every row's new token (the pad token for finished rows) goes into the next step."""

    def step(self, sampling: SamplingSettings, processors, warpers) -> list[tuple[Answer, int]]:
        """One token for every unfinished row; returns (answer, token) for those rows."""
        import torch

        rows = [i for i, a in enumerate(self.answers) if not a.finished]
        whole = len(rows) == len(self.answers)
        with torch.inference_mode():
            engine = self.engine
            if sampling.min_new_tokens and self.input_ids.shape[1] - self.prompt_width < sampling.min_new_tokens:
                processors = list(processors) + [engine.suppress_stop]
            scores = self.next_logits(rows)
            input_ids = self.input_ids if whole else self.input_ids[rows]
            for processor in processors:
                scores = processor(input_ids, scores)
            if sampling.greedy:
                picked = scores.argmax(dim=-1)
            else:
                scores = warpers(input_ids, scores)
                probs = torch.softmax(scores, dim=-1)
                picked = torch.stack([torch.multinomial(probs[j], 1, generator=self.generators[i])[0]
                                      for j, i in enumerate(rows)])
            picked = picked.to(self.input_ids.device)
            if whole:
                tokens = picked
            else:
                tokens = torch.full((len(self.answers),), engine.pad_id, dtype=torch.long,
                                    device=self.input_ids.device)
                tokens[rows] = picked
            self.input_ids = torch.cat([self.input_ids, tokens[:, None]], dim=-1)
            self.advance(tokens)
            return [(self.answers[i], int(t)) for i, t in zip(rows, picked.tolist())]


class _TransformersDecoder(_SideDecoder):
    """The model's own forward over the whole batch, with a KV cache; finished rows
    are fed the pad token, so the cache keeps the batch's shape."""

    backend = "transformers"

    def __init__(self, engine: "GenerationEngine", side: str, answers: list[Answer]):
        import torch

        super().__init__(engine, side, answers)
        width = self.prompt_width
        self.attention_mask = torch.tensor([[0] * (width - len(a.prompt_ids)) + [1] * len(a.prompt_ids)
                                            for a in answers], dtype=torch.long, device=engine.device)
        self.cache = None
        self.next_input = self.input_ids
        self.position_ids = self.attention_mask.cumsum(-1) - 1
        self.position_ids.masked_fill_(self.attention_mask == 0, 1)

    def next_logits(self, rows: list[int]):
        engine = self.engine
        with engine.adapter_state(self.side):
            out = engine.forward(input_ids=self.next_input, attention_mask=self.attention_mask,
                                 position_ids=self.position_ids, use_cache=True,
                                 **{engine.cache_arg: self.cache})
        self.cache = out[engine.cache_arg]
        logits = out.logits[:, -1, :].float()
        return logits if len(rows) == len(self.answers) else logits[rows]

    def advance(self, tokens) -> None:
        import torch

        ones = self.attention_mask.new_ones((len(self.answers), 1))
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=-1)
        self.position_ids = self.position_ids[:, -1:] + 1
        self.next_input = tokens[:, None]


def _plain_lora_layers(model) -> list | None:
    """The LoRA layers to switch off for the base side, or None where switching them
    is not the whole story (bias terms, modules_to_save, other PEFT methods) and
    PEFT's own disable_adapter() must do it."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for config in getattr(model, "peft_config", {}).values():
        if str(getattr(config, "peft_type", "")).split(".")[-1] != "LORA":
            return None
        if getattr(config, "bias", "none") != "none" or getattr(config, "modules_to_save", None):
            return None
    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    return layers or None


def _cache_argument(model) -> str:
    """transformers 5 names the KV cache ``cache`` (``past_key_values`` is deprecated
    and warns on every token); models written for older versions still take the old name."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        parameters = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in parameters else "past_key_values"


class GenerationEngine:
    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.stop_ids = set(stop_token_ids(self.tokenizer, getattr(loaded.model, "generation_config", None)))
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        self._logits_to_keep = True
        self.cache_arg = _cache_argument(loaded.model)
        self._lora_layers = _plain_lora_layers(loaded.model) if loaded.has_adapter else None
        # Stop strings for requests that leave them unset; the worker sets them from the run's prompt format.
        self.default_stop_strings: list[str] = []
        self._llama = None  # a LlamaCppRuntime once llama.cpp serves this model
        self._llama_refused: dict[bool, str] = {}  # why not, per "convert a folder model" choice
        # Where a backend choice falls back, and why; the worker turns it into a status event.
        self.on_backend_note: Callable[[str], None] = _log_to_stderr
        self.backend_note = ""

    # ------------------------------------------------------------- backends

    def generation_backend(self, choice: str = "auto", cancel: threading.Event | None = None) -> str:
        """The backend that generates for ``choice`` (auto | transformers | llama.cpp), preparing
        llama.cpp the first time it is asked for. Where llama.cpp cannot serve, transformers
        does, and ``backend_note`` says why (also passed to ``on_backend_note``). "auto" takes
        llama.cpp only where it needs no copy of a model folder and the model is not on a GPU
        that this llama.cpp build cannot use."""
        from backend.generation.llama_cpp_backend import (BACKEND_CHOICES, LlamaCppRefused, default_backend,
                                                          prepare_runtime)

        if choice not in BACKEND_CHOICES:
            raise ValueError(f"Generation backend must be one of {', '.join(BACKEND_CHOICES)}; got {choice!r}.")
        if choice == "auto":
            choice = default_backend()  # $ALIGNSTUDIO_GENERATION_BACKEND pins what "auto" means
        if choice == "transformers":
            return "transformers"
        if self._llama is not None:
            return "llama.cpp"
        explicit = choice == "llama.cpp"
        reason = self._llama_refused.get(explicit)
        if reason is None:
            reason = self._llama_cpp_gpu_refusal() if not explicit else ""
            if not reason:
                try:
                    self._llama = prepare_runtime(self.loaded, convert=explicit, log=self.on_backend_note,
                                                  cancel=cancel)
                    self.backend_note = ""
                    return "llama.cpp"
                except LlamaCppRefused as exc:
                    reason = str(exc)
            if cancel is None or not cancel.is_set():
                self._llama_refused[explicit] = reason
            self.backend_note = f"Generating with transformers, not llama.cpp: {reason}."
            self.on_backend_note(self.backend_note)
        return "transformers"

    def _llama_cpp_gpu_refusal(self) -> str:
        if self.device.type == "cpu":
            return ""
        import importlib.util

        # llama.cpp is an optional extra: absent, the caller's own check names that.
        if importlib.util.find_spec("llama_cpp") is None:
            return "llama-cpp-python is not installed"
        import llama_cpp

        if llama_cpp.llama_supports_gpu_offload():
            return ""
        return "the model is on the GPU, and this llama.cpp build runs on the CPU only"

    def close(self) -> None:
        """Free llama.cpp's copy of the model (transformers' goes with the engine)."""
        if self._llama is not None:
            self._llama.close()
            self._llama = None

    def forward(self, logits_to_keep: int = 1, **inputs):
        """The model's forward, computing logits only for the last ``logits_to_keep``
        positions where the model allows it: a prefill over a 262k vocabulary would
        otherwise hold gigabytes of logits nobody reads."""
        if self._logits_to_keep:
            try:
                return self.model(**inputs, logits_to_keep=logits_to_keep)
            except TypeError as exc:
                if "logits_to_keep" not in str(exc):
                    raise
                self._logits_to_keep = False
        return self.model(**inputs)

    def suppress_stop(self, input_ids, scores):
        """What generate()'s min_new_tokens does: no stop token until the minimum length."""
        scores[:, sorted(self.stop_ids)] = float("-inf")
        return scores

    @property
    def model(self):
        return self.loaded.model

    @property
    def has_adapter(self) -> bool:
        return self.loaded.has_adapter

    @property
    def beta(self) -> float:
        return self.loaded.spec.beta

    @property
    def reward_beta(self) -> float | None:
        """β for implicit rewards, None when the loaded adapter's method has none."""
        return self.loaded.spec.beta if self.loaded.spec.implicit_reward else None

    @property
    def device(self):
        return next(self.model.parameters()).device

    def stop_token_texts(self) -> list[str]:
        return [self.tokenizer.convert_ids_to_tokens(i) for i in sorted(self.stop_ids)]

    @contextlib.contextmanager
    def adapter_state(self, side: str):
        """Inference mode, with the adapter off for the base side."""
        import torch

        with torch.inference_mode():
            if side == "base" and self.has_adapter:
                if self._lora_layers is None:
                    with self.model.disable_adapter():
                        yield
                    return
                # What disable_adapter() does for LoRA, minus its scan of every layer's
                # status on entry, which is paid per token here (~3 ms on a 2-layer model).
                for layer in self._lora_layers:
                    layer.enable_adapters(False)
                try:
                    yield
                finally:
                    for layer in self._lora_layers:
                        layer.enable_adapters(True)
            else:
                if side == "aligned" and not self.has_adapter:
                    raise NoAdapterError(
                        "Only the base model is loaded; load a run or an adapter for the aligned side.")
                yield

    def sides(self, side: str) -> list[str]:
        sides = ["base", "aligned"] if side == "both" else [side]
        if "aligned" in sides and not self.has_adapter:
            raise NoAdapterError("Only the base model is loaded; load a run or an adapter for the aligned side.")
        return sides

    # ------------------------------------------------------------ generating

    def _processors(self, sampling: SamplingSettings):
        from transformers import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                                  TopKLogitsWarper, TopPLogitsWarper)

        # The same processors, in the same order, that generate() builds from these settings.
        processors = LogitsProcessorList()
        if sampling.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(penalty=sampling.repetition_penalty))
        warpers = LogitsProcessorList()
        if not sampling.greedy:
            if sampling.temperature != 1.0:
                warpers.append(TemperatureLogitsWarper(sampling.temperature))
            if sampling.top_k:
                warpers.append(TopKLogitsWarper(top_k=sampling.top_k, min_tokens_to_keep=1))
            if sampling.top_p < 1.0:
                warpers.append(TopPLogitsWarper(top_p=sampling.top_p, min_tokens_to_keep=1))
        return processors, warpers

    def generate(self, prompts: list[Any], side: str, sampling: SamplingSettings, cancel: threading.Event,
                 on_token: TokenCallback | None = None, on_done: DoneCallback | None = None,
                 first_row: int = 0, seeds: list[int] | None = None,
                 prompt_ids: list[list[int]] | None = None) -> list[dict[str, Answer]]:
        """Answer every prompt on the requested side(s), in lockstep. Returns one
        {side: Answer} per prompt; ``row`` numbers start at ``first_row``. ``seeds``
        gives each row its own seed (the same prompt repeated then samples different
        answers in one batch); otherwise every row takes the sampling seed.
        ``prompt_ids`` gives the prompts' tokens when the caller has cut them already
        (a trainer's max prompt length); otherwise they are rendered here."""
        sides = self.sides(side)
        seed = sampling.seed if sampling.seed is not None else random.randrange(2**31)
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        if prompt_ids is None:
            prompt_ids = [prompt_token_ids(self.tokenizer, p) for p in prompts]
        elif len(prompt_ids) != len(prompts):
            raise ValueError(f"{len(prompt_ids)} token lists for {len(prompts)} prompts")
        for ids in prompt_ids:
            if not ids:
                raise ValueError("The prompt is empty: type something for the model to continue.")

        def answers(for_side: str) -> list[Answer]:
            return [Answer(row=first_row + i, side=for_side, prompt_ids=ids,
                           seed=seeds[i] if seeds is not None else seed) for i, ids in enumerate(prompt_ids)]

        decoders = None
        if self.generation_backend(sampling.backend, cancel) == "llama.cpp":
            from backend.generation.llama_cpp_backend import LlamaCppRefused

            try:
                decoders = [self._llama.decoder(self, s, answers(s), sampling.max_new_tokens) for s in sides]
            except LlamaCppRefused as exc:  # e.g. more rows than llama.cpp takes sequences in one context
                self.on_backend_note(f"Generating this batch with transformers, not llama.cpp: {exc}.")
        if decoders is None:
            decoders = [_TransformersDecoder(self, s, answers(s)) for s in sides]
        for d in decoders:
            for answer in d.answers:
                answer.backend = d.backend
        processors, warpers = self._processors(sampling)
        stops = self.default_stop_strings if sampling.stop_strings is None else list(sampling.stop_strings)
        emitted: dict[tuple[int, str], str] = {}

        def finish(answer: Answer, reason: str, text: str | None = None) -> None:
            answer.finish_reason = reason
            answer.seconds = time.perf_counter() - answer.started
            answer.text = self._decode(answer.content_ids) if text is None else text
            if on_done:
                on_done(answer)

        while any(d.active for d in decoders):
            for decoder in decoders:
                if not decoder.active:
                    continue
                if cancel.is_set():
                    for answer in decoder.answers:
                        if not answer.finished:
                            finish(answer, "cancelled")
                    continue
                for answer, token in decoder.step(sampling, processors, warpers):
                    answer.ids.append(token)
                    if token in self.stop_ids:
                        finish(answer, "stop")
                        continue
                    text = self._decode(answer.ids) if (on_token is not None or stops) else ""
                    hit = find_stop(text, stops) if stops else None
                    if hit is not None:
                        self._cut_at_stop(answer, text, *hit)
                        finish(answer, "stop", answer.text)
                        continue
                    if on_token is not None:
                        key = (answer.row, answer.side)
                        shown = text[:len(text) - held_back(text, stops)] if stops else text
                        before = emitted.get(key, "")
                        # A trailing U+FFFD is half of a multi-byte character; wait for the rest.
                        if shown.startswith(before) and len(shown) > len(before) and not shown.endswith("\ufffd"):
                            emitted[key] = shown
                            on_token(answer, shown[len(before):])
                    if len(answer.ids) >= sampling.max_new_tokens:
                        finish(answer, "length")
        return [{d.side: d.answers[i] for d in decoders} for i in range(len(prompts))]

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _cut_at_stop(self, answer: Answer, text: str, position: int, stop: str) -> None:
        """End ``answer`` before ``stop``: its text is cut there (with the blank space
        that led up to it) and its scored tokens are those wholly before the cut."""
        answer.stop_string = stop
        answer.text = text[:position].rstrip()
        kept = len(answer.ids) - 1
        while kept > 0 and len(self._decode(answer.ids[:kept])) > len(answer.text):
            kept -= 1
        answer.kept_tokens = kept

    # -------------------------------------------------------------- scoring

    def sequence_logp(self, prompt_ids: list[int], completion_ids: list[int], side: str) -> float:
        """Sum of log-probs of ``completion_ids`` after ``prompt_ids`` on one side.
        Scored one sequence at a time, unpadded, so a score never depends on what
        else was in the batch."""
        import torch

        ids = list(prompt_ids) + list(completion_ids)
        # The first token has nothing before it to be predicted from.
        n = min(len(completion_ids), len(ids) - 1)
        if n <= 0:
            return 0.0
        inputs = torch.tensor([ids], dtype=torch.long, device=self.device)
        with self.adapter_state(side):
            out = self.forward(input_ids=inputs, use_cache=False, logits_to_keep=n + 1)
            logits = out.logits[0, -(n + 1):-1].float()
            targets = inputs[0, -n:]
            logps = torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None]).squeeze(-1)
            return float(logps.sum())

    def score_ids(self, prompt_ids: list[int], completion_ids: list[int], index: int, label: str) -> ResponseScore:
        base = self.sequence_logp(prompt_ids, completion_ids, "base")
        aligned = self.sequence_logp(prompt_ids, completion_ids, "aligned") if self.has_adapter else None
        return ResponseScore.from_sums(index, label, len(completion_ids), base, aligned, self.reward_beta)

    def score_texts(self, prompt: Any, responses: list[Any], labels: list[str] | None = None,
                    add_eos: bool | None = None, cancel: threading.Event | None = None) -> list[ResponseScore]:
        results = []
        for i, response in enumerate(responses):
            if cancel is not None and cancel.is_set():
                break
            prompt_ids, completion_ids = response_token_ids(self.tokenizer, prompt, response, add_eos=add_eos)
            label = labels[i] if labels and i < len(labels) else str(i)
            results.append(self.score_ids(prompt_ids, completion_ids, i, label))
        return results

    def score_answer(self, answer: Answer, index: int) -> ResponseScore:
        """A generated answer scored on its exact tokens (the stop token included),
        so no re-tokenisation of the text can shift the numbers. An answer cut at a
        stop string is scored on the tokens it kept: the stop string is not part of it."""
        ids = answer.content_ids if answer.stop_string else answer.ids
        return self.score_ids(answer.prompt_ids, ids, index, answer.side)
