"""The generation worker process: ``python -m backend.generation.worker [--run-dir DIR | --adapter DIR] [--model M]``.

It keeps one base model (and a LoRA adapter) loaded and serves requests from
``backend.generation.protocol``: one JSON request per line on stdin, one JSON
event per line on stdout. Library chatter goes to the log (stderr): the real
stdout is kept for events only, as in the training worker.

Two threads: a reader takes requests off stdin and answers ``cancel`` and
``shutdown`` at once (a cancel flag is checked before every token); the main
thread runs the other requests one at a time, in order, on the one model.
When stdin closes (the studio closed the session or died) everything is
cancelled and the process exits; if the main thread is stuck in a model load
that cannot be interrupted, the reader ends the process after a short grace.
Starting with ``--run-dir`` (or ``--adapter``/``--model``) queues a load, so
the worker can also be driven by hand from a terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable

from backend.generation.protocol import (
    BatchCompareRequest,
    BatchRowReady,
    BatchSummaryReady,
    BestOfNRequest,
    CancelRequest,
    ChatRequest,
    GenerateRequest,
    GenerationDone,
    GenerationError,
    GenerationEvent,
    LoadRequest,
    ModelReady,
    ProtocolError,
    Request,
    RequestFinished,
    ResponsesScored,
    SamplingSettings,
    ScoreRequest,
    ShutdownRequest,
    TokenStreamed,
    WorkerStatus,
    request_from_json,
)

# After stdin closes, how long a busy main thread gets to notice the cancel flag
# before the process ends anyway (a model load cannot be interrupted).
EXIT_GRACE_SECONDS = 3.0
# Rows generated together in a batch compare; a batch shares one forward per token.
BATCH_SIZE = {"cuda": 8, "cpu": 8}


class EventWriter:
    """Writes events to the client's pipe; safe from any thread."""

    def __init__(self, stream):
        self.stream = stream
        self.lock = threading.Lock()

    def emit(self, event: GenerationEvent) -> None:
        line = event.to_json() + "\n"
        with self.lock:
            if self.stream is None:
                return
            try:
                self.stream.write(line)
                self.stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                self.stream = None  # the client is gone; the reader thread ends the process


class CancelFlags:
    """One flag per request id, created when the request arrives, so a request can
    be cancelled while it still waits in the queue."""

    def __init__(self):
        self.lock = threading.Lock()
        self.flags: dict[str, threading.Event] = {}
        self.all = threading.Event()

    def register(self, request_id: str) -> threading.Event:
        with self.lock:
            flag = self.flags.setdefault(request_id, threading.Event())
            if self.all.is_set():
                flag.set()
            return flag

    def cancel(self, target: str) -> None:
        with self.lock:
            if target in ("", "*"):
                for flag in self.flags.values():
                    flag.set()
            elif target in self.flags:
                self.flags[target].set()
            else:
                # A cancel may overtake its request on a busy pipe; remember it.
                self.flags[target] = threading.Event()
                self.flags[target].set()

    def cancel_everything(self) -> None:
        with self.lock:
            self.all.set()
            for flag in self.flags.values():
                flag.set()

    def release(self, request_id: str) -> None:
        with self.lock:
            self.flags.pop(request_id, None)


