"""What corpus readers yield and read: `Document`, `CorpusFile`, and the limits and names they share."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, NamedTuple

Format = Literal["text", "jsonl", "parquet", "arrow"]
Compression = Literal["gzip", "zstd"] | None

DEFAULT_LANG = "und"  # ISO 639 "undetermined"
# A NUL byte never occurs in UTF-8 text but almost always early in a binary (gzip, parquet, PDF).
BINARY_PROBE_BYTES = 8192
# Longer lines are cut into several documents, so memory stays bounded however long a line is. 8 MiB keeps
# real documents (a long book is a few MB) whole; tokens of a document are at most a few million.
MAX_DOCUMENT_BYTES = 8 << 20
# Languages and sources become file and folder names of the prepared corpus, so they must be one safe path
# component (letters of any script, digits, "_", and inner ".", "+", "-": "en", "zh-Hans", "eng_Latn").
_NAME = re.compile(r"^\w[\w.+-]*$")


def is_valid_name(name: str) -> bool:
    """Whether `name` can be a language or source name (one safe path component)."""
    return bool(_NAME.match(name))


class CorpusFile(NamedTuple):
    """One file (or one part of a large file) to read, and the language its documents get unless a record
    says otherwise.

    `span` selects a part: for an uncompressed line file the byte range [start, end), holding the lines that
    start in it; for a parquet file the row groups [start, end). None is the whole file."""

    path: Path
    lang: str
    format: Format
    compression: Compression = None
    text_field: str = "text"  # jsonl, parquet, arrow
    lang_field: str = "lang"
    span: tuple[int, int] | None = None

    @property
    def first_part(self) -> bool:
        """Whether this is the whole file or its first part: per-file counts and checks are made there."""
        return self.span is None or self.span[0] == 0

    @property
    def name(self) -> str:
        """The file, and its part when split: how notes and removed-document lists name it."""
        if self.span is None:
            return str(self.path)
        unit = "row groups" if self.format == "parquet" else "bytes"
        return f"{self.path} [{unit} {self.span[0]}:{self.span[1]}]"


class Document(NamedTuple):
    """One document: a line of a text file, the text of a JSONL record or of a parquet/Arrow row."""

    lang: str
    text: str
