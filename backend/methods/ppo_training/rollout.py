"""Sampling answers and reading back what the policy, the reference and the value function
make of them, on one base model that carries a policy adapter and a value adapter.

The policy and the value function are two LoRA adapters on the same (often 4-bit)
base (and a frozen reward adapter when the reward model was trained on that base); the
reference is that base with every adapter off. Switching adapters is
cheap, so one copy of the weights serves all three roles.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from backend.data.prompt_rendering import prompt_token_ids
from backend.methods.ppo_training.shared_reward import REWARD_ADAPTER

POLICY_ADAPTER = "default"  # PEFT saves the adapter named "default" at the folder's root: Compare and export read it
VALUE_ADAPTER = "value"


class AdapterSwitch:
    """Makes one adapter active without PEFT's side effect of freezing the others: both
    adapters and the value head stay trainable, so one optimizer serves them all."""

    def __init__(self, model):
        self.model = model
        # A reward adapter on the same base (shared_reward) stays frozen: it is the judge, not a learner.
        self.trainable = [p for n, p in model.named_parameters()
                          if ("lora_" in n and REWARD_ADAPTER not in n.split(".")) or n.startswith("value_head.")]
        for p in self.trainable:
            p.requires_grad_(True)

    def use(self, name: str) -> None:
        if self.model.active_adapter != name:
            self.model.set_adapter(name)
            for p in self.trainable:
                p.requires_grad_(True)

    @contextmanager
    def reference(self):
        with self.model.disable_adapter():
            yield


def encode_prompts(tokenizer, prompts: Sequence[Any], max_prompt_tokens: int, pad_id: int):
    """Left-padded prompt ids and mask; a prompt longer than ``max_prompt_tokens`` keeps its end."""
    rows = [prompt_token_ids(tokenizer, p)[-max_prompt_tokens:] for p in prompts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids, mask


def response_mask(completion_ids: torch.Tensor, stop_ids: Sequence[int]) -> torch.Tensor:
    """1 on each completion's tokens up to and including its first stop token, 0 after."""
    is_stop = torch.isin(completion_ids, torch.tensor(list(stop_ids), device=completion_ids.device))
    stops_before = torch.cumsum(is_stop.long(), dim=1) - is_stop.long()
    return (stops_before == 0).long()


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    # Left padding: positions count from each row's first real token, as generate() counted them.
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def token_logprobs(model, ids: torch.Tensor, attention_mask: torch.Tensor, context_length: int,
                   temperature: float, with_entropy: bool = False):
    """Log-probabilities of the completion tokens ``ids[:, context_length:]`` under ``model``
    at the sampling temperature (and, optionally, the entropy of each position)."""
    from backend.methods.ppo_training.losses import entropy_from_logits

    completion = ids[:, context_length:]
    out = model(input_ids=ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                use_cache=False, logits_to_keep=completion.shape[1] + 1)
    logits = out.logits[:, :-1].float() / (temperature + 1e-7)
    logp = torch.log_softmax(logits, dim=-1).gather(-1, completion.unsqueeze(-1)).squeeze(-1)
    entropy = entropy_from_logits(logits) if with_entropy else None
    return logp, entropy


def token_values(model, value_head, ids: torch.Tensor, attention_mask: torch.Tensor, context_length: int):
    """The value of the state before each completion token: the head on the last hidden
    state of the position that predicts the token (the value adapter active)."""
    backbone = model.get_base_model().base_model
    hidden = backbone(input_ids=ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                      use_cache=False).last_hidden_state
    hidden = hidden[:, context_length - 1:-1]
    return value_head(hidden.to(value_head.weight.dtype)).squeeze(-1)


@dataclass
class Samples:
    """One batch of prompts with the answers the policy sampled for them."""

    prompts: list
    completions: list[str]
    ids: torch.Tensor  # prompt + completion, prompt left-padded
    attention_mask: torch.Tensor
    context_length: int
    mask: torch.Tensor  # (batch, completion tokens), float
    ended: torch.Tensor  # bool: the answer reached a stop token


def policy_engine(model, tokenizer):
    """The studio's generation engine (the one Compare, Best-of-N and the preference jobs
    use) over the training model: its decoding loop reads the cancel flag before every
    token, so Stop does not wait for a whole rollout. The policy adapter must be the
    active one; the engine samples from whatever adapter is active ("aligned" side)."""
    from backend.generation.engine import GenerationEngine
    from backend.models.adapter_loading import LoadedModel

    return GenerationEngine(LoadedModel(model=model, tokenizer=tokenizer, precision=None, spec=None,
                                        model_path="", model_label="policy", chat_template_added=False,
                                        adapter_name=POLICY_ADAPTER))


def sample(engine, prompts: list, *, max_prompt_tokens: int, max_new_tokens: int, temperature: float,
           stop_ids: Sequence[int], pad_id: int, cancel=None) -> Samples | None:
    """Sample one answer per prompt from the active adapter, the whole batch decoded
    together by ``engine`` (``policy_engine``). Plain ancestral sampling (no top-k/top-p)
    so the answers follow the distribution the policy's log-probabilities describe; each
    row's seed is drawn from torch's generator, which the run's seed sets. Returns None
    when ``cancel`` was set before every answer ended."""
    import threading

    from backend.generation.protocol import SamplingSettings

    tokenizer = engine.tokenizer
    prompt_ids, prompt_mask = encode_prompts(tokenizer, prompts, max_prompt_tokens, pad_id)
    rows = [prompt_ids[i][prompt_mask[i].bool()].tolist() for i in range(len(prompts))]
    seeds = torch.randint(0, 2**31 - 1, (len(prompts),)).tolist()
    settings = SamplingSettings(max_new_tokens=max_new_tokens, temperature=temperature, top_p=1.0, top_k=0,
                                stop_strings=[], backend="transformers")
    cancel = cancel if cancel is not None else threading.Event()
    answers = [a["aligned"] for a in engine.generate(list(prompts), "aligned", settings, cancel, seeds=seeds,
                                                      prompt_ids=rows)]
    if any(a.finish_reason == "cancelled" for a in answers):
        return None
    width = max(1, max(len(a.ids) for a in answers))
    completion = torch.full((len(answers), width), pad_id, dtype=torch.long)
    for i, a in enumerate(answers):
        if a.ids:
            completion[i, :len(a.ids)] = torch.tensor(a.ids, dtype=torch.long)
    mask = response_mask(completion, stop_ids)
    completion = torch.where(mask.bool(), completion, torch.full_like(completion, pad_id))
    ended = torch.tensor([a.finish_reason == "stop" for a in answers])
    device = engine.device
    texts = tokenizer.batch_decode(completion, skip_special_tokens=True)
    return Samples(prompts=list(prompts), completions=texts, ids=torch.cat([prompt_ids, completion], 1).to(device),
                   attention_mask=torch.cat([prompt_mask, mask], 1).to(device), context_length=prompt_ids.shape[1],
                   mask=mask.float().to(device), ended=ended.to(device))


def score_function(scorer) -> Callable[[list, list[str]], list[float]]:
    """A reward model scorer (``.score(prompts, completions)``) or a plain callable taking
    (prompts, completions) and returning one number per answer."""
    if hasattr(scorer, "score"):
        return scorer.score
    if callable(scorer):
        return scorer
    raise TypeError(f"a scorer needs a score(prompts, completions) method or to be callable; got {type(scorer)!r}")

