"""The reward model as a third adapter on the policy's own base, when it was trained on that base.

A reward-model run saves a LoRA adapter and a one-output score head for a base model. When
PPO's policy trains on that same base (same model, same quantization), loading the run as
a separate sequence-classification model would hold a second copy of the base weights for
nothing: the reward adapter goes on the base that already carries the policy and value
adapters, and a score is the head on the last hidden state with that adapter active. Any
other reward model (another base, another quantization, a full classification model)
loads separately, as before. ``placement`` decides from files alone and says why.

The scores equal the separate model's: the same tokens (``RewardScorer``'s encoding and
batching are reused), the same backbone weights and adapter, and the same pooling as
transformers' sequence-classification heads (the rightmost token that is not padding).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

REWARD_ADAPTER = "reward"


@dataclass(frozen=True)
class Placement:
    shared: bool
    reason: str  # one sentence for the worker's log


def _source_key(model: str) -> tuple:
    from backend.models.source import ModelSourceError, resolve_model_source

    try:
        source = resolve_model_source(model)
    except ModelSourceError:
        return ("unresolved", str(model).strip())
    return (source.kind, source.location)


def placement(cfg, location) -> Placement:
    """Whether the reward model at ``location`` (``backend.rewards.scoring.locate_reward_model``)
    can share the base of the policy that ``cfg`` trains. Reads files only."""
    label = location.label
    if not location.adapter_dir:
        return Placement(False, f"Reward model {label}: a full classification model, loaded as a separate model.")
    if not (Path(location.adapter_dir) / "adapter_model.safetensors").is_file():
        return Placement(False, f"Reward model {label}: its adapter is not in safetensors, loaded as a separate "
                                "model.")
    policy_base, reward_base = _source_key(cfg.model), _source_key(location.base_model)
    if policy_base != reward_base:
        return Placement(False, f"Reward model {label}: trained on {location.base_model or 'the embedded model'}, "
                                f"not on the policy's base {cfg.model or 'the embedded model'}; loaded as a "
                                "separate model.")
    if location.quantization != cfg.quantization:
        return Placement(False, f"Reward model {label}: trained on the same base loaded as {location.quantization}, "
                                f"the policy's is {cfg.quantization}; loaded as a separate model so its scores "
                                "stay the ones it was trained to give.")
    return Placement(True, f"Reward model {label}: same base as the policy ({cfg.quantization}), scored as a third "
                           "adapter on the policy's base (no second copy of the base weights).")


def _lora_and_head(adapter_dir: Path):
    """The reward adapter's LoRA tensors and its score head weight, from its safetensors."""
    from safetensors.torch import load_file

    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    head = [k for k in tensors if "lora_" not in k and k.split(".")[-2:] == ["score", "weight"]]
    if len(head) != 1:
        raise ValueError(f"the reward adapter in {adapter_dir} holds no single score head (found {head or 'none'})")
    return {k: v for k, v in tensors.items() if "lora_" in k}, tensors[head[0]]


def attach_reward_adapter(peft_model, adapter_dir: str | Path):
    """Add the reward run's LoRA as adapter ``reward`` (frozen) to ``peft_model`` and return its
    score head (a frozen fp32 linear layer kept outside the model, so neither the optimizer
    nor the saved checkpoints see it)."""
    import torch
    from peft import LoraConfig, set_peft_model_state_dict

    adapter_dir = Path(adapter_dir)
    saved = LoraConfig.from_pretrained(str(adapter_dir))
    # The causal LM has no score module: the head is read from the file, not wrapped by PEFT.
    config = LoraConfig(r=saved.r, lora_alpha=saved.lora_alpha, lora_dropout=0.0,
                        target_modules=saved.target_modules, bias=saved.bias, use_rslora=saved.use_rslora,
                        use_dora=saved.use_dora, rank_pattern=saved.rank_pattern, alpha_pattern=saved.alpha_pattern,
                        task_type="CAUSAL_LM", inference_mode=True)
    active = peft_model.active_adapter
    peft_model.add_adapter(REWARD_ADAPTER, config)
    lora, head_weight = _lora_and_head(adapter_dir)
    result = set_peft_model_state_dict(peft_model, lora, adapter_name=REWARD_ADAPTER)
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    missing = [k for k in getattr(result, "missing_keys", []) if f".{REWARD_ADAPTER}." in k]
    if unexpected or missing:
        raise ValueError(f"the reward adapter in {adapter_dir} does not fit the policy's base "
                         f"({len(unexpected)} unexpected, {len(missing)} missing LoRA tensors)")
    for name, param in peft_model.named_parameters():
        if REWARD_ADAPTER in name.split("."):
            param.requires_grad_(False)
    peft_model.set_adapter(active)
    device = next(peft_model.parameters()).device
    head = torch.nn.Linear(head_weight.shape[1], head_weight.shape[0], bias=False, dtype=torch.float32,
                           device=device)
    with torch.no_grad():
        head.weight.copy_(head_weight.float())
    head.requires_grad_(False)
    return head


class SharedBaseRewardModel:
    """Called as a sequence-classification model is (``input_ids``, ``attention_mask`` ->
    ``.logits`` of shape (batch, 1)), with the reward adapter active for the call only. The
    adapter that was active, the model's train/eval mode and which parameters were
    trainable are all as before afterwards: the PPO loop's adapter switch relies on it."""

    def __init__(self, peft_model, head, pad_token_id: int):
        self.model = peft_model
        self.head = head
        self.pad_token_id = pad_token_id

    def __call__(self, input_ids, attention_mask):
        import torch

        model = self.model
        active, training = model.active_adapter, model.training
        trainable = [p for p in model.parameters() if p.requires_grad]
        model.eval()
        model.set_adapter(REWARD_ADAPTER, inference_mode=True)
        try:
            with torch.no_grad():
                backbone = model.get_base_model().base_model
                hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
                logits = self.head(hidden.to(self.head.weight.dtype))
                # As transformers' sequence-classification heads: the rightmost token that is not padding.
                positions = torch.arange(input_ids.shape[-1], device=input_ids.device, dtype=torch.int32)
                last = (positions * (input_ids != self.pad_token_id).to(torch.int32)).argmax(-1)
                pooled = logits[torch.arange(input_ids.shape[0], device=logits.device), last]
        finally:
            model.set_adapter(active)
            for p in trainable:
                p.requires_grad_(True)
            model.train(training)
        return SimpleNamespace(logits=pooled)


def shared_base_scorer(peft_model, tokenizer, location):
    """A ``RewardScorer`` (same encoding, truncation and batching as a separately loaded one)
    over the reward adapter on ``peft_model``'s base."""
    from backend.rewards.scoring import RewardScorer

    head = attach_reward_adapter(peft_model, location.adapter_dir)
    model = SharedBaseRewardModel(peft_model, head, tokenizer.pad_token_id)
    return RewardScorer(model, tokenizer, location, str(next(peft_model.parameters()).device))


def base_weight_mb(model) -> float:
    """What a second copy of ``model``'s base weights would hold, in MB (adapters and heads left out)."""
    total = 0
    for name, param in model.named_parameters():
        if "lora_" not in name and not name.startswith("value_head."):
            total += param.numel() * param.element_size()
    for buffer in model.buffers():
        total += buffer.numel() * buffer.element_size()
    return total / 2 ** 20
