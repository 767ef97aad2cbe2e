"""Builder functions that turn a run config into a tokenizer, a model, LoRA and a TRL trainer.

Plain functions rather than config-aware classes: each takes the config and what
it needs, so the worker, the benchmark and the tests compose them freely.
Everything here imports torch/transformers/trl; the GUI process never imports
this module.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.methods import BuildContext, get_method
from backend.runs.config import BaseRunConfig
from backend.training.tracking import resolved_trackers


@dataclass
class Precision:
    device: str  # "cuda" or "cpu"
    compute_dtype: Any  # torch dtype
    bf16: bool
    fp16: bool

    @property
    def label(self) -> str:
        return {True: "bf16"}.get(self.bf16) or ("fp16" if self.fp16 else "fp32")


def choose_precision() -> Precision:
    """bf16 where the GPU supports it, fp16 on older GPUs, fp32 on the CPU.

    TRL's configs default to bf16=True, which raises on a CPU, so this is always
    set explicitly.
    """
    import torch

    if torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return Precision("cuda", torch.bfloat16, bf16=True, fp16=False)
        return Precision("cuda", torch.float16, bf16=False, fp16=True)
    return Precision("cpu", torch.float32, bf16=False, fp16=False)


def refuse_unsafe_weights_or_code(model_path: str, cfg: BaseRunConfig) -> None:
    """The loaders check the model themselves, so no caller (the worker, the Compare
    tab, a benchmark) reaches ``from_pretrained`` with pickle weights or repository
    code the user did not allow. Raises ModelSourceError; reads files only."""
    from backend.models.source import resolve_checked_model

    resolve_checked_model(model_path, trust_remote_code=cfg.trust_remote_code,
                          allow_pickle_weights=cfg.allow_pickle_weights)


def build_tokenizer(model_path: str, cfg: BaseRunConfig):
    from transformers import AutoTokenizer

    from backend.models.chat_templates import ensure_chat_template

    refuse_unsafe_weights_or_code(model_path, cfg)
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=cfg.trust_remote_code)
    if tokenizer.pad_token is None:
        # Padding positions are masked out, so reusing EOS as padding is safe.
        tokenizer.pad_token = tokenizer.eos_token
    ensure_chat_template(tokenizer)
    return tokenizer


def build_quantization_config(cfg: BaseRunConfig, precision: Precision):
    if cfg.quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    if cfg.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=precision.compute_dtype,
    )


def model_head(cfg: BaseRunConfig) -> str:
    """"score" when the method trains a one-output score head (a reward model), else "causal_lm"."""
    return get_method(cfg.method).model_head


def build_model(model_path: str, cfg: BaseRunConfig, precision: Precision, head: str | None = None):
    """The base model with the head the method trains (``head`` overrides the method's)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    refuse_unsafe_weights_or_code(model_path, cfg)
    quant = build_quantization_config(cfg, precision)
    from backend.core.process_ranks import local_rank

    # Under a launcher each process trains on its own GPU (LOCAL_RANK); alone, on the first.
    device_map = {"": local_rank()} if precision.device == "cuda" else "cpu"
    score = (head or model_head(cfg)) == "score"
    # A score head has one output, the reward; it starts random and is trained with the adapter.
    head_kwargs = {"num_labels": 1} if score else {}
    if score:
        from transformers import set_seed

        set_seed(cfg.seed)  # the head's random start is part of the run: the same seed, the same head
    try:
        model = (AutoModelForSequenceClassification if score else AutoModelForCausalLM).from_pretrained(
            model_path,
            **head_kwargs,
            dtype=precision.compute_dtype,
            quantization_config=quant,
            device_map=device_map,
            trust_remote_code=cfg.trust_remote_code,
            # Without permission only safetensors are read, even for a hub id whose files
            # were not there to check. With it, transformers still prefers safetensors and
            # reads pytorch_model.bin through torch.load(weights_only=True), its default.
            use_safetensors=None if cfg.allow_pickle_weights else True,
        )
    except pickle.UnpicklingError as exc:
        raise pickle_refused(model_path, exc) from exc
    model.config.use_cache = False  # the KV cache only costs memory while training
    if score and model.config.pad_token_id is None:
        # The score is read at the last non-pad token, which needs a pad id; the tokenizer pads with EOS.
        eos = model.config.eos_token_id
        model.config.pad_token_id = eos[0] if isinstance(eos, list) else eos
    return model


def pickle_refused(model_path: str, exc: Exception):
    """torch.load(weights_only=True) met something other than tensors. Its own message
    suggests retrying with weights_only=False, advice a user must not follow here."""
    from backend.models.source import ModelSourceError

    blocked = next((line.strip() for line in str(exc).splitlines() if "GLOBAL" in line or "Unsupported" in line), "")
    detail = f" ({blocked})" if blocked else ""
    return ModelSourceError(
        f"The pickle weights of {model_path} hold more than tensors{detail}, so they were not loaded: "
        "unpickling them could run code on your computer. Get safetensors weights for this model, or convert "
        "these files yourself only if you trust where they come from.",
        setting="allow_pickle_weights",
    )


def build_lora_config(cfg: BaseRunConfig):
    from peft import LoraConfig

    score = model_head(cfg) == "score"

    targets: str | list[str] = cfg.lora_target_modules.strip()
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        bias="none",
        task_type="SEQ_CLS" if score else "CAUSAL_LM",
        # The random score head must learn too; PEFT saves a full copy of it with the adapter.
        modules_to_save=["score"] if score else None,
    )


