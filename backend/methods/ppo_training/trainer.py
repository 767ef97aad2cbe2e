"""The training loop: rollouts, rewards, GAE and clipped updates, inside a transformers Trainer.

Subclassing ``transformers.Trainer`` and replacing ``train`` keeps everything the
studio's worker relies on working unchanged: ``state`` and ``control``, the callback
handler (the event callback's logs, stops and checkpoints), the optimizer and the
learning-rate schedule built from the shared settings, trackers, checkpoint rotation
and resume. Each global step is one PPO iteration: sample answers to a batch of
prompts (through the studio's generation engine, which ends a rollout at the next
token when the user presses Stop), score them, then run several epochs of clipped
policy and value updates on that batch in mini-batches (gradient accumulation over
micro-batches). The schedule advances once per iteration.

Checkpoints hold the policy adapter at their root (as every method's do), the value
adapter and head under ``value_model/``, plus the optimizer, schedule, RNG and state.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Trainer, TrainerState
from transformers.trainer_utils import TrainOutput

from backend.methods.ppo_training import losses
from backend.methods.ppo_training.rollout import (POLICY_ADAPTER, VALUE_ADAPTER, AdapterSwitch, Samples,
                                                  policy_engine, sample, score_function, token_logprobs,
                                                  token_values)

VALUE_DIR = "value_model"
VALUE_HEAD_FILE = "value_head.safetensors"


@dataclass
class RolloutSettings:
    """The PPO hyperparameters (names as in TRL's former PPOConfig)."""

    max_completion_length: int = 64
    max_prompt_length: int = 448
    temperature: float = 0.7
    kl_coef: float = 0.05
    kl_estimator: str = "k1"
    num_ppo_epochs: int = 4
    num_mini_batches: int = 1
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    whiten_rewards: bool = False
    missing_eos_penalty: float = 0.0


def attach_value_function(model, lora_config):
    """A policy adapter, a value adapter and a scalar value head on ``model`` (a causal LM,
    quantized or not): returns the PEFT model. The head starts at zero, so the first values
    are 0 and the first advantages are the rewards themselves."""
    from peft import get_peft_model

    peft_model = get_peft_model(model, lora_config, adapter_name=POLICY_ADAPTER)
    peft_model.add_adapter(VALUE_ADAPTER, lora_config)
    config = model.config
    hidden = getattr(config, "hidden_size", None) or config.get_text_config().hidden_size
    head = torch.nn.Linear(hidden, 1, dtype=torch.float32, device=next(model.parameters()).device)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    peft_model.value_head = head
    # Dropout would make the "old" log-probabilities of a rollout differ from the same
    # weights' log-probabilities in the first update: the ratio must start at exactly 1.
    for module in peft_model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return peft_model


class RolloutTrainer(Trainer):
    def __init__(self, model, args, settings: RolloutSettings, scorer, processing_class, train_dataset,
                 eval_dataset=None, callbacks=None):
        self.settings = settings
        self.score = score_function(scorer)
        self.switch = AdapterSwitch(model)
        super().__init__(model=model, args=args, processing_class=processing_class, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, callbacks=callbacks, data_collator=lambda rows: rows)
        if self.args.world_size > 1:
            # The loop steps its own optimizer without the gradient all-reduce a launcher would need.
            raise ValueError("PPO trains in one process: start it without a launch layout (one GPU or the CPU)")
        tokenizer = processing_class
        from backend.data.prompt_rendering import stop_token_ids

        self.stop_ids = stop_token_ids(tokenizer, getattr(model, "generation_config", None))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]
        self.rollout_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * \
            settings.num_mini_batches
        self._generator = torch.Generator().manual_seed(args.seed)
        self._engine = None  # the generation engine over this model, made at the first rollout

    def _stop_flag(self):
        """The worker's Stop (the event callback's flag), so a rollout ends at the next token;
        None where no callback carries one (a trainer built outside the worker)."""
        import threading

        return next((cb.stop_requested for cb in self.callback_handler.callbacks
                     if isinstance(getattr(cb, "stop_requested", None), threading.Event)), None)

    # ------------------------------------------------------------------ schedule
    def batches_per_epoch(self) -> int:
        return max(1, len(self.train_dataset) // self.rollout_batch)

    def total_steps(self) -> int:
        if self.args.max_steps > 0:
            return self.args.max_steps
        return max(1, math.ceil(self.args.num_train_epochs * self.batches_per_epoch()))

    def prompts_for_step(self, step: int) -> list:
        """The prompts of iteration ``step``: each epoch a fresh seeded shuffle, so a resumed
        run sees exactly the prompts the uninterrupted one would have."""
        n = len(self.train_dataset)
        per_epoch = self.batches_per_epoch()
        epoch, index = divmod(step, per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.args.seed + epoch)).tolist()
        chosen = [order[(index * self.rollout_batch + k) % n] for k in range(self.rollout_batch)]
        return [self.train_dataset[i]["prompt"] for i in chosen]

    # ------------------------------------------------------------------ rollout
    @torch.no_grad()
    def rollout(self, prompts: list) -> dict | None:
        """Sample, score and read back log-probs, reference log-probs and values; then the
        per-token rewards and GAE advantages for the update. None when Stop came while sampling."""
        s, model = self.settings, self.model
        model.eval()
        self.switch.use(POLICY_ADAPTER)
        if self._engine is None:
            self._engine = policy_engine(model, self.processing_class)
        samples = sample(self._engine, prompts, max_prompt_tokens=s.max_prompt_length,
                         max_new_tokens=s.max_completion_length, temperature=s.temperature,
                         stop_ids=self.stop_ids, pad_id=self.pad_id, cancel=self._stop_flag())
        if samples is None:
            return None
        micro = self.args.per_device_train_batch_size
        logprobs, ref_logprobs, values = [], [], []
        for rows in _chunks(len(prompts), micro):
            ids, attn = samples.ids[rows], samples.attention_mask[rows]
            self.switch.use(POLICY_ADAPTER)
            logprobs.append(token_logprobs(model, ids, attn, samples.context_length, s.temperature)[0])
            with self.switch.reference():
                ref_logprobs.append(token_logprobs(model, ids, attn, samples.context_length, s.temperature)[0])
            self.switch.use(VALUE_ADAPTER)
            values.append(token_values(model, model.value_head, ids, attn, samples.context_length))
        self.switch.use(POLICY_ADAPTER)
        mask = samples.mask
        logprobs, ref_logprobs, values = torch.cat(logprobs), torch.cat(ref_logprobs), torch.cat(values)
        raw_scores = torch.tensor([float(x) for x in self.score(samples.prompts, samples.completions)],
                                  dtype=torch.float32, device=mask.device)
        if raw_scores.shape[0] != len(prompts) or not torch.isfinite(raw_scores).all():
            raise ValueError(f"the reward gave {raw_scores.tolist()} for {len(prompts)} answers; it must give one "
                             "finite number per answer")
        scores = raw_scores.clone()
        if s.missing_eos_penalty:
            scores[~samples.ended] -= s.missing_eos_penalty
        kl = losses.kl_per_token(logprobs, ref_logprobs, s.kl_estimator) * mask
        rewards = losses.token_rewards(scores, kl, s.kl_coef, mask)
        if s.whiten_rewards:
            rewards = losses.masked_whiten(rewards, mask, shift_mean=False)
        advantages, returns = losses.gae(rewards, values, mask, s.gamma, s.lam)
        advantages = losses.masked_whiten(advantages, mask)
        non_score = (-s.kl_coef * kl).sum(1)
        return dict(samples=samples, logprobs=logprobs, values=values * mask, advantages=advantages,
                    returns=returns, scores=scores, raw_scores=raw_scores, kl=kl, non_score=non_score)

    # ------------------------------------------------------------------ update
    def update(self, batch: dict) -> dict[str, float]:
        """Several epochs of clipped policy and value updates on one rollout batch."""
        s, args, model = self.settings, self.args, self.model
        samples: Samples = batch["samples"]
        model.train()
        n = len(samples.prompts)
        mini = max(1, n // s.num_mini_batches)
        stats: dict[str, list[float]] = {k: [] for k in ("pg_loss", "pg_clip", "approxkl", "vf_loss", "vf_clip",
                                                          "entropy", "ratio", "grad_norm", "loss")}
        for _epoch in range(s.num_ppo_epochs):
            order = torch.randperm(n, generator=self._generator)
            for start in range(0, n, mini):
                minibatch = order[start:start + mini]
                for rows in _chunks(len(minibatch), args.per_device_train_batch_size):
                    idx = minibatch[rows].to(samples.ids.device)
                    weight = len(idx) / len(minibatch)
                    ids, attn, mask = samples.ids[idx], samples.attention_mask[idx], samples.mask[idx]
                    self.switch.use(POLICY_ADAPTER)
                    new_logprobs, entropy = token_logprobs(model, ids, attn, samples.context_length, s.temperature,
                                                           with_entropy=True)
                    pg_loss, pg_clip, approxkl = losses.policy_loss(new_logprobs, batch["logprobs"][idx],
                                                                    batch["advantages"][idx], mask, s.cliprange)
                    (pg_loss * weight).backward()
                    self.switch.use(VALUE_ADAPTER)
                    new_values = token_values(model, model.value_head, ids, attn, samples.context_length)
                    vf_loss, vf_clip = losses.value_loss(new_values, batch["values"][idx], batch["returns"][idx],
                                                         mask, s.cliprange_value)
                    (s.vf_coef * vf_loss * weight).backward()
                    with torch.no_grad():
                        ratio = losses.masked_mean(torch.exp(new_logprobs - batch["logprobs"][idx]), mask)
                        for key, value in (("pg_loss", pg_loss), ("pg_clip", pg_clip), ("approxkl", approxkl),
                                           ("vf_loss", vf_loss), ("vf_clip", vf_clip), ("ratio", ratio),
                                           ("entropy", losses.masked_mean(entropy, mask)),
                                           ("loss", pg_loss + s.vf_coef * vf_loss)):
                            stats[key].append(float(value))
                norm = torch.nn.utils.clip_grad_norm_(self.switch.trainable, args.max_grad_norm)
                stats["grad_norm"].append(float(norm))
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
        self.switch.use(POLICY_ADAPTER)
        return {k: sum(v) / len(v) for k, v in stats.items() if v}

    def step_metrics(self, batch: dict, stats: dict[str, float]) -> dict[str, float]:
        """One iteration's figures under the names PPO users know from TRL."""
        samples: Samples = batch["samples"]
        kl = batch["kl"].sum(1).mean().item()
        scores = batch["raw_scores"].mean().item()
        non_score = batch["non_score"].mean().item()
        logprobs = batch["logprobs"]
        return {
            "loss": stats["loss"],
            "objective/scores": scores,
            "objective/kl": kl,
            "objective/non_score_reward": non_score,
            "objective/rlhf_reward": batch["scores"].mean().item() + non_score,
            "objective/entropy": (-logprobs * samples.mask).sum(1).mean().item(),
            "policy/approxkl_avg": stats["approxkl"],
            "policy/clipfrac_avg": stats["pg_clip"],
            "policy/entropy_avg": stats["entropy"],
            "loss/policy_avg": stats["pg_loss"],
            "loss/value_avg": stats["vf_loss"],
            "val/clipfrac_avg": stats["vf_clip"],
            "val/ratio": stats["ratio"],
            "val/num_eos_tokens": float(samples.ended.sum().item()),
            "completions/mean_length": samples.mask.sum(1).mean().item(),
            "grad_norm": stats["grad_norm"],
        }

    def record_samples(self, batch: dict) -> None:
        """The latest answers where the worker's sample capture reads an RL trainer's last
        generation batch: one answer per prompt, its score and its mean advantage."""
        samples: Samples = batch["samples"]
        self.reward_func_names = ["reward model"]
        self.num_generations = 1
        self._logs = {"prompt": list(samples.prompts), "completion": list(samples.completions),
                      "rewards": {"reward model": batch["raw_scores"].tolist()},
                      "advantages": losses.masked_mean(batch["advantages"], samples.mask, dim=1).tolist()}

    # ------------------------------------------------------------------ loop
    def train(self, resume_from_checkpoint: str | None = None, trial=None, ignore_keys_for_eval=None, **kwargs):
        args = self.args
        max_steps = self.total_steps()
        from transformers.trainer_callback import ExportableState

        self.state = TrainerState(is_local_process_zero=self.is_local_process_zero(),
                                  is_world_process_zero=self.is_world_process_zero(),
                                  stateful_callbacks=[cb for cb in self.callback_handler.callbacks + [self.control]
                                                      if isinstance(cb, ExportableState)])
        self.state.max_steps = max_steps
        self.state.num_train_epochs = math.ceil(max_steps / self.batches_per_epoch())
        self.state.logging_steps, self.state.save_steps = args.logging_steps, args.save_steps
        self.state.eval_steps = args.eval_steps
        self.state.train_batch_size = self.rollout_batch
        self.create_optimizer_and_scheduler(num_training_steps=max_steps)
        if args.gradient_checkpointing:
            base = self.model.get_base_model()
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs)
            base.enable_input_require_grads()
        if resume_from_checkpoint:
            self.load_checkpoint(resume_from_checkpoint)
        self.control = self.callback_handler.on_train_begin(args, self.state, self.control)
        started = time.time()
        pending: dict[str, list[float]] = {}
        losses_seen: list[float] = []
        while self.state.global_step < max_steps:
            self.control = self.callback_handler.on_step_begin(args, self.state, self.control)
            batch = self.rollout(self.prompts_for_step(self.state.global_step))
            if batch is None:  # stopped mid-rollout: the last finished step is what gets saved
                self.control.should_training_stop = True
                break
            self.record_samples(batch)
            stats = self.update(batch)
            metrics = self.step_metrics(batch, stats)
            self.last_batch = batch
            losses_seen.append(metrics["loss"])
            for key, value in metrics.items():
                pending.setdefault(key, []).append(value)
            self.lr_scheduler.step()
            self.state.global_step += 1
            self.state.epoch = self.state.global_step / self.batches_per_epoch()
            self.control = self.callback_handler.on_step_end(args, self.state, self.control)
            if self.control.should_log:
                logs = {k: sum(v) / len(v) for k, v in pending.items()}
                logs["learning_rate"] = self.lr_scheduler.get_last_lr()[0]
                pending = {}
                self.log(logs)
                self.control.should_log = False
            if self.control.should_evaluate:
                self.evaluate()
                self.control.should_evaluate = False
            if self.control.should_save:
                self._save_checkpoint(self.model, trial=None)
                self.control = self.callback_handler.on_save(args, self.state, self.control)
                self.control.should_save = False
            if self.control.should_training_stop:
                break
        runtime = time.time() - started
        self.control = self.callback_handler.on_train_end(args, self.state, self.control)
        train_loss = sum(losses_seen) / len(losses_seen) if losses_seen else 0.0
        self.log({"train_runtime": runtime, "train_loss": train_loss})
        return TrainOutput(self.state.global_step, train_loss, {"train_runtime": runtime})

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Score fresh answers to the held-out prompts: the reward model's score, the KL to
        the reference and the RLHF reward, without training."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None or len(dataset) == 0:
            return {}
        prompts = [row["prompt"] for row in dataset]
        scores, kls, rlhf = [], [], []
        for rows in _chunks(len(prompts), self.args.per_device_eval_batch_size):
            batch = self.rollout(prompts[rows])
            if batch is None:  # Stop while sampling: no figures from half an evaluation
                return {}
            scores += batch["raw_scores"].tolist()
            kls += batch["kl"].sum(1).tolist()
            rlhf += (batch["scores"] + batch["non_score"]).tolist()
            self.control = self.callback_handler.on_prediction_step(self.args, self.state, self.control)
        metrics = {f"{metric_key_prefix}_objective/scores": sum(scores) / len(scores),
                   f"{metric_key_prefix}_objective/kl": sum(kls) / len(kls),
                   f"{metric_key_prefix}_objective/rlhf_reward": sum(rlhf) / len(rlhf)}
        self.log(dict(metrics))
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics=metrics)
        return metrics

    # ------------------------------------------------------------------ saving
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """The policy adapter (and the tokenizer) where every method saves its adapter; a
        checkpoint also keeps the value adapter and head so resume continues both."""
        from safetensors.torch import save_file

        output_dir = output_dir or self.args.output_dir
        if not self.is_world_process_zero():
            return
        os.makedirs(output_dir, exist_ok=True)
        self.model.save_pretrained(output_dir, selected_adapters=[POLICY_ADAPTER])
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        if _internal_call:
            value_dir = Path(output_dir) / VALUE_DIR
            self.model.save_pretrained(str(value_dir), selected_adapters=[VALUE_ADAPTER])
            save_file({k: v.detach().cpu().contiguous() for k, v in self.model.value_head.state_dict().items()},
                      str(value_dir / VALUE_HEAD_FILE))

    def load_checkpoint(self, checkpoint: str) -> None:
        from peft.utils import set_peft_model_state_dict
        from safetensors.torch import load_file

        folder = Path(checkpoint)
        device = self.args.device
        set_peft_model_state_dict(self.model, load_file(str(folder / "adapter_model.safetensors"), device=str(device)),
                                  adapter_name=POLICY_ADAPTER)
        value_dir = folder / VALUE_DIR
        set_peft_model_state_dict(self.model, load_file(str(value_dir / VALUE_ADAPTER / "adapter_model.safetensors"),
                                                        device=str(device)), adapter_name=VALUE_ADAPTER)
        self.model.value_head.load_state_dict(load_file(str(value_dir / VALUE_HEAD_FILE), device=str(device)))
        self.switch = AdapterSwitch(self.model)
        self.state = TrainerState.load_from_json(str(folder / "trainer_state.json"))
        self.state.max_steps = self.total_steps()
        self._load_optimizer_and_scheduler(str(folder))
        self._load_rng_state(str(folder))


def _chunks(n: int, size: int):
    for start in range(0, n, max(1, size)):
        yield slice(start, min(n, start + size))