class GenerationService:
    """Executes requests on the loaded model. ``emit`` receives every event."""

    def __init__(self, emit: Callable[[GenerationEvent], None], log: Callable[[str], None] | None = None):
        self.emit = emit
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self.loaded = None
        self.engine = None
        self.dtype = ""  # the dtype choice the loaded weights were cast for
        self.request_id = ""  # of the request being served, for the engine's backend notes
        self.backend = ""  # what generates for backend "auto" on the loaded model

    # -- dispatch ------------------------------------------------------------
    def handle(self, request: Request, cancel: threading.Event) -> None:
        started = time.perf_counter()
        ok = True
        self.request_id = request.id
        try:
            handler = {
                LoadRequest: self.load,
                GenerateRequest: self.generate,
                ChatRequest: self.chat,
                ScoreRequest: self.score,
                BatchCompareRequest: self.batch_compare,
                BestOfNRequest: self.best_of_n,
            }[type(request)]
            handler(request, cancel)
        except BaseException as exc:  # noqa: BLE001 - every failure becomes an event, the worker lives on
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            ok = False
            self.emit_failure(exc, request)
        self.emit(RequestFinished(request_id=request.id, op=request.op, ok=ok, cancelled=cancel.is_set(),
                                  seconds=time.perf_counter() - started))

    def emit_failure(self, exc: BaseException, request: Request | None) -> None:
        kind, message, hint = classify_generation_failure(exc)
        # A load that failed before touching the loaded model leaves it serving.
        fatal = isinstance(request, LoadRequest) and self.engine is None
        self.log(traceback.format_exc())
        self.emit(GenerationError(request_id=request.id if request else "", kind=kind, message=message, hint=hint,
                                  traceback=traceback.format_exc(), fatal=fatal))

    def _require_engine(self):
        if self.engine is None:
            raise NoModelLoaded()
        return self.engine

    # -- load ----------------------------------------------------------------
    def load(self, request: LoadRequest, cancel: threading.Event) -> None:
        from backend.models.adapter_loading import resolve_load_spec

        from backend.models.inference_precision import apply_decode_precision, requested_dtype

        spec = resolve_load_spec(run_dir=request.run_dir, adapter_dir=request.adapter_dir, model=request.model,
                                 quantization=request.quantization, beta=request.beta)
        dtype = requested_dtype(request.dtype)  # a bad choice is refused before the loaded model is dropped
        started = time.perf_counter()

        def on_phase(phase: str, message: str) -> None:
            self.emit(WorkerStatus(request_id=request.id, phase=phase, message=message))

        from backend.models.adapter_loading import load_model, swap_adapter

        # Weights cast for another dtype choice are not the ones this request wants.
        reused = (self.loaded is not None and self.loaded.spec.base_key == spec.base_key
                  and self.dtype == dtype)
        if self.engine is not None:
            self.engine.close()  # llama.cpp's copy of the old model goes before anything new loads
        loaded, self.loaded, self.engine = self.loaded, None, None
        if reused:
            # On failure the half-swapped model is dropped with `loaded`; a new load starts clean.
            loaded = swap_adapter(loaded, spec, log=self.log, on_phase=on_phase)
        else:
            # Drop the old model before loading the new one: two would not fit on a small GPU.
            loaded = None
            _free_memory()
            loaded = load_model(spec, log=self.log, on_phase=on_phase)
        # After a swap too: a new adapter arrives in fp32 on weights that may be bf16.
        label = apply_decode_precision(loaded, dtype)
        self.dtype = dtype
        self.log(f"Decoding in {label} (dtype choice {dtype}, quantization {spec.quantization}).")
        from backend.generation.engine import GenerationEngine

        from backend.data.prompt_rendering import default_stop_strings, read_heldout_rows

        engine = GenerationEngine(loaded)
        engine.default_stop_strings = default_stop_strings(read_heldout_rows(spec.run_dir) if spec.run_dir else [])
        engine.on_backend_note = self._backend_note
        self.engine = engine
        self.loaded = loaded
        # Prepared now (a GGUF LoRA conversion takes seconds), so the first answer does not wait for it.
        from backend.generation.llama_cpp_backend import default_backend

        choice = default_backend()
        if choice != "transformers":
            on_phase("preparing_backend", "Preparing llama.cpp for generation")
        self.backend = engine.generation_backend(choice, cancel)
        self.emit(self._ready_event(request.id, time.perf_counter() - started, reused))

    def _backend_note(self, message: str) -> None:
        self.log(message)
        self.emit(WorkerStatus(request_id=self.request_id, phase="backend", message=message))

    def _ready_event(self, request_id: str, seconds: float, reused: bool) -> ModelReady:
        from backend.data.prompt_rendering import prompt_style_of_rows, read_heldout_rows, row_is_pair
        from backend.training.worker import describe_precision

        loaded = self.loaded
        spec = loaded.spec
        rows = read_heldout_rows(spec.run_dir) if spec.run_dir else []
        style = prompt_style_of_rows(rows)
        if style is None:
            # No data to go by: a model with a chat template of its own expects chat.
            style = "raw" if loaded.chat_template_added else "chat"
        return ModelReady(
            request_id=request_id,
            model_label=loaded.model_label,
            model_path=loaded.model_path,
            adapter=spec.adapter_dir,
            run_dir=spec.run_dir,
            method=spec.method,
            beta=spec.beta,
            implicit_reward=spec.implicit_reward,
            quantization=spec.quantization,
            device=describe_precision(loaded.precision),
            prompt_style=style,
            chat_template_added=loaded.chat_template_added,
            stop_tokens=self.engine.stop_token_texts(),
            default_stop_strings=list(self.engine.default_stop_strings),
            heldout_rows=len(rows),
            heldout_pairs=sum(1 for r in rows if row_is_pair(r)),
            load_seconds=seconds,
            reused_base=reused,
            generation_backend=self.backend,
            backend_note=self.engine.backend_note,
        )

    # -- single prompt -------------------------------------------------------
    def generate(self, request: GenerateRequest, cancel: threading.Event) -> None:
        self._answer(request.id, request.prompt, request.side, request.sampling, request.score, request.stream,
                     cancel)

    def chat(self, request: ChatRequest, cancel: threading.Event) -> None:
        from backend.data.prompt_rendering import is_messages

        if not is_messages(request.messages):
            raise ProtocolError("chat needs a non-empty list of {role, content} messages")
        self._answer(request.id, request.messages, request.side, request.sampling, request.score, request.stream,
                     cancel)

    def _answer(self, request_id: str, prompt: Any, side: str, sampling_data: dict, score: bool, stream: bool,
                cancel: threading.Event) -> None:
        engine = self._require_engine()
        sampling = SamplingSettings.from_dict(sampling_data)
        on_token = None
        if stream:
            def on_token(answer, text):
                self.emit(TokenStreamed(request_id=request_id, side=answer.side, text=text,
                                        index=len(answer.ids) - 1, row=answer.row))

        def on_done(answer):
            self.emit(_done_event(request_id, answer))

        answers = engine.generate([prompt], side, sampling, cancel, on_token=on_token, on_done=on_done)[0]
        if score and not cancel.is_set():
            self.emit(WorkerStatus(request_id=request_id, phase="scoring", message="Scoring the answers"))
            results = [engine.score_answer(answers[s], i) for i, s in enumerate(answers)]
            self.emit(ResponsesScored(request_id=request_id, beta=engine.beta, results=results))

    def score(self, request: ScoreRequest, cancel: threading.Event) -> None:
        engine = self._require_engine()
        if not isinstance(request.responses, list) or not request.responses:
            raise ProtocolError("score needs a non-empty list of responses")
        results = engine.score_texts(request.prompt, request.responses, labels=request.labels,
                                     add_eos=request.add_eos, cancel=cancel)
        self.emit(ResponsesScored(request_id=request.id, beta=engine.beta, results=results))

    # -- batch -----------------------------------------------------------------
    def batch_compare(self, request: BatchCompareRequest, cancel: threading.Event) -> None:
        from backend.compare.scoring import CompareRow, summarize
        from backend.data.prompt_rendering import display_text, read_heldout_rows, row_is_pair, row_prompt

        engine = self._require_engine()
        spec = self.loaded.spec
        sampling = SamplingSettings.from_dict(request.sampling)
        if sampling.seed is None:
            import random

            sampling.seed = random.randrange(2**31)  # one seed for the whole table, reported in the summary
        if request.rows is not None:
            rows, source = list(request.rows), "rows"
        elif request.prompts is not None:
            rows, source = [{"prompt": p} for p in request.prompts], "rows"
        else:
            if not spec.run_dir:
                raise ProtocolError("No rows given and no run loaded: pass rows or prompts, or load a run.")
            rows, source = read_heldout_rows(spec.run_dir), "heldout"
            if not rows:
                raise ProtocolError(
                    "This run held out no rows (its held-out fraction was 0). Pass prompts, or train with a "
                    "held-out fraction above 0.")
        items = [(row, row_prompt(row)) for row in rows if isinstance(row, dict)]
        items = [(row, prompt) for row, prompt in items if prompt is not None]
        if request.n and request.n > 0:
            items = items[:request.n]
        if not items:
            raise ProtocolError("None of the rows has a prompt.")
        side = "both" if engine.has_adapter else "base"
        started = time.perf_counter()
        done_rows: list[CompareRow] = []
        chunk = BATCH_SIZE.get(self.loaded.precision.device, 4)
        self.emit(WorkerStatus(request_id=request.id, phase="generating" if request.generate else "scoring",
                               message=f"Comparing {len(items)} prompts"))
        for start in range(0, len(items), chunk):
            if cancel.is_set():
                break
            part = items[start:start + chunk]
            answers = [{} for _ in part]
            if request.generate:
                on_token = None
                if request.stream:
                    def on_token(answer, text):
                        self.emit(TokenStreamed(request_id=request.id, side=answer.side, text=text,
                                                index=len(answer.ids) - 1, row=answer.row))
                answers = engine.generate([p for _, p in part], side, sampling, cancel, on_token=on_token,
                                          first_row=start)
            for offset, ((row, prompt), answer) in enumerate(zip(part, answers)):
                # Rows cut short by a cancel would skew the lengths; the summary covers finished rows only.
                if cancel.is_set():
                    break
                compare_row = CompareRow(index=start + offset, prompt=display_text(prompt), prompt_source=prompt)
                base, aligned = answer.get("base"), answer.get("aligned")
                for name, ans in (("base", base), ("aligned", aligned)):
                    if ans is not None:
                        setattr(compare_row, f"{name}_answer", ans.text)
                        setattr(compare_row, f"{name}_tokens", ans.n_tokens)
                        setattr(compare_row, f"{name}_finish", ans.finish_reason)
                        setattr(compare_row, f"{name}_stop_string", ans.stop_string)
                compare_row.set_answer_scores(
                    engine.score_answer(base, 0) if base is not None else None,
                    engine.score_answer(aligned, 1) if aligned is not None else None,
                )
                if row_is_pair(row):
                    chosen, rejected = engine.score_texts(prompt, [row["chosen"], row["rejected"]],
                                                          labels=["chosen", "rejected"])
                    compare_row.chosen = display_text(row["chosen"])
                    compare_row.rejected = display_text(row["rejected"])
                    compare_row.set_pair_scores(chosen, rejected)
                done_rows.append(compare_row)
                self.emit(BatchRowReady(request_id=request.id, row=compare_row, total=len(items)))
        summary = summarize(
            done_rows, beta=engine.beta, cancelled=cancel.is_set(), seconds=time.perf_counter() - started,
            source=source, sampling=sampling.to_dict(), model_label=self.loaded.model_label,
            adapter=spec.adapter_dir, run_dir=spec.run_dir, method=spec.method,
        )
        self.emit(BatchSummaryReady(request_id=request.id, summary=summary, headline=summary.headline()))

    def best_of_n(self, request: BestOfNRequest, cancel: threading.Event) -> None:
        from backend.generation.best_of_n import serve_request

        serve_request(self, request, cancel)


