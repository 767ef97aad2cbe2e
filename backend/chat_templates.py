"""Chat templates for tokenizers that ship without one.

Base models (the embedded Gemma 3 270M among them) have no chat template, but TRL
renders conversational datasets through ``apply_chat_template``. We give such
tokenizers a template instead of failing: Gemma's own turn format when the
vocabulary has Gemma's turn tokens (so a later instruction-tuned checkpoint sees
familiar markers), otherwise a plain-text "User:/Assistant:" format that any
tokenizer can encode.
"""

from __future__ import annotations

# Gemma's turn markup. `{% generation %}` marks assistant tokens so TRL can
# train on completions only (assistant_only_loss).
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{% if role == 'system' %}{% set role = 'user' %}{% endif %}"
    "<start_of_turn>{{ role }}\n"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] | trim }}<end_of_turn>\n{% endgeneration %}"
    "{% else %}{{ message['content'] | trim }}<end_of_turn>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

PLAIN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] | trim }}\n\n"
    "{% elif message['role'] == 'user' %}User: {{ message['content'] | trim }}\n"
    "{% else %}Assistant: {% generation %}{{ message['content'] | trim }}{{ eos_token }}{% endgeneration %}\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def default_chat_template(vocab: dict[str, int] | None) -> str:
    """Pick a template that the tokenizer's vocabulary can express."""
    if vocab and "<start_of_turn>" in vocab and "<end_of_turn>" in vocab:
        return GEMMA_TEMPLATE
    return PLAIN_TEMPLATE


def ensure_chat_template(tokenizer) -> bool:
    """Give ``tokenizer`` a default template if it has none. Returns True if one was added."""
    if getattr(tokenizer, "chat_template", None):
        return False
    tokenizer.chat_template = default_chat_template(tokenizer.get_vocab())
    return True
