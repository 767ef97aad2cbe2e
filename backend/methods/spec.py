"""What the studio knows about one training method, as plain data.

A method module (``backend/methods/<key>.py``) fills one ``MethodSpec``; the
window, the CLI, the data report, the memory estimate, the plots and the Runs
tab read these fields instead of naming methods. Torch-free: the GUI process
imports every spec, and only ``build_args`` / ``build`` reach for TRL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

# The kinds of data a method can be offered, as the dataset detector tells them apart.
DATA_KINDS = ("single", "pairs", "unpaired", "prompts")

# Colours mean the same thing on every plot: chosen green, rejected red, and so on.
ROLE_COLOURS = {
    "train": "#2563eb",
    "chosen": "#16a34a",
    "rejected": "#dc2626",
    "margin": "#7c3aed",
    "accuracy": "#0891b2",
    "neutral": "#475569",
    "nll": "#db2777",
    "odds": "#9333ea",
    "reward": "#ea580c",
    "kl": "#0d9488",
    "length": "#a16207",
}


@dataclass(frozen=True)
class Metric:
    """One logged key and the plot it goes on. Keys sharing ``plot`` share a plot."""

    key: str
    plot: str
    title: str
    label: str
    role: str = "neutral"
    order: int = 100
    line: str = ""  # "" picks dash for the rejected side, solid otherwise

    @property
    def colour(self) -> str:
        return ROLE_COLOURS[self.role]

    @property
    def line_style(self) -> str:
        return self.line or ("dash" if self.role == "rejected" else "solid")


@dataclass(frozen=True)
class DataNeed:
    """Which kinds of data a method trains on, how other kinds become usable, and
    why a kind it refuses cannot be used (``{name}`` and ``{format}`` are filled in)."""

    accepts: frozenset[str]
    convert: dict[str, str] = field(default_factory=dict)  # kind -> conversion name (backend.data.loading)
    refusals: dict[str, str] = field(default_factory=dict)  # kind -> reason text
    needs: str = ""  # one line for `alignstudio methods`: what the data must hold
    # kind -> what its conversion does to the rows (``{name}`` filled in), said in the data report.
    convert_notes: dict[str, str] = field(default_factory=dict)

    def refusal(self, kind: str, name: str, format_label: str) -> str:
        text = self.refusals.get(kind) or "{name} cannot train on this data ({format})."
        return text.format(name=name, format=format_label)


@dataclass(frozen=True)
class MemoryTraits:
    """What the memory estimate needs to know of a method."""

    sequences_per_example: int = 1
    reference_pass: bool = False  # a no-grad forward of the frozen reference each step
    reference_skip_setting: str = ""  # a bool setting that precomputes the reference instead
    full_logits: bool = False  # builds the whole (tokens x vocabulary) logits instead of TRL's tiled head
    adapter_half_when_quantized: bool = False  # TRL casts the adapter of a quantized model to bf16
    # A method that samples while it trains: the settings holding the completions sampled per
    # prompt (the group) and the longest completion; the estimate adds the sampling batch's KV
    # cache and the completions' log-prob pass.
    group_size_setting: str = ""
    generated_tokens_setting: str = ""


@dataclass
class BuildContext:
    """Everything a method's ``build`` needs to make its TRL trainer."""

    cfg: Any
    model: Any
    tokenizer: Any
    args: Any
    train_dataset: Any
    eval_dataset: Any
    callbacks: list
    peft_config: Any

    def trainer_kwargs(self) -> dict[str, Any]:
        """The keyword arguments every TRL trainer takes alike."""
        return dict(model=self.model, args=self.args, train_dataset=self.train_dataset,
                    eval_dataset=self.eval_dataset, processing_class=self.tokenizer,
                    peft_config=self.peft_config, callbacks=self.callbacks)


@dataclass(frozen=True)
class MethodSpec:
    key: str
    label: str  # short name: in menus, the Runs table, messages
    title: str  # the name spelt out
    group: str  # the dropdown section it is listed under
    summary: str  # one line: what it needs and when to use it
    config: type
    data: DataNeed
    build_args: Callable[[Any, dict], Any]  # (cfg, shared TrainingArguments keys) -> TRL config
    build: Callable[[BuildContext], Any]  # -> TRL trainer
    metrics: tuple[Metric, ...] = ()
    expected_keys: tuple[str, ...] = ("loss",)  # what a run logs, for tests and the empty plots text
    headline: tuple[str, ...] = ("loss",)  # the CLI progress line
    summary_metrics: tuple[tuple[str, str], ...] = (("loss", "loss"),)  # (key, label): closing note, Runs columns
    diagnostics: tuple[str, ...] = ()  # codes of the metric rules that apply (backend.runs.diagnostics)
    memory: MemoryTraits = MemoryTraits()
    aliases: tuple[str, ...] = ()  # other names `--method` and config files accept for it
    implicit_reward: bool = False  # Compare can score answers with the policy/reference log-ratio
    model_head: str = "causal_lm"  # "score": a one-output sequence-classification head (a reward model)
    # Config fields naming another model or file the method needs (a reward model run, a
    # reward-functions file); the form, the CLI and the conformance test fill them generically.
    requires: tuple[str, ...] = ()
    validate: Callable[[Any], list[tuple[str, str]]] | None = None  # method-only checks on a config
    # What the user has yet to supply (a reward model, graders), as (setting, message): checked
    # before a launch by the preflight (window and CLI alike), not by ``validate``, because the
    # defaults cannot name the user's reward model and must still validate.
    missing_inputs: Callable[[Any], list[tuple[str, str]]] | None = None
    # (config, or None for the defaults; the data report) -> hints about this data for this method, in
    # words: the data report and the window's "Ready to train" line show them. Never blocks training.
    data_advice: Callable[[Any, Any], list[str]] | None = None
    trl_cli: str = ""  # the `trl <command>` that runs it, when TRL's command line has one
    trl_cli_keys: Callable[[Any], dict] | None = None  # its own keys for that command's config file
    # The trainer samples completions and grades them while it trains: the worker sends the
    # latest ones (SampleBatch events) and the window shows them in a table.
    samples: bool = False
    # The name of a ready demo for the method (resources/demo/demo_<name>.yaml and its data): the
    # window's one-click entry and `alignstudio train --demo <name>` find it here.
    demo: str = ""
