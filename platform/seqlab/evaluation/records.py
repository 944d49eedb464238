"""An eval task's items from a local JSON-lines or TSV file, with errors that name the file, the line and the field.

JSONL (`.jsonl`, `.json`): one object per line, blank lines skipped. TSV (`.tsv`): tab-separated, the first row
naming the columns, or headerless with the names given (`columns`); fields are strings, quotes are text (PAWS-X
sentences hold unbalanced quotes). Each item comes back with its line number, so a later check (a label
outside the verbalisers, a template field the item lacks) can still point at the line.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from seqlab.errors import DataError

Record = tuple[int, dict[str, Any]]  # (line number, item)
SUFFIXES = (".jsonl", ".json", ".tsv")


def read_records(path: Path, layout: str, columns: Sequence[str] | None = None) -> list[Record]:
    """Every item of `path` (JSONL or TSV) with its 1-based line number; `layout` says what was expected."""
    if not path.is_file():
        raise DataError(f"eval data not found at {path}; expected layout: {layout}")
    if path.suffix not in SUFFIXES:
        raise DataError(f"{path}: not a {' or '.join(SUFFIXES)} file; expected layout: {layout}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err})") from None
    records = _tsv(path, text, columns) if path.suffix == ".tsv" else _jsonl(path, text)
    if not records:
        raise DataError(f"{path}: no items; expected layout: {layout}")
    return records


def _jsonl(path: Path, text: str) -> list[Record]:
    records = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path} line {n}: not JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(item, dict):
            raise DataError(f"{path} line {n}: a JSON {type(item).__name__}, not an object")
        records.append((n, item))
    return records


def _tsv(path: Path, text: str, columns: Sequence[str] | None) -> list[Record]:
    rows = csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = list(columns) if columns else next(rows, None)
    if header is None:
        return []
    records = []
    for n, row in enumerate(rows, start=1 if columns else 2):
        if not row:
            continue
        if len(row) != len(header):
            raise DataError(f"{path} line {n}: {len(row)} tab-separated fields, the header names {len(header)} "
                            f"({', '.join(header)})")
        records.append((n, dict(zip(header, row))))
    return records


def require_fields(path: Path, line: int, item: dict[str, Any], fields: Iterable[str], why: str) -> None:
    """A DataError naming the file, line and first field `item` lacks; `why` says which setting needs it."""
    for name in fields:
        if name not in item:
            raise DataError(f"{path} line {line}: no field {name!r} ({why} uses it); the item has "
                            f"{', '.join(sorted(map(str, item))) or 'no fields'}")


def label_key(value: Any) -> str:
    """A label as a verbaliser key: strings as they are, numbers and booleans as JSON writes them (1, true)."""
    return value if isinstance(value, str) else json.dumps(value)
