"""How a prompt (and a response to it) becomes tokens, the same way TRL made them in training.

The rule, shared by generation and scoring:

- a prompt given as a **string** is tokenised as-is (``tokenizer(text)``), with
  no chat template. TRL does exactly this for "standard" (plain-text) data, and
  the demo data frames its prompts itself ("Question: ...\\nAnswer:"), so
  wrapping it in a template would show the model a context it never saw;
- a prompt given as a **message list** goes through the tokenizer's chat
  template with the generation prompt, as TRL renders conversational data;
- a response is scored as the tokens that follow the prompt in the rendering
  of prompt + response: for plain text ``prompt + response + EOS`` (TRL appends
  the EOS to plain-text responses), for messages the template's rendering of
  the conversation with the assistant turn. Where the tokenisation of the
  prompt alone is not a prefix of the whole, the response starts where the two
  diverge, as in TRL.

So what the Compare tab measures is what TRL's ``logps/chosen`` measured in training.
Nothing here imports torch; the functions take a tokenizer object.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from backend.runs.folder import EVAL_SPLIT_FILE, read_json_objects


def is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "role" in m for m in value) and bool(value)


def display_text(value: Any) -> str:
    """A prompt or response as one string for a table cell or an export."""
    if isinstance(value, list):
        return "\n".join(
            f"{m.get('role', '?')}: {m.get('content', '')}" if isinstance(m, dict) else str(m) for m in value
        )
    return "" if value is None else str(value)


def check_prompt(prompt: Any) -> None:
    if isinstance(prompt, str):
        return
    if not is_messages(prompt):
        raise ValueError("a prompt is a string or a non-empty list of {role, content} messages")
    for m in prompt:
        if not isinstance(m.get("content", ""), str):
            raise ValueError("message content must be text")


def _template_ids(tokenizer, messages: list[dict[str, Any]], add_generation_prompt: bool) -> list[int]:
    from backend.models.chat_templates import template_refusal

    try:
        encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                tokenize=True, return_dict=True)
    except Exception as exc:  # noqa: BLE001 - a sandbox refusal gets its sentence, anything else goes on up
        refusal = template_refusal(exc, tokenizer)
        if refusal is not None:
            raise refusal from exc
        raise
    ids = encoded["input_ids"]
    if ids and isinstance(ids[0], list):  # some tokenizers keep a batch dimension for one conversation
        ids = ids[0]
    return list(ids)


def prompt_token_ids(tokenizer, prompt: Any) -> list[int]:
    """The tokens a model continues from when answering ``prompt``."""
    check_prompt(prompt)
    if isinstance(prompt, str):
        return list(tokenizer(prompt)["input_ids"])
    return _template_ids(tokenizer, prompt, add_generation_prompt=True)


def as_assistant_messages(response: Any) -> list[dict[str, Any]]:
    if is_messages(response):
        return list(response)
    return [{"role": "assistant", "content": display_text(response)}]


def response_token_ids(tokenizer, prompt: Any, response: Any,
                       add_eos: bool | None = None) -> tuple[list[int], list[int]]:
    """(prompt tokens, response tokens) for scoring ``response`` as an answer to ``prompt``."""
    check_prompt(prompt)
    if isinstance(prompt, str):
        text = display_text(response)
        eos = tokenizer.eos_token or ""
        if (add_eos is None or add_eos) and eos and not text.endswith(eos):
            text += eos
        prompt_ids = list(tokenizer(prompt)["input_ids"])
        full_ids = list(tokenizer(prompt + text)["input_ids"])
    else:
        prompt_ids = _template_ids(tokenizer, prompt, add_generation_prompt=True)
        full_ids = _template_ids(tokenizer, list(prompt) + as_assistant_messages(response), add_generation_prompt=False)
    n = common_prefix_length(prompt_ids, full_ids)
    return full_ids[:n], full_ids[n:]


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def stop_token_ids(tokenizer, generation_config=None) -> list[int]:
    """EOS (every id the model's generation config names) and Gemma's
    ``<end_of_turn>`` when the vocabulary has it: a chat answer ends there."""
    ids: list[int] = []

    def add(value):
        if value is None:
            return
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, int) and v >= 0 and v not in ids:
                ids.append(v)

    add(tokenizer.eos_token_id)
    if generation_config is not None:
        add(getattr(generation_config, "eos_token_id", None))
    vocab = tokenizer.get_vocab()
    add(vocab.get("<end_of_turn>"))
    return ids


# ------------------------------------------------------------ held-out rows


def read_heldout_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    """The run's held-out rows (``eval_split.jsonl``) in TRL's columns; [] when the
    run held none out. A damaged line is skipped rather than failing the list."""
    return read_json_objects(Path(run_dir) / EVAL_SPLIT_FILE)


def row_prompt(row: dict[str, Any]) -> Any:
    """The prompt of a held-out or dataset row, whatever TRL format it is in:
    ``prompt`` (preference, prompt/completion), or a ``messages`` conversation
    up to its last assistant turn. None for rows with no prompt (plain text)."""
    if "prompt" in row and row["prompt"] not in (None, "", []):
        return row["prompt"]
    messages = row.get("messages")
    if is_messages(messages):
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        head = messages[:last] if last is not None else messages
        return head or None
    return None


def row_is_pair(row: dict[str, Any]) -> bool:
    return row.get("chosen") not in (None, "", []) and row.get("rejected") not in (None, "", [])


_LABEL_LINE = re.compile(r"^([A-Z][A-Za-z]*(?: [A-Za-z]+){0,2}):", re.MULTILINE)
# Prompts looked at to infer a format; a format is the same on every row.
_FORMAT_SAMPLE = 50


def default_stop_strings(rows: list[dict[str, Any]]) -> list[str]:
    """Where an answer to these rows' prompts should end, beyond the model's EOS.

    Plain-text prompts that frame a turn, "Question: ...\nAnswer:", teach nothing
    about stopping to a base model: it answers, then writes the next
    "Question:" and answers that too. So when every prompt opens with the same
    label and ends with a different one ("Answer:"), the opening label is the
    stop. Message lists need none: the chat template's end-of-turn token ends them.
    """
    opening: set[str] = set()
    seen = 0
    for row in rows[:_FORMAT_SAMPLE]:
        prompt = row_prompt(row)
        if not isinstance(prompt, str):
            return []
        text = prompt.strip()
        first = _LABEL_LINE.match(text)
        labels = _LABEL_LINE.findall(text)
        if first is None or not text.endswith(":") or not labels or f"{labels[-1]}:" != text.splitlines()[-1].strip():
            return []
        if labels[-1] == first.group(1):
            return []
        opening.add(first.group(1))
        seen += 1
    if seen == 0 or len(opening) != 1:
        return []
    return [f"{opening.pop()}:"]


def prompt_style_of_rows(rows: list[dict[str, Any]]) -> str | None:
    """"chat" if the rows' prompts are message lists, "raw" if strings, None if unknown."""
    for row in rows:
        prompt = row_prompt(row)
        if prompt is not None:
            return "chat" if is_messages(prompt) else "raw"
    return None
