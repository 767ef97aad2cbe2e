"""Build tiny random-weight causal LMs on the spot, for tests, benchmarks and smoke checks.

Nothing is downloaded: a byte-level BPE tokenizer is trained on a few sentences
and a 2-layer Llama is initialised from a fixed seed. Such a model trains 30 preference
steps in about a second on a CPU and its metrics still move meaningfully.
"""

from __future__ import annotations

from pathlib import Path

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Please answer politely and helpfully.",
    "User: What is the capital of France? Assistant: The capital of France is Paris.",
    "Thank you for asking! Here is a clear answer.",
    "No. Figure it out yourself. Whatever.",
    "Sure, happy to help with that question.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "0 1 2 3 4 5 6 7 8 9 + - * / = ? ! , . : ; ' \"",
]


def build_tiny_tokenizer(vocab_size: int = 300):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def build_tiny_model(folder: str | Path, hidden_size: int = 64, layers: int = 2, seed: int = 0,
                     tokenizer=None) -> Path:
    """Write a tiny Llama and its tokenizer (by default a byte-level BPE one) to ``folder``
    (safetensors) and return it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from backend.models.chat_templates import ensure_chat_template

    folder = Path(folder)
    tokenizer = tokenizer or build_tiny_tokenizer()
    ensure_chat_template(tokenizer)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