def _done_event(request_id: str, answer) -> GenerationDone:
    return GenerationDone(request_id=request_id, side=answer.side, text=answer.text, n_tokens=answer.n_tokens,
                          seconds=answer.seconds, finish_reason=answer.finish_reason, seed=answer.seed,
                          prompt_tokens=len(answer.prompt_ids), row=answer.row, stop_string=answer.stop_string,
                          backend=answer.backend)


def _free_memory() -> None:
    import gc

    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class NoModelLoaded(RuntimeError):
    def __init__(self):
        super().__init__("No model is loaded yet.")


def classify_generation_failure(exc: BaseException) -> tuple[str, str, str]:
    """(kind, message, hint) in words a user can act on."""
    from backend.models.adapter_loading import AdapterLoadError
    from backend.training.worker import classify_failure

    name = type(exc).__name__
    text = str(exc) or name
    if isinstance(exc, ProtocolError):
        return "bad_request", text, "This is a bug in the caller; the worker is still usable."
    if name == "BestOfNError":
        return "bad_request", text, "Change the best-of-N settings and try again."
    if isinstance(exc, NoModelLoaded):
        return "no_model", text, "Pick a run or an adapter first; the model loads once and stays loaded."
    if name == "NoAdapterError":
        return "no_adapter", text, "Load a run or an adapter folder to compare with the aligned model."
    if isinstance(exc, AdapterLoadError):
        return "bad_adapter", text, "Pick a finished run, its adapter/ folder or one of its checkpoints."
    if name == "PrecisionChoiceError":
        return "bad_request", text, "Choose auto, fp32 or bf16."
    if isinstance(exc, ValueError) and "prompt" in text:
        return "bad_request", text, "Check the prompt."
    if name == "OutOfMemoryError" or "out of memory" in text.lower() or isinstance(exc, MemoryError):
        return "out_of_memory", f"Out of memory: {text.splitlines()[0][:300]}", (
            "Lower max new tokens, compare fewer prompts at once, or load the model in 4-bit. A training run "
            "on the same GPU also needs the memory; stop it first.")
    kind, message, hint = classify_failure(exc)
    if kind == "crash":
        hint = "This is unexpected. The generation worker's log has the details."
    return kind, message, hint


