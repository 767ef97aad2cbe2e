"""Valid JSON in a completion, and JSON against a schema.

With ``jsonschema`` installed the schema is checked by it (every keyword). Without it a
subset is checked here: ``type``, ``properties``, ``required``, ``additionalProperties:
false``, ``items``, ``enum``, ``const``, ``minimum``/``maximum``, ``minLength``/``maxLength``,
``minItems``/``maxItems``. A schema using any other keyword is refused when the grader is
made (``unsupported_keywords``), never silently passed.
"""

from __future__ import annotations

import importlib.util
import json
import re

SUBSET_KEYWORDS = frozenset({
    "type", "properties", "required", "additionalProperties", "items", "enum", "const", "minimum", "maximum",
    "minLength", "maxLength", "minItems", "maxItems", "title", "description", "$schema", "$id", "default",
    "examples",
})

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def has_jsonschema() -> bool:
    return importlib.util.find_spec("jsonschema") is not None


def find_json(text: str, where: str):
    """The JSON value in ``text``: the whole text, the first fenced code block, or the
    first {...}/[...] span. Raises ValueError when there is none."""
    text = text or ""
    if where == "code_block":
        match = re.search(r"```(?:json)?\s*\n?(.*?)```", text, flags=re.DOTALL)
        if not match:
            raise ValueError("no code block")
        text = match.group(1)
    elif where == "first_object":
        starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
        if not starts:
            raise ValueError("no object")
        value, _end = json.JSONDecoder().raw_decode(text[min(starts):])
        return value
    return json.loads(text.strip())


def unsupported_keywords(schema, path: str = "") -> list[str]:
    """Keywords of ``schema`` the built-in subset check does not understand."""
    if not isinstance(schema, dict):
        return []
    found = [f"{path}{k}" for k in schema if k not in SUBSET_KEYWORDS]
    for name, sub in (schema.get("properties") or {}).items():
        found += unsupported_keywords(sub, f"{path}properties.{name}.")
    if isinstance(schema.get("items"), dict):
        found += unsupported_keywords(schema["items"], f"{path}items.")
    if isinstance(schema.get("additionalProperties"), dict):
        found.append(f"{path}additionalProperties (a schema; only false or true is checked without jsonschema)")
    return found


def subset_errors(value, schema) -> list[str]:
    """Why ``value`` does not match ``schema`` (the subset above); empty when it matches."""
    errors: list[str] = []
    if not isinstance(schema, dict):
        return errors
    wanted = schema.get("type")
    if wanted is not None:
        kinds = wanted if isinstance(wanted, list) else [wanted]
        if not any(_is_type(value, k) for k in kinds):
            return [f"expected {wanted}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{value!r} is not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{value!r} is not {schema['const']!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{value} > maximum {schema['maximum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append("string too short")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append("string too long")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append("too few items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append("too many items")
        if isinstance(schema.get("items"), dict):
            for item in value:
                errors += subset_errors(item, schema["items"])
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        errors += [f"missing {k!r}" for k in schema.get("required", []) if k not in value]
        if schema.get("additionalProperties") is False:
            errors += [f"unexpected {k!r}" for k in value if k not in props]
        for name, sub in props.items():
            if name in value:
                errors += subset_errors(value[name], sub)
    return errors


def _is_type(value, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool) or isinstance(value, float) and value.is_integer()
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES.get(kind, object))


def schema_checker(schema):
    """A function value -> bool for ``schema``: jsonschema's validator when installed, else the subset."""
    if has_jsonschema():
        import jsonschema

        validator = jsonschema.validators.validator_for(schema)(schema)
        return lambda value: validator.is_valid(value)
    return lambda value: not subset_errors(value, schema)
