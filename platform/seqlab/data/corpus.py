r"""Reading raw corpora robustly: text files, JSONL files and folders per language, streamed as documents.

Real corpora are dirty (a stray binary, a truncated download, a Windows editor, a crawler's broken JSON), and
one bad byte must not cost a day's preparation run. So every problem is counted in a `CorpusReport`, the
first few are described, and reading goes on; nothing is dropped without a count. What counts as bad input:

- a file with a NUL byte in its first BINARY_PROBE_BYTES is binary (the rule of git and grep; UTF-16 text
  looks like this too) and is skipped whole; an empty file gives nothing. Both are counted per file.
- past that probe, a line holding a NUL byte (or a JSONL "text" holding "\u0000") is damaged, e.g. by a
  zero-filled block after a crash: that line is skipped and counted in `nul_lines`, the file's other lines
  still arrive.
- a line that is not valid UTF-8, a blank line, a JSONL line that is not an object with a string "text".
- a line longer than `max_document_bytes` is valid text too long to hold whole: a text line is cut into
  several documents of at most that many bytes (after a space where there is one, never inside a UTF-8
  character) and counted in `split_lines`; each piece then counts as a line of its own. A JSONL record
  cannot be cut before it is parsed, so one that long is skipped and counted in `long_records`.
Everything else arrives byte-exact: any script, right-to-left text, combining marks; a "\r\n" line end and a
UTF-8 byte-order mark at the start of a file are removed.
"""
from __future__ import annotations

import codecs
import json
import os
import re
from pathlib import Path
from typing import BinaryIO, Iterator, Literal, NamedTuple

from seqlab.data.report import MAX_NOTES, CorpusReport  # noqa: F401 - MAX_NOTES re-exported with the report
from seqlab.errors import ConfigError, DataError

DEFAULT_LANG = "und"  # ISO 639 "undetermined"
# A NUL byte never occurs in UTF-8 text but almost always early in a binary (gzip, parquet, PDF).
BINARY_PROBE_BYTES = 8192
# Longer lines are cut into several documents, so memory stays bounded however long a line is. 8 MiB keeps
# real documents (a long book is a few MB) whole; tokens of a document are at most a few million.
MAX_DOCUMENT_BYTES = 8 << 20
# Languages and sources become file and folder names of the prepared corpus, so they must be one safe path
# component (letters of any script, digits, "_", and inner ".", "+", "-": "en", "zh-Hans", "eng_Latn").
_NAME = re.compile(r"^\w[\w.+-]*$")

LAYOUT = (
    "Expected one of:\n"
    "  FILE.txt            one document per line (any other extension is read the same way)\n"
    '  FILE.jsonl          one JSON object per line: {"text": "...", "lang": "en"} ("lang" optional)\n'
    "  DIR/<lang>/**/*.txt|*.jsonl   a folder per language; files directly in DIR get the default language"
)

Format = Literal["text", "jsonl"]

def is_valid_name(name: str) -> bool:
    """Whether `name` can be a language or source name (one safe path component)."""
    return bool(_NAME.match(name))


class CorpusFile(NamedTuple):
    """One file to read and the language its documents get unless a JSONL record says otherwise."""

    path: Path
    lang: str
    format: Format


class Document(NamedTuple):
    """One document: a line of a text file or the "text" of a JSONL record."""

    lang: str
    text: str


_FORMATS: dict[str, Format] = {".txt": "text", ".jsonl": "jsonl"}