# ------------------------------------------------------------------ process


def read_requests(requests: "queue.Queue[Request | None]", flags: CancelFlags, writer: EventWriter,
                  stream=None) -> None:
    """Reader thread: queue requests, act on cancel/shutdown at once, end the process
    when the client goes away."""
    stream = stream if stream is not None else sys.stdin
    try:
        for line in stream:
            line = line.strip()
            if not line:
                continue
            try:
                request = request_from_json(line)
            except ProtocolError as exc:
                request_id = ""
                try:
                    request_id = str(json.loads(line).get("id", ""))
                except (ValueError, AttributeError):
                    pass
                writer.emit(GenerationError(request_id=request_id, kind="bad_request", message=str(exc),
                                            hint="This is a bug in the caller; the worker is still usable."))
                if request_id:
                    writer.emit(RequestFinished(request_id=request_id, op="", ok=False))
                continue
            if isinstance(request, CancelRequest):
                flags.cancel(request.target)
                continue
            if isinstance(request, ShutdownRequest):
                break
            flags.register(request.id)
            requests.put(request)
    except (OSError, ValueError):
        pass
    flags.cancel_everything()
    requests.put(None)
    # Give the main thread a moment to finish on its own; it may be inside a model load.
    time.sleep(EXIT_GRACE_SECONDS)
    print("Client went away; exiting.", file=sys.stderr, flush=True)
    os._exit(0)


