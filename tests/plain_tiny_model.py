"""The tiny model loaded with plain transformers the way the generation worker loads it
(4-bit NF4, fp32 compute), for tests that hold the worker's output to ``generate``'s."""

from __future__ import annotations


def load_plain_4bit(model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, device_map="cpu",
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                               bnb_4bit_use_double_quant=True,
                                               bnb_4bit_compute_dtype=torch.float32))
    return tokenizer, model