def find_files(path: str | Path, report: CorpusReport, lang: str | None = None) -> list[CorpusFile]:
    """The corpus files under `path` in sorted path order; unsupported files are counted in `report`."""
    path = Path(path)
    default = lang or DEFAULT_LANG
    if not is_valid_name(default):
        raise ConfigError(f"lang={default!r} is not a language code such as 'en' or 'zh-Hans'")
    if path.is_file():
        # A file named explicitly is read whatever its extension (FLORES ships `eng.dev`); in a folder only
        # known extensions are, so READMEs and licences beside the data are not trained on.
        return [CorpusFile(path, default, "jsonl" if path.suffix.lower() == ".jsonl" else "text")]
    if not path.is_dir():
        raise DataError(f"corpus input {path}: no such file or folder.\n{LAYOUT}")
    found: list[CorpusFile] = []
    visited: set[str] = set()
    # Follow symlinks (a language folder is often a link into shared storage) but never into a cycle.
    for folder, subfolders, names in os.walk(path, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:
            subfolders.clear()
            continue
        visited.add(real)
        for name in names:
            file = Path(folder, name)
            parts = file.relative_to(path).parts
            file_lang = parts[0] if len(parts) > 1 else default
            file_format = _FORMATS.get(file.suffix.lower())
            if file_format is None:
                report.skipped_files += 1
                report.note(f"{file}: unsupported extension {file.suffix or '(none)'!r}, expected .txt or .jsonl")
            elif not is_valid_name(file_lang):
                report.skipped_files += 1
                report.note(f"{file}: folder name {file_lang!r} is not a language code such as 'en'")
            else:
                found.append(CorpusFile(file, file_lang, file_format))
    return sorted(found)


def read_corpus(path: str | Path, report: CorpusReport, lang: str | None = None,
                max_document_bytes: int = MAX_DOCUMENT_BYTES) -> Iterator[Document]:
    """Every document under `path` (see LAYOUT), counting problems in `report`."""
    for file in find_files(path, report, lang):
        yield from read_file(file, report, max_document_bytes)


def read_file(file: CorpusFile, report: CorpusReport,
              max_document_bytes: int = MAX_DOCUMENT_BYTES) -> Iterator[Document]:
    """The documents of one file, a line at a time; no more than `max_document_bytes` of a line is held."""
    if type(max_document_bytes) is not int or max_document_bytes < 4:  # room for any one UTF-8 character
        raise ConfigError(f"max_document_bytes={max_document_bytes!r}: must be an integer >= 4")
    report.files += 1
    try:
        with open(file.path, "rb") as stream:
            head = stream.read(BINARY_PROBE_BYTES)
            if not head.removeprefix(codecs.BOM_UTF8):
                report.empty_files += 1
                report.note(f"{file.path}: empty file")
                return
            if b"\0" in head:
                report.binary_files += 1
                report.note(f"{file.path}: binary file (NUL byte in the first {BINARY_PROBE_BYTES} bytes), skipped")
                return
            # Windows editors start UTF-8 files with a byte-order mark: not part of the first document.
            stream.seek(len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0)
            yield from _documents(stream, file, report, max_document_bytes)
    except OSError as err:
        report.unreadable_files += 1
        report.note(f"{file.path}: cannot read ({err.strerror or err})")


def _documents(stream: BinaryIO, file: CorpusFile, report: CorpusReport, limit: int) -> Iterator[Document]:
    parse = _parse_jsonl if file.format == "jsonl" else _parse_text
    split = 0  # number of the line being cut into pieces, 0 if none
    for lineno, raw, last in _pieces(stream, limit):
        if not last and split != lineno:
            split = lineno
            if file.format == "jsonl":
                report.long_records += 1
                report.note(f"{file.path}:{lineno}: JSONL record longer than max_document_bytes={limit:,}, skipped")
            else:
                report.split_lines += 1
                report.note(f"{file.path}:{lineno}: line longer than max_document_bytes={limit:,}, "
                            "split into several documents")
        if split == lineno and file.format == "jsonl":
            continue
        if b"\0" in raw:
            report.nul_lines += 1
            report.note(f"{file.path}:{lineno}: NUL byte at offset {raw.index(0)}, line skipped")
            continue
        doc = parse(raw, lineno, file, report)
        if doc is None:
            continue
        if not doc.text or doc.text.isspace():
            report.blank_lines += 1
            continue
        report.documents += 1
        report.characters += len(doc.text)
        yield doc


def _pieces(stream: BinaryIO, limit: int) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, bytes without the line end, whether the line ends here) for every line of `stream`, a line
    longer than `limit` bytes coming in several pieces of at most `limit` bytes (see `_cut`)."""
    lineno, carry = 1, b""
    while True:
        raw = carry
        if not raw.endswith(b"\n"):
            # + 2: a line of exactly `limit` bytes still comes whole with its "\r\n".
            raw += stream.readline(limit + 2 - len(raw))
        if not raw:
            return
        ended = raw.endswith(b"\n") or len(raw) < limit + 2  # a newline, or the end of the file
        body = raw
        if raw.endswith(b"\n"):
            body = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
        if ended and len(body) <= limit:
            yield lineno, body, True
            lineno, carry = lineno + 1, b""
        else:
            cut = _cut(body, limit)
            yield lineno, body[:cut], False
            carry = raw[cut:]


def _cut(body: bytes, limit: int) -> int:
    """Where a piece of an over-long line ends: after the last space in the second half of its first `limit`
    bytes (so words stay whole), else before the UTF-8 character that straddles `limit`."""
    space = body.rfind(b" ", limit // 2, limit)
    if space >= 0:
        return space + 1
    for cut in range(limit, limit - 4, -1):
        if body[cut] & 0xC0 != 0x80:  # not a continuation byte: a character starts here
            return cut
    return limit  # not UTF-8 here anyway: the piece is counted as invalid


def _decode(raw: bytes, lineno: int, file: CorpusFile, report: CorpusReport) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        report.invalid_utf8_lines += 1
        report.note(f"{file.path}:{lineno}: invalid UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start}), "
                    "line skipped")
        return None


def _parse_text(raw: bytes, lineno: int, file: CorpusFile, report: CorpusReport) -> Document | None:
    text = _decode(raw, lineno, file, report)
    return None if text is None else Document(file.lang, text)


def _parse_jsonl(raw: bytes, lineno: int, file: CorpusFile, report: CorpusReport) -> Document | None:
    line = _decode(raw, lineno, file, report)
    if line is None:
        return None
    if not line or line.isspace():
        return Document(file.lang, line)  # counted as blank by the caller, like a blank text line
    problem = None
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        record, problem = None, "not valid JSON"
    if problem is None and not isinstance(record, dict):
        problem = f"a JSON {type(record).__name__}, not an object"
    elif problem is None:
        text, lang = record.get("text"), record.get("lang", file.lang)
        if not isinstance(text, str):
            problem = f'"text" is {"missing" if "text" not in record else type(text).__name__}, not a string'
        elif lang is not None and not (isinstance(lang, str) and is_valid_name(lang)):
            problem = f'"lang"={lang!r} is not a language code such as "en"'
        elif not _encodable(text):
            problem = '"text" holds an unpaired surrogate escape (e.g. "\\ud800"), not valid Unicode'
        elif "\0" in text:
            report.nul_lines += 1  # the same rule as a NUL byte in a text line
            report.note(f'{file.path}:{lineno}: "text" holds a NUL character (\\u0000), line skipped')
            return None
        else:
            return Document(lang or file.lang, text)
    report.bad_json_lines += 1
    report.note(f"{file.path}:{lineno}: {problem}, line skipped")
    return None


def _encodable(text: str) -> bool:
    # JSON may escape lone UTF-16 surrogates, which Python accepts but no UTF-8 consumer (SentencePiece) can.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