def serve(requests: "queue.Queue[Request | None]", flags: CancelFlags, service: GenerationService) -> None:
    while True:
        request = requests.get()
        if request is None:
            return
        cancel = flags.register(request.id)
        try:
            service.handle(request, cancel)
        finally:
            flags.release(request.id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend.generation.worker",
                                     description="Serve base/aligned generation over JSON lines on stdin/stdout.")
    parser.add_argument("--run-dir")
    parser.add_argument("--adapter")
    parser.add_argument("--model")
    parser.add_argument("--quantization", choices=("4bit", "8bit", "none"))
    parser.add_argument("--dtype", choices=("auto", "fp32", "bf16"),
                        help="what unquantized weights decode in (default: auto, bf16 on a CPU that has it)")
    args = parser.parse_args(argv)

    from backend.training.worker import take_over_stdout

    writer = EventWriter(take_over_stdout())
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_TQDM", "1")
    flags = CancelFlags()
    requests: queue.Queue = queue.Queue()
    threading.Thread(target=read_requests, args=(requests, flags, writer), name="request-reader",
                     daemon=True).start()

    def on_sigterm(signum, frame):
        if flags.all.is_set():
            os._exit(143)  # a second SIGTERM means now
        flags.cancel_everything()
        requests.put(None)

    signal.signal(signal.SIGTERM, on_sigterm)
    if args.run_dir or args.adapter or args.model:
        load = LoadRequest(id="load-0", run_dir=args.run_dir, adapter_dir=args.adapter, model=args.model,
                           quantization=args.quantization, dtype=args.dtype)
        flags.register(load.id)
        requests.put(load)
    service = GenerationService(writer.emit)
    serve(requests, flags, service)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    # Skip interpreter teardown: it can hang on CUDA/bitsandbytes threads.
    os._exit(code)
