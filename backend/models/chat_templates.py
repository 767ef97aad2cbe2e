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
    """Give ``tokenizer`` a default template if it has none. Returns True if one was added.
    A template the model brought is tried once first (see ``check_chat_template``)."""
    if getattr(tokenizer, "chat_template", None):
        check_chat_template(tokenizer)
        return False
    tokenizer.chat_template = default_chat_template(tokenizer.get_vocab())
    return True


# A template shipped in a model's files is code from elsewhere. transformers renders it in
# jinja2's ImmutableSandboxedEnvironment, which refuses attribute tricks such as
# ``''.__class__.__mro__`` with a SecurityError; these turn that refusal into a sentence.
_SAMPLE_CONVERSATION = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi"}]


def template_refusal(exc: BaseException, tokenizer) -> ValueError | None:
    """The clear error for a template the sandbox stopped; None when ``exc`` is something else."""
    from jinja2.exceptions import SecurityError

    from backend.models.source import ModelSourceError

    if not isinstance(exc, SecurityError):
        return None
    where = getattr(tokenizer, "name_or_path", "") or "the model"
    return ModelSourceError(
        f"The chat template of {where} (in its tokenizer_config.json or chat_template.jinja) tried to reach "
        f"outside the template sandbox ({exc}); it was stopped before it could do anything. A chat template "
        "only needs to lay out messages, so this one is broken or hostile: use another model, or replace the "
        "template with one you trust.")


def check_chat_template(tokenizer) -> None:
    """Render the model's own template once on a short conversation; raise the clear error if the
    sandbox stops it. Other template errors are left for the real data to show."""
    try:
        tokenizer.apply_chat_template(_SAMPLE_CONVERSATION, tokenize=False)
    except Exception as exc:  # noqa: BLE001 - only the sandbox's refusal is judged here
        refusal = template_refusal(exc, tokenizer)
        if refusal is not None:
            raise refusal from exc
