"""A tiny Llama whose tokenizer has Llama's own shape, so every export format can be tested.

``backend.testing.tiny_model`` uses a GPT-2 style byte-level BPE tokenizer. llama.cpp's
converter recognises such tokenizers only by a hash of known models, and a
freshly trained one is unknown to it ("BPE pre-tokenizer was not recognized").
The tokenizer here is SentencePiece-style BPE instead ("▁" for spaces, byte
fallback tokens ``<0x00>``..``<0xFF>``), as Llama 2, Mistral and SmolLM ship it:
the converter writes it as a ``llama`` vocabulary and transformers' GGUF
loader reads that back, so a GGUF export of this model can be checked end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

from backend.testing.tiny_model import _CORPUS

SPECIALS = ["<unk>", "<s>", "</s>"]


def build_llama_style_tokenizer(vocab_size: int = 600):
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    alphabet = sorted(set("".join(_CORPUS).replace(" ", "▁")) | {"▁"})
    # The trainer puts "special" tokens first in the vocabulary, which is where
    # Llama keeps its byte tokens; they are taken off the added-token list below,
    # so decoding with skip_special_tokens keeps the bytes they stand for.
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS + byte_tokens,
                                  initial_alphabet=alphabet)
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    data = json.loads(tok.to_str())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] in SPECIALS]
    tok = Tokenizer.from_str(json.dumps(data))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="</s>")


def build_llama_style_model(folder: str | Path, **kwargs) -> Path:
    """Write a tiny Llama with a Llama-style tokenizer to ``folder`` and return it."""
    from backend.testing.tiny_model import build_tiny_model

    return build_tiny_model(folder, tokenizer=build_llama_style_tokenizer(), **kwargs)
