"""The line protocol between the generation worker and its client.

Requests go in on the worker's stdin, events come out on its stdout, one JSON
object per line each. A request names its operation in ``op`` and carries an
``id`` that every event it causes repeats as ``request_id``, so a window can
route tokens to the right pane and drop events of a request it gave up on.
Every request ends with exactly one ``finished`` event (after its ``error``
event, if it failed), whatever happened: that is the one signal a window needs
to re-enable its buttons.

Events reuse the training protocol's encoding (``backend.core.events.Event``), so
NaN and infinite log-probs travel as strings and come back as floats.
This module imports no torch: the window imports it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from backend.generation.best_of_n import BestOfNReport, BestOfNResult
from backend.compare.scoring import CompareRow, CompareSummary, ResponseScore
from backend.core.events import Event, decode_event
from backend.runs.config import setting

SIDES = ("base", "aligned", "both")
# What computes the tokens (backend.generation.llama_cpp_backend).
GENERATION_BACKENDS = ("auto", "transformers", "llama.cpp")
FINISH_REASONS = ("stop", "length", "cancelled", "error")


# ----------------------------------------------------------------- sampling


@dataclass
class SamplingSettings:
    """How answers are sampled; both sides always use the same settings and seed.

    The field metadata (label, help, range) is the same kind the run settings
    carry, so the window can build this form the same way. ``stop_strings``
    left unset (None) takes the loaded run's default (``ModelReady.default_stop_strings``);
    an empty list means none.
    """

    max_new_tokens: int = setting(128, "Longest answer in tokens.", label="Max new tokens",
                                  minimum=1, maximum=8192, group="Sampling")
    min_new_tokens: int = setting(0, "The answer may not end before this many tokens (the stop tokens are "
                                  "suppressed until then). 0 lets the model stop whenever it likes.",
                                  label="Min new tokens", minimum=0, maximum=8192, group="Sampling", advanced=True)
    greedy: bool = setting(False, "Always take the most likely next token: deterministic, and the clearest "
                           "view of what each model prefers. Temperature, top-p and top-k are then ignored.",
                           label="Greedy", group="Sampling")
    temperature: float = setting(0.7, "Higher is more varied, lower more focused.", label="Temperature",
                                 minimum=0.01, maximum=5.0, group="Sampling")
    top_p: float = setting(0.9, "Sample only from the most likely tokens that together hold this much "
                           "probability. 1 disables it.", label="Top-p", minimum=0.01, maximum=1.0, group="Sampling")
    top_k: int = setting(50, "Sample only from this many most likely tokens. 0 disables it.", label="Top-k",
                         minimum=0, maximum=100000, group="Sampling")
    repetition_penalty: float = setting(1.0, "Above 1 discourages repeating tokens already in the text. "
                                        "1 disables it.", label="Repetition penalty", minimum=0.5, maximum=3.0,
                                        group="Sampling")
    seed: int | None = setting(None, "Random seed; both sides use it, so the adapter is the only difference. "
                               "Empty picks one and reports it.", label="Seed", minimum=0, maximum=2**31 - 1,
                               group="Sampling")
    stop_strings: list[str] | None = setting(
        None, "The answer ends where the model writes one of these (the stop string itself is not kept). "
        "Separate several with commas; write \\n for a line break and \\, for a comma. Empty: only the model's "
        "end-of-text token ends an answer. A plain-text run whose prompts read \"Question: ...\\nAnswer:\" "
        "stops at the next \"Question:\" by default.",
        label="Stop at", group="Sampling")
    backend: str = setting(
        "auto", "What computes the tokens. llama.cpp (an optional install) runs the base model as a GGUF file "
        "with the adapter converted to a GGUF LoRA, several times faster on a CPU; the prompts, sampling "
        "settings and stop strings are the same on both. auto: llama.cpp where it is installed and the model "
        "is a GGUF already (the embedded model, a .gguf file) or was converted before; llama.cpp: also "
        "converts a model folder once; where llama.cpp cannot serve, transformers does and the log says why.",
        label="Backend", choices=GENERATION_BACKENDS, group="Sampling", advanced=True,
        choice_notes={"auto": "fastest available", "transformers": "always", "llama.cpp": "when installed"})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "SamplingSettings":
        data = dict(data or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ProtocolError(f"unknown sampling setting(s): {', '.join(unknown)}")
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in data or data[f.name] is None:
                continue
            if f.name == "stop_strings":
                values[f.name] = _stop_string_list(data[f.name])
                continue
            kind = type(f.default) if f.default is not None else int
            value = data[f.name]
            try:
                values[f.name] = bool(value) if kind is bool else kind(value)
            except (TypeError, ValueError):
                raise ProtocolError(f"sampling setting {f.name} must be a {kind.__name__}, got {value!r}") from None
        settings = cls(**values)
        settings.min_new_tokens = min(settings.min_new_tokens, settings.max_new_tokens)
        problems = settings.problems()
        if problems:
            raise ProtocolError("; ".join(problems))
        return settings

    def problems(self) -> list[str]:
        out = []
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if f.name == "stop_strings":
                out.extend(stop_string_problems(value or []))
                continue
            if meta.get("choices"):
                if value not in meta["choices"]:
                    out.append(f"{meta.get('label') or f.name} must be one of {', '.join(meta['choices'])}; "
                               f"got {value!r}")
                continue
            if value is None or isinstance(value, bool):
                continue
            lo, hi = meta.get("min"), meta.get("max")
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                out.append(f"{meta.get('label') or f.name} must be between {lo:g} and {hi:g}; got {value:g}")
        return out


# Enough for every turn marker a prompt format has; a long list costs a search per token.
MAX_STOP_STRINGS = 8
MAX_STOP_STRING_CHARS = 64
_STOP_ESCAPES = {"n": "\n", "t": "\t", ",": ",", "\\": "\\"}


def _stop_string_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ProtocolError(f"sampling setting stop_strings must be a list of strings, got {value!r}")
    return list(value)


def stop_string_problems(stops: list[str]) -> list[str]:
    out = []
    if len(stops) > MAX_STOP_STRINGS:
        out.append(f"Stop at: at most {MAX_STOP_STRINGS} stop strings; got {len(stops)}")
    for stop in stops:
        if not stop:
            out.append("Stop at: an empty stop string would end every answer at once")
        elif len(stop) > MAX_STOP_STRING_CHARS:
            out.append(f"Stop at: {stop[:20]!r}... is longer than {MAX_STOP_STRING_CHARS} characters")
    return out


def stop_strings_text(stops: list[str] | None) -> str:
    """Stop strings as the form shows them: comma-separated, line breaks as \\n."""
    def escape(stop: str) -> str:
        return stop.replace("\\", "\\\\").replace(",", "\\,").replace("\n", "\\n").replace("\t", "\\t")

    return ", ".join(escape(s) for s in stops or [])


def parse_stop_strings(text: str) -> list[str]:
    """The form's text back into stop strings; spaces around each entry are dropped.
    Raises ValueError naming an unknown escape."""
    stops, current, i = [], [], 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            code = text[i + 1] if i + 1 < len(text) else ""
            if code not in _STOP_ESCAPES:
                raise ValueError(f"'\\{code}' is not an escape this field knows; use \\n, \\t, \\, or \\\\")
            current.append(_STOP_ESCAPES[code])
            i += 2
            continue
        if char == ",":
            stops.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    stops.append("".join(current))
    # A stray comma leaves an empty entry; it means nothing, so it goes.
    return [s for s in (s.strip(" ") for s in stops) if s]


# ----------------------------------------------------------------- requests


class ProtocolError(ValueError):
    """A request the worker cannot act on; the message names the problem."""


@dataclass
class Request:
    op: ClassVar[str] = ""
    id: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = {"op": self.op}
        data.update(dataclasses.asdict(self))
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))


@dataclass
class LoadRequest(Request):
    """Load a base model and (optionally) a LoRA adapter, replacing what is loaded.

    Give ``run_dir`` (a run folder: its config.yaml sets the model, quantization
    and beta, its adapter/ is loaded), or ``adapter_dir`` (any PEFT adapter
    folder; its base model is read from adapter_config.json or from ``model``),
    or only ``model`` for the base model alone (a playground without adapter).
    ``quantization`` (4bit | 8bit | none) and ``beta`` override the run's.
    ``dtype`` (auto | fp32 | bf16) is what unquantized weights decode in
    (``backend.models.inference_precision``); unset takes $ALIGNSTUDIO_GENERATION_DTYPE, else auto.
    Loading a different adapter on the same base model reuses the loaded weights.
    """

    op: ClassVar[str] = "load"
    run_dir: str | None = None
    adapter_dir: str | None = None
    model: str | None = None
    quantization: str | None = None
    beta: float | None = None
    dtype: str | None = None


@dataclass
class GenerateRequest(Request):
    """Answer one prompt. ``prompt`` is a string (used as-is, as TRL used plain-text
    training data) or a message list (rendered with the chat template and a
    generation prompt). ``side`` is base | aligned | both; both sides decode in
    lockstep, so their tokens arrive interleaved. With ``score`` the finished
    answers are scored under both models (a ``scored`` event)."""

    op: ClassVar[str] = "generate"
    prompt: Any = ""
    side: str = "both"
    sampling: dict[str, Any] = field(default_factory=dict)
    score: bool = True
    stream: bool = True


@dataclass
class ChatRequest(Request):
    """One assistant turn of a chat: ``messages`` (role/content dicts, ending with
    the user's turn) go through the chat template. Not scored unless asked."""

    op: ClassVar[str] = "chat"
    messages: list[dict[str, Any]] = field(default_factory=list)
    side: str = "aligned"
    sampling: dict[str, Any] = field(default_factory=dict)
    score: bool = False
    stream: bool = True


@dataclass
class ScoreRequest(Request):
    """Score ``responses`` to ``prompt`` under both models: one ``scored`` event.
    ``labels`` name the responses in the results (default "0", "1", ...).
    ``add_eos`` None follows TRL: an EOS is appended to plain-text responses."""

    op: ClassVar[str] = "score"
    prompt: Any = ""
    responses: list[Any] = field(default_factory=list)
    labels: list[str] | None = None
    add_eos: bool | None = None


@dataclass
class BatchCompareRequest(Request):
    """Compare both models over many prompts.

    ``rows``: dicts with ``prompt`` and optionally ``chosen``/``rejected``
    (TRL's preference columns, strings or message lists); None uses the
    loaded run's held-out split (eval_split.jsonl). ``prompts`` is a shortcut
    for rows with a prompt only. ``n`` caps the number of rows (0: all).
    ``generate`` False skips generation and only scores the pairs (fast
    preference accuracy). One ``batch_row`` event per row as it completes,
    then ``batch_summary``."""

    op: ClassVar[str] = "batch_compare"
    rows: list[dict[str, Any]] | None = None
    prompts: list[Any] | None = None
    n: int = 0
    sampling: dict[str, Any] = field(default_factory=dict)
    generate: bool = True
    stream: bool = False


@dataclass
class BestOfNRequest(Request):
    """Sample ``n`` answers to each prompt from one side (base | aligned) in one batched
    generation, score them with ``reward_model`` (a reward model run or folder) and/or
    ``graders`` (entries as the RL methods' configs hold them; ``reward_file`` and
    ``allow_reward_code`` for a file of reward functions), and rank them. Prompts:
    ``prompt`` (one), ``prompts``, ``rows`` (their other columns reach the graders by
    name), or none for the loaded run's held-out split; ``limit`` caps them (0: all).
    ``baseline`` is the single answer best-of-N is measured against: "first" (sample
    0, free) or "greedy" (one more batched call). One ``best_of_n_row`` per prompt,
    then ``best_of_n_report``."""

    op: ClassVar[str] = "best_of_n"
    prompt: Any = None
    prompts: list[Any] | None = None
    rows: list[dict[str, Any]] | None = None
    limit: int = 0
    n: int = 4
    side: str = "aligned"
    sampling: dict[str, Any] = field(default_factory=dict)
    reward_model: str = ""
    graders: list[dict[str, Any]] = field(default_factory=list)
    reward_file: str = ""
    allow_reward_code: bool = False
    baseline: str = "first"


@dataclass
class CancelRequest(Request):
    """Stop request ``target`` (its id), or every running and queued request when
    ``target`` is "*" or empty. A generation stops within a token; the cancelled
    request still ends with its ``done`` and ``finished`` events."""

    op: ClassVar[str] = "cancel"
    target: str = "*"


@dataclass
class ShutdownRequest(Request):
    """Cancel everything and exit. Closing the worker's stdin does the same."""

    op: ClassVar[str] = "shutdown"


REQUEST_TYPES: dict[str, type[Request]] = {
    cls.op: cls for cls in (LoadRequest, GenerateRequest, ChatRequest, ScoreRequest, BatchCompareRequest,
                            BestOfNRequest, CancelRequest, ShutdownRequest)
}


def request_from_dict(data: dict[str, Any]) -> Request:
    if not isinstance(data, dict):
        raise ProtocolError("a request must be a JSON object")
    op = str(data.get("op", ""))
    cls = REQUEST_TYPES.get(op)
    if cls is None:
        raise ProtocolError(f"unknown op {op!r}; expected one of {', '.join(REQUEST_TYPES)}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names - {"op"})
    if unknown:
        raise ProtocolError(f"{op}: unknown field(s) {', '.join(unknown)}")
    try:
        request = cls(**{k: v for k, v in data.items() if k in names})
    except TypeError as exc:
        raise ProtocolError(f"{op}: {exc}") from None
    request.id = str(request.id or "")
    side = getattr(request, "side", None)
    if side is not None and side not in SIDES:
        raise ProtocolError(f"side must be one of {', '.join(SIDES)}; got {side!r}")
    return request


def request_from_json(line: str) -> Request:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"not valid JSON: {exc}") from None
    return request_from_dict(data)


# ------------------------------------------------------------------- events


@dataclass
class GenerationEvent(Event):
    request_id: str = ""


@dataclass
class ModelReady(GenerationEvent):
    """A load finished: the model (and adapter) serve requests from now on.

    ``prompt_style`` tells the window how to send a typed prompt: "raw" sends
    the text as-is (the run trained on plain-text data, or the model has no
    chat template of its own), "chat" sends [{"role": "user", "content": text}].
    """

    type: ClassVar[str] = "ready"
    model_label: str = ""
    model_path: str = ""
    adapter: str = ""  # adapter folder, "" when only the base model is loaded
    run_dir: str = ""
    method: str = ""
    beta: float = 0.1
    implicit_reward: bool = True  # False: the method has no implicit reward; scores carry none
    quantization: str = ""
    device: dict[str, Any] = field(default_factory=dict)
    prompt_style: str = "raw"  # raw | chat
    chat_template_added: bool = False  # the tokenizer had none; AlignStudio's default template is used
    stop_tokens: list[str] = field(default_factory=list)
    # Used when a request's sampling leaves stop_strings unset; the form starts from it.
    default_stop_strings: list[str] = field(default_factory=list)
    heldout_rows: int = 0
    heldout_pairs: int = 0
    load_seconds: float = 0.0
    reused_base: bool = False  # only the adapter was swapped
    # What generates for a request left at backend "auto", and why not llama.cpp when it is not.
    generation_backend: str = "transformers"
    backend_note: str = ""

    @property
    def has_adapter(self) -> bool:
        return bool(self.adapter)


@dataclass
class WorkerStatus(GenerationEvent):
    """A slow step began: loading_model | loading_adapter | scoring | generating."""

    type: ClassVar[str] = "status"
    phase: str = ""
    message: str = ""


@dataclass
class TokenStreamed(GenerationEvent):
    """New text for one side. ``row`` is the prompt's index in a batch (0 otherwise);
    ``index`` the number of tokens generated on that side so far, minus one."""

    type: ClassVar[str] = "token"
    side: str = ""
    text: str = ""
    index: int = 0
    row: int = 0


@dataclass
class GenerationDone(GenerationEvent):
    """One side finished. ``text`` is authoritative: a window that appended the
    token deltas should replace them with it (detokenisation can revise the
    tail). ``n_tokens`` excludes the stop token. finish_reason: stop (the model
    ended its answer, or wrote ``stop_string``, which is cut from ``text``) |
    length (max_new_tokens) | cancelled | error."""

    type: ClassVar[str] = "done"
    side: str = ""
    text: str = ""
    n_tokens: int = 0
    seconds: float = 0.0
    finish_reason: str = ""
    seed: int = 0
    prompt_tokens: int = 0
    row: int = 0
    stop_string: str = ""
    backend: str = ""  # transformers | llama.cpp

    @property
    def tokens_per_second(self) -> float | None:
        return self.n_tokens / self.seconds if self.seconds > 0 else None


@dataclass
class ResponsesScored(GenerationEvent):
    """Scores for the responses of a score request, or for the answers of a
    generate/chat request (labels "base"/"aligned")."""

    type: ClassVar[str] = "scored"
    beta: float = 0.1
    results: list[ResponseScore] = field(default_factory=list)

    def __post_init__(self):
        self.results = [ResponseScore(**r) if isinstance(r, dict) else r for r in self.results]

    def by_label(self) -> dict[str, ResponseScore]:
        return {r.label: r for r in self.results}


@dataclass
class BatchRowReady(GenerationEvent):
    type: ClassVar[str] = "batch_row"
    row: CompareRow = None  # type: ignore[assignment]
    total: int = 0

    def __post_init__(self):
        if isinstance(self.row, dict):
            self.row = CompareRow.from_dict(self.row)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["row"] = self.row.to_dict() if self.row is not None else None
        return data


@dataclass
class BatchSummaryReady(GenerationEvent):
    type: ClassVar[str] = "batch_summary"
    summary: CompareSummary = None  # type: ignore[assignment]
    headline: str = ""

    def __post_init__(self):
        if isinstance(self.summary, dict):
            self.summary = CompareSummary.from_dict(self.summary)


@dataclass
class BestOfNRowReady(GenerationEvent):
    """One prompt of a best-of-N request: its N answers ranked, best first."""

    type: ClassVar[str] = "best_of_n_row"
    result: BestOfNResult = None  # type: ignore[assignment]
    total: int = 0

    def __post_init__(self):
        if isinstance(self.result, dict):
            self.result = BestOfNResult.from_dict(self.result)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["result"] = self.result.to_dict() if self.result is not None else None
        return data


@dataclass
class BestOfNReportReady(GenerationEvent):
    """A best-of-N request finished (or was stopped): best-of-N against the single answer."""

    type: ClassVar[str] = "best_of_n_report"
    report: BestOfNReport = None  # type: ignore[assignment]
    headline: str = ""

    def __post_init__(self):
        if isinstance(self.report, dict):
            self.report = BestOfNReport.from_dict(self.report)


@dataclass
class GenerationError(GenerationEvent):
    """Something failed. ``request_id`` is empty for a failure outside a request.
    ``fatal`` means nothing is loaded any more: load again (or restart)."""

    type: ClassVar[str] = "error"
    kind: str = ""  # bad_request | no_model | no_adapter | bad_model | bad_adapter | out_of_memory | crash
    message: str = ""
    hint: str = ""
    traceback: str = ""
    fatal: bool = False


@dataclass
class RequestFinished(GenerationEvent):
    """The last event of every request."""

    type: ClassVar[str] = "finished"
    op: str = ""
    ok: bool = True
    cancelled: bool = False
    seconds: float = 0.0


@dataclass
class WorkerExited(GenerationEvent):
    """The worker process is gone; always the client's last event. ``unexpected``
    is False after ``close()`` or a shutdown request."""

    type: ClassVar[str] = "exited"
    exit_code: int | None = None
    unexpected: bool = False
    message: str = ""
    hint: str = ""
    log_tail: str = ""


EVENT_TYPES: dict[str, type[GenerationEvent]] = {
    cls.type: cls for cls in (ModelReady, WorkerStatus, TokenStreamed, GenerationDone, ResponsesScored,
                              BatchRowReady, BatchSummaryReady, BestOfNRowReady, BestOfNReportReady,
                              GenerationError, RequestFinished, WorkerExited)
}


def event_from_dict(data: dict[str, Any]) -> GenerationEvent:
    return decode_event(data, EVENT_TYPES, "generation event type")


def event_from_json(line: str) -> GenerationEvent:
    return event_from_dict(json.loads(line))