def eval_batch_size(cfg: BaseRunConfig) -> int:
    """Evaluation keeps no activations for a backward pass: twice the training batch fits unless set."""
    return cfg.eval_batch_size or 2 * cfg.per_device_train_batch_size


def _common_args(cfg: BaseRunConfig, precision: Precision, output_dir: str, has_eval: bool) -> dict[str, Any]:
    evaluate_during = has_eval and cfg.eval_steps > 0
    return dict(
        output_dir=output_dir,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=eval_batch_size(cfg),
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps if cfg.max_steps > 0 else -1,
        warmup_steps=cfg.warmup_ratio,  # a value below 1 is read as a fraction of the steps
        lr_scheduler_type=cfg.lr_scheduler_type,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=precision.bf16,
        fp16=precision.fp16,
        use_cpu=precision.device == "cpu",
        gradient_checkpointing=cfg.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        # The Trainer's default swaps a NaN step loss for the running mean, which
        # hides a diverged run; the studio stops at the first non-finite loss instead.
        logging_nan_inf_filter=False,
        eval_strategy="steps" if evaluate_during else "no",
        eval_steps=cfg.eval_steps if evaluate_during else None,
        save_strategy="steps" if cfg.save_steps > 0 else "no",
        save_steps=cfg.save_steps if cfg.save_steps > 0 else 500,
        save_total_limit=cfg.save_total_limit,
        # metrics.jsonl is always written; trackers get the same keys through TRL's own reporting.
        report_to=resolved_trackers(cfg.report_to),
        run_name=Path(output_dir).parent.name,  # the run folder's name, as trackers list the run
        disable_tqdm=True,
        dataloader_num_workers=0,
        max_length=cfg.max_length,
        # Only when on: some trainers set a sampling strategy of their own by default.
        **speed_args(cfg),
    )


def speed_args(cfg: BaseRunConfig) -> dict[str, Any]:
    """The Trainer arguments of the speed settings, on the methods that carry them
    (``backend.training.speed_options``)."""
    args: dict[str, Any] = {}
    if getattr(cfg, "group_by_length", False):
        args["train_sampling_strategy"] = "group_by_length"
    if getattr(cfg, "use_liger_kernel", False):
        args["use_liger_kernel"] = True
    return args


def build_trl_args(cfg: BaseRunConfig, precision: Precision, output_dir: str, has_eval: bool):
    """The TRL config of ``cfg.method``: the shared keys plus the method's own."""
    return get_method(cfg.method).build_args(cfg, _common_args(cfg, precision, output_dir, has_eval))


