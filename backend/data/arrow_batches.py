"""Normalised rows to Arrow record batches without importing pandas.

pyarrow's own conversion of Python values (``pa.array``, ``RecordBatch.from_pylist``)
asks on its first call whether the values are pandas objects, and to ask, it imports
pandas: 0.1-0.7 s holding the GIL, once per process, which on the window's first
dataset lands between the window appearing and its data report. The loader's rows
are plain (text, chat messages, labels, numbers), so their buffers are laid out here
directly; a column holding anything else (a null, a nested list, a value of another
type) goes through ``from_pylist`` as before, which also raises the same errors.
"""

from __future__ import annotations

from array import array
from itertools import accumulate
from typing import Any

import pyarrow as pa

_TEXT = pa.string()
_INT32_MAX = 2**31 - 1  # a string column's offsets are int32


class _NotPlain(Exception):
    """A column value this module does not lay out itself."""


def record_batch(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.RecordBatch:
    """``RecordBatch.from_pylist(rows, schema=schema)``, with the same result, without pandas."""
    try:
        columns = [_column([row.get(name) for row in rows], schema.field(name).type) for name in schema.names]
    except _NotPlain:
        return pa.RecordBatch.from_pylist(rows, schema=schema)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _column(values: list, arrow_type: pa.DataType) -> pa.Array:
    if arrow_type == _TEXT:
        return _text(values)
    if pa.types.is_list(arrow_type) and pa.types.is_struct(arrow_type.value_type):
        return _list_of_structs(values, arrow_type)
    if pa.types.is_boolean(arrow_type):
        return _booleans(values)
    if arrow_type == pa.int64():
        return _numbers(values, int, "q", arrow_type)
    if arrow_type == pa.float64():
        return _numbers(values, float, "d", arrow_type)
    raise _NotPlain


def _text(values: list) -> pa.Array:
    try:
        encoded = [value.encode() for value in values]  # None and non-text fail here
    except (AttributeError, UnicodeEncodeError):  # a lone surrogate: from_pylist says so, as before
        raise _NotPlain from None
    offsets = array("i", [0])
    offsets.extend(accumulate(map(len, encoded)))
    if offsets[-1] > _INT32_MAX:
        raise _NotPlain  # from_pylist splits it into chunks
    data = b"".join(encoded)
    return pa.Array.from_buffers(_TEXT, len(values), [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _list_of_structs(values: list, arrow_type: pa.ListType) -> pa.Array:
    """A chat column: each value a list of {"role": ..., "content": ...} dicts, every field text."""
    names = [field.name for field in arrow_type.value_type]
    if any(field.type != _TEXT for field in arrow_type.value_type):
        raise _NotPlain
    fields: list[list] = [[] for _ in names]
    offsets = array("i", [0])
    count = 0
    for value in values:
        if type(value) is not list:
            raise _NotPlain
        for item in value:
            if type(item) is not dict:
                raise _NotPlain
            for name, field in zip(names, fields):
                field.append(item.get(name))
        count += len(value)
        offsets.append(count)
    children = pa.StructArray.from_arrays([_text(field) for field in fields], fields=list(arrow_type.value_type))
    return pa.Array.from_buffers(arrow_type, len(values), [None, pa.py_buffer(offsets)], children=[children])


def _booleans(values: list) -> pa.Array:
    bits = bytearray((len(values) + 7) // 8)
    for i, value in enumerate(values):
        if type(value) is not bool:
            raise _NotPlain
        if value:
            bits[i >> 3] |= 1 << (i & 7)
    return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)])


def _numbers(values: list, kind: type, code: str, arrow_type: pa.DataType) -> pa.Array:
    if any(type(value) is not kind for value in values):  # None, and bool among ints
        raise _NotPlain
    try:
        packed = array(code, values)
    except OverflowError:
        raise _NotPlain from None
    return pa.Array.from_buffers(arrow_type, len(values), [None, pa.py_buffer(packed)])
