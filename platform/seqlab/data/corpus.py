"""Reading raw corpora robustly: text files, JSONL files and folders per language, streamed as documents.

Real corpora are dirty (a stray binary, a truncated download, a Windows editor, a crawler's broken JSON), and
one bad byte must not cost a day's preparation run. So every problem is counted in a `CorpusReport`, the
first few are described, and reading goes on; nothing is dropped without a count.
"""
from __future__ import annotations

import codecs
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Literal, NamedTuple

from seqlab.errors import ConfigError, DataError

DEFAULT_LANG = "und"  # ISO 639 "undetermined"
MAX_NOTES = 20
# A NUL byte never occurs in UTF-8 text but almost always early in a binary (gzip, parquet, PDF).
BINARY_PROBE_BYTES = 8192
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
# Report fields that count input left out of the corpus, in the order the summary lists them.
_SKIP_COUNTS = ("skipped_files", "empty_files", "binary_files", "unreadable_files", "invalid_utf8_lines",
                "blank_lines", "bad_json_lines", "empty_after_tokenization")


def is_valid_name(name: str) -> bool:
    """Whether `name` can be a language or source name (one safe path component)."""
    return bool(_NAME.match(name))


@dataclass
class CorpusReport:
    """What reading (and then tokenizing) a corpus found. Counts add up across files and parallel workers.

    `files` counts files that were opened as corpus files; `empty_files`, `binary_files` and
    `unreadable_files` are those of them that gave nothing. `skipped_files` are files in a folder with an
    unsupported extension or an invalid language folder name; they are not opened. Line counts are of skipped
    lines: `blank_lines` includes JSONL records whose text is blank. `documents` and `characters` are what was
    yielded; `empty_after_tokenization` of those documents encoded to no token and were not stored.
    """

    files: int = 0
    skipped_files: int = 0
    empty_files: int = 0
    binary_files: int = 0
    unreadable_files: int = 0
    invalid_utf8_lines: int = 0
    blank_lines: int = 0
    bad_json_lines: int = 0
    documents: int = 0
    characters: int = 0
    empty_after_tokenization: int = 0
    notes: list[str] = field(default_factory=list)
    notes_omitted: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "notes" and (type(value) is not int or value < 0):
                raise DataError(f"CorpusReport.{f.name}={value!r} must be a non-negative integer")

    def note(self, message: str) -> None:
        """Describe one problem; past MAX_NOTES only count it, so a corpus of broken lines stays readable."""
        if len(self.notes) < MAX_NOTES:
            self.notes.append(message)
        else:
            self.notes_omitted += 1

    def merge(self, other: CorpusReport) -> None:
        """Add `other`'s counts and notes to this report (merge in file order for a deterministic result)."""
        for f in fields(self):
            if f.name != "notes":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        room = MAX_NOTES - len(self.notes)
        self.notes.extend(other.notes[:room])
        self.notes_omitted += max(0, len(other.notes) - room)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CorpusReport:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DataError(f"corpus report has unknown fields {unknown}; known: {sorted(known)}")
        return cls(**{**data, "notes": list(data.get("notes", []))})

    def summary(self) -> str:
        """A few lines for the terminal: what was read, what was skipped and why, the first problems."""
        lines = [f"read {self.documents:,} documents ({self.characters:,} characters) from {self.files:,} files"]
        skipped = [f"{name}={getattr(self, name):,}" for name in _SKIP_COUNTS if getattr(self, name)]
        if skipped:
            lines.append("skipped: " + ", ".join(skipped))
        if self.notes:
            lines.append("problems:")
            lines += [f"  {note}" for note in self.notes]
            if self.notes_omitted:
                lines.append(f"  ... and {self.notes_omitted:,} more")
        return "\n".join(lines)


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


def read_corpus(path: str | Path, report: CorpusReport, lang: str | None = None) -> Iterator[Document]:
    """Every document under `path` (see LAYOUT), counting problems in `report`."""
    for file in find_files(path, report, lang):
        yield from read_file(file, report)


def read_file(file: CorpusFile, report: CorpusReport) -> Iterator[Document]:
    """The documents of one file, one line at a time, so memory is bounded by the longest line."""
    report.files += 1
    try:
        with open(file.path, "rb") as stream:
            head = stream.read(BINARY_PROBE_BYTES)
            if not head:
                report.empty_files += 1
                report.note(f"{file.path}: empty file")
                return
            if b"\0" in head:
                report.binary_files += 1
                report.note(f"{file.path}: binary file (NUL byte in the first {BINARY_PROBE_BYTES} bytes), skipped")
                return
            stream.seek(0)
            parse = _parse_jsonl if file.format == "jsonl" else _parse_text
            for lineno, raw in enumerate(stream, start=1):
                doc = parse(raw, lineno, file, report)
                if doc is None:
                    continue
                if not doc.text or doc.text.isspace():
                    report.blank_lines += 1
                    continue
                report.documents += 1
                report.characters += len(doc.text)
                yield doc
    except OSError as err:
        report.unreadable_files += 1
        report.note(f"{file.path}: cannot read ({err.strerror or err})")


def _decode_line(raw: bytes, lineno: int, file: CorpusFile, report: CorpusReport) -> str | None:
    if raw.endswith(b"\n"):
        raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
    if lineno == 1:
        raw = raw.removeprefix(codecs.BOM_UTF8)  # Windows editors start UTF-8 files with a byte-order mark
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        report.invalid_utf8_lines += 1
        report.note(f"{file.path}:{lineno}: invalid UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start}), "
                    "line skipped")
        return None


def _parse_text(raw: bytes, lineno: int, file: CorpusFile, report: CorpusReport) -> Document | None:
    text = _decode_line(raw, lineno, file, report)
    return None if text is None else Document(file.lang, text)


def _parse_jsonl(raw: bytes, lineno: int, file: CorpusFile, report: CorpusReport) -> Document | None:
    line = _decode_line(raw, lineno, file, report)
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