def build_trainer(cfg: BaseRunConfig, model, tokenizer, args, train_dataset, eval_dataset, callbacks):
    """The TRL trainer of ``cfg.method``, with LoRA from the shared settings."""
    ctx = BuildContext(cfg=cfg, model=model, tokenizer=tokenizer, args=args, train_dataset=train_dataset,
                       eval_dataset=eval_dataset, callbacks=callbacks, peft_config=build_lora_config(cfg))
    from backend.training import trained_token_scoring

    # Set either way: the choice is process-wide in TRL, and a process may build more than one trainer.
    refused = trained_token_scoring.set_enabled(bool(getattr(cfg, "score_trained_tokens_only", False)))
    if refused:
        print(f"Speed: Score only trained tokens: not applied ({refused}).", flush=True)
    # Before the trainer exists: TRL's precomputed reference runs an eval-mode forward in its __init__.
    from backend.training.cpu_4bit_gradients import keep_4bit_layers_differentiable

    keep_4bit_layers_differentiable(model)
    trainer = get_method(cfg.method).build(ctx)
    if getattr(args, "train_sampling_strategy", "random") == "group_by_length":
        give_lengths_to_sampler(trainer)
    return trainer


def give_lengths_to_sampler(trainer) -> None:
    """transformers' length-grouped sampler (training and evaluation alike) reads ``input_ids``
    or a ``length`` column. Pair trainers tokenize into prompt/chosen/rejected ids, so their rows
    get a ``length`` column, kept through the removal of columns the trainer does not know."""
    trainer.train_dataset, added = with_length_column(trainer.train_dataset)
    evals = trainer.eval_dataset
    if isinstance(evals, dict):
        pairs = {name: with_length_column(data) for name, data in evals.items()}
        trainer.eval_dataset = {name: data for name, (data, _) in pairs.items()}
        added = added or any(a for _, a in pairs.values())
    elif evals is not None:
        trainer.eval_dataset, eval_added = with_length_column(evals)
        added = added or eval_added
    if added:
        trainer._set_signature_columns_if_needed()
        trainer._signature_columns = list(trainer._signature_columns) + ["length"]


def with_length_column(data):
    """``data`` with a ``length`` column (prompt plus longest answer, in tokens) where the sampler
    could not read one, and whether it was added."""
    columns = getattr(data, "column_names", None) or []
    answers = [c for c in ("chosen_ids", "rejected_ids", "completion_ids") if c in columns]
    if "input_ids" in columns or "length" in columns or not answers:
        return data, False
    parts = [c for c in ("prompt_ids",) if c in columns]
    table = {c: data[c] for c in parts + answers}
    lengths = [sum(len(table[c][i]) for c in parts) + max(len(table[c][i]) for c in answers) for i in range(len(data))]
    return data.add_column("length", lengths), True


def plan_speed(cfg: BaseRunConfig, model, tokenizer, train_dataset, answer_tokens: int | None = None):
    """The speed options for this run (``backend.training.speed_options``), measured on the data,
    the loaded model and this machine's device."""
    from backend.core.device_info import describe_device
    from backend.training import speed_options
    from backend.training.memory_estimate import estimate_memory, shape_from_config

    device = describe_device()
    shape = shape_from_config(model.config.to_dict(), getattr(model, "name_or_path", ""))
    lengths, measured_all = speed_options.example_lengths(train_dataset, tokenizer)
    return speed_options.choose(
        cfg, lengths, device, estimate=lambda c: estimate_memory(c, device, shape, answer_tokens=answer_tokens),
        attention=str(getattr(model.config, "_attn_implementation", "") or "eager"),
        liger_installed=speed_options.liger_installed(), rows=len(train_dataset), measured_all=measured_all,
        shape=shape)


def apply_speed_options(cfg: BaseRunConfig, model, tokenizer, train_dataset, run_dir: Path | None = None,
                        answer_tokens: int | None = None):
    """``cfg`` with the speed options chosen for this run; each choice is printed to the worker
    log and, with ``run_dir``, recorded in its ``speed_options.json``. The saved config.yaml
    keeps ``auto``, so a rerun chooses again for its own data and device."""
    try:
        plan = plan_speed(cfg, model, tokenizer, train_dataset, answer_tokens)
    except Exception as exc:  # noqa: BLE001 - the options are advice: the settings as given still train
        print(f"Speed options not chosen ({type(exc).__name__}: {exc}); the settings are used as given.", flush=True)
        return cfg
    if not plan.choices:
        return cfg
    for line in plan.lines():
        print(f"Speed: {line}", flush=True)
    if run_dir is not None:
        from backend.training.speed_options import record

        record(run_dir, plan)
    return plan.cfg
