"""An Ollama ``Modelfile`` for a GGUF export, with the chat template in Ollama's own syntax.

Ollama templates are Go templates, not Jinja, so a Jinja template cannot be
translated in general. The templates AlignStudio gives base models are known
here and written out exactly; for any other template the Modelfile leaves
TEMPLATE out and Ollama reads ``tokenizer.chat_template`` from the GGUF file.
"""

from __future__ import annotations

from backend.models.chat_templates import GEMMA_TEMPLATE, PLAIN_TEMPLATE

_GEMMA_GO = (
    "{{- range .Messages }}<start_of_turn>"
    "{{ if eq .Role \"assistant\" }}model{{ else }}user{{ end }}\n"
    "{{ .Content }}<end_of_turn>\n"
    "{{ end }}<start_of_turn>model\n"
)
_PLAIN_GO = (
    "{{- range .Messages }}"
    "{{ if eq .Role \"system\" }}{{ .Content }}\n\n"
    "{{ else if eq .Role \"user\" }}User: {{ .Content }}\n"
    "{{ else }}Assistant: {{ .Content }}\n{{ end }}"
    "{{ end }}Assistant:"
)


def ollama_template(chat_template: str | None) -> tuple[str | None, list[str]]:
    """(Go template or None, stop strings) for a tokenizer's Jinja chat template."""
    if chat_template == GEMMA_TEMPLATE:
        return _GEMMA_GO, ["<end_of_turn>"]
    if chat_template == PLAIN_TEMPLATE:
        return _PLAIN_GO, ["User:"]
    return None, []


def render_modelfile(gguf_name: str, chat_template: str | None, eos_token: str | None = None) -> str:
    template, stops = ollama_template(chat_template)
    lines = [f"# Made by AlignStudio. Create the model with: ollama create <name> -f Modelfile",
             f"FROM ./{gguf_name}"]
    if template is not None:
        lines.append(f'TEMPLATE """{template}"""')
    else:
        lines.append("# TEMPLATE: Ollama takes the chat template stored in the GGUF file (tokenizer.chat_template).")
    for stop in stops + ([eos_token] if eos_token and eos_token not in stops else []):
        lines.append(f'PARAMETER stop "{stop}"')
    return "\n".join(lines) + "\n"
