r"""Reading raw corpora robustly: text, JSONL (plain or compressed), parquet and `datasets` folders, and folders
per language, streamed as documents (formats: `seqlab.data.formats`).

Real corpora are dirty (a stray binary, a truncated download, a Windows editor, a crawler's broken JSON), and
one bad byte must not cost a day's preparation run. So every problem is counted in a `CorpusReport`, the
first few are described, and reading goes on; nothing is dropped without a count. What counts as bad input:

- a file with a NUL byte in its first BINARY_PROBE_BYTES is binary (the rule of git and grep; UTF-16 text
  looks like this too) and is skipped whole, as is a file starting with a UTF-16 byte-order mark (UTF-16 CJK
  text need not hold a NUL byte); an empty file gives nothing. All are counted per file.
- a FIFO, socket or device in a folder is skipped without being opened (reading a FIFO would block forever),
  and a symlink loop or dangling link is counted unreadable; a FIFO named as the input is refused.
- past that probe, a line holding a NUL byte (or a JSONL "text" holding "\u0000") is damaged, e.g. by a
  zero-filled block after a crash: that line is skipped and counted in `nul_lines`, the file's other lines
  still arrive.
- a line that is not valid UTF-8, a blank line, a JSONL line that is not an object with a string "text".
- a line longer than `max_document_bytes` is valid text too long to hold whole: a text line is cut into
  several documents of at most that many bytes (after a space where there is one, never inside a UTF-8
  character) and counted in `split_lines`; each piece then counts as a line of its own. A JSONL record
  cannot be cut before it is parsed, so one that long is skipped and counted in `long_records`.
- a parquet or Arrow row whose text is null or not a string, or whose language is not a valid code, is counted
  in `bad_records`; its text longer than `max_document_bytes` is cut like a long text line.
- a compressed or columnar file damaged part way (truncated, a bad frame or page) is counted in
  `corrupt_files`; the documents before the damage arrive.
Everything else arrives byte-exact: any script, right-to-left text, combining marks; a "\r\n" line end and a
UTF-8 byte-order mark at the start of a file are removed.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterator

from seqlab.data.columnar import read_columnar
from seqlab.data.document import (  # noqa: F401 - re-exported: the corpus API in one place
    BINARY_PROBE_BYTES, DEFAULT_LANG, MAX_DOCUMENT_BYTES, Compression, CorpusFile, Document, Format, is_valid_name,
)
from seqlab.data.formats import KNOWN, corruption_errors, detect, is_arrow_dataset, open_lines
from seqlab.data.lines import Positioned, read_plain, read_stream
from seqlab.data.report import MAX_NOTES, CorpusReport  # noqa: F401 - MAX_NOTES re-exported with the report
from seqlab.errors import ConfigError, DataError

LAYOUT = (
    "Expected one of:\n"
    "  FILE.txt[.gz|.zst]  one document per line (a named file of another extension is read the same way)\n"
    '  FILE.jsonl[.gz|.zst] (or .json...)  one JSON object per line: {"text": "...", "lang": "en"} ("lang" optional)\n'
    "  FILE.parquet        a text column and an optional language column\n"
    "  DIR with state.json and *.arrow   a folder written by datasets' save_to_disk\n"
    "  DIR/<lang>/**/...   a folder per language; files directly in DIR get the default language\n"
    "(--text-field and --lang-field name the JSONL, parquet and Arrow fields; default text and lang)"
)


def find_files(path: str | Path, report: CorpusReport, lang: str | None = None, text_field: str = "text",
               lang_field: str = "lang") -> list[CorpusFile]:
    """The corpus files under `path` in sorted path order; unsupported files are counted in `report`."""
    path = Path(path)
    default = lang or DEFAULT_LANG
    if not is_valid_name(default):
        raise ConfigError(f"lang={default!r} is not a language code such as 'en' or 'zh-Hans'")
    fields = {"text_field": text_field, "lang_field": lang_field}
    if path.exists() and not path.is_dir() and not _regular(path, CorpusReport()):
        raise DataError(f"corpus input {path}: not a regular file (a FIFO, socket or device); name a file or "
                        "folder of corpus files")
    if path.is_file():
        # A file named explicitly is read whatever its extension (FLORES ships `eng.dev`); in a folder only
        # known extensions are, so READMEs and licences beside the data are not trained on.
        return [CorpusFile(path, default, *(detect(path) or ("text", None)), **fields)]
    if not path.is_dir():
        raise DataError(f"corpus input {path}: no such file or folder.\n{LAYOUT}")
    if is_arrow_dataset(path):
        return [CorpusFile(path, default, "arrow", **fields)]
    found: list[CorpusFile] = []
    visited: set[str] = set()
    # Follow symlinks (a language folder is often a link into shared storage) but never into a cycle.
    for folder, subfolders, names in os.walk(path, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:
            subfolders.clear()
            continue
        visited.add(real)
        for sub in [s for s in subfolders if is_arrow_dataset(Path(folder, s))]:
            subfolders.remove(sub)  # one dataset: its .arrow files are not read one by one
            found += _listed(path, Path(folder, sub), default, ("arrow", None), fields, report)
        for name in names:
            file = Path(folder, name)
            found += _listed(path, file, default, detect(file), fields, report)
    return sorted(found)


def _listed(root: Path, file: Path, default: str, kind: tuple[Format, Compression] | None, fields: dict[str, str],
            report: CorpusReport) -> list[CorpusFile]:
    parts = file.relative_to(root).parts
    if kind is not None and kind[0] != "arrow" and not _regular(file, report):
        return []
    file_lang = parts[0] if len(parts) > 1 else default
    if kind is None:
        report.skipped_files += 1
        report.note(f"{file}: unsupported extension {file.suffix or '(none)'!r}, expected {KNOWN}")
        return []
    if not is_valid_name(file_lang):
        report.skipped_files += 1
        report.note(f"{file}: folder name {file_lang!r} is not a language code such as 'en'")
        return []
    return [CorpusFile(file, file_lang, *kind, **fields)]


def _regular(file: Path, report: CorpusReport) -> bool:
    """Whether `file` is a regular file (through symlinks); else counted and noted. Opening a FIFO would block
    forever, and a symlink loop or a dangling link cannot be opened at all."""
    try:
        mode = file.stat().st_mode
    except OSError as err:  # ELOOP, ENOENT of a dangling link, EACCES: a corpus file that gives nothing
        report.files += 1
        report.unreadable_files += 1
        report.note(f"{file.name}: cannot read ({os.strerror(err.errno) if err.errno else err})")
        return False
    if not stat.S_ISREG(mode):
        report.skipped_files += 1
        report.note(f"{file}: not a regular file (a FIFO, socket or device), skipped")
        return False
    return True


def read_corpus(path: str | Path, report: CorpusReport, lang: str | None = None,
                max_document_bytes: int = MAX_DOCUMENT_BYTES, text_field: str = "text",
                lang_field: str = "lang") -> Iterator[Document]:
    """Every document under `path` (see LAYOUT), counting problems in `report`."""
    for file in find_files(path, report, lang, text_field, lang_field):
        yield from read_file(file, report, max_document_bytes)


def read_file(file: CorpusFile, report: CorpusReport,
              max_document_bytes: int = MAX_DOCUMENT_BYTES) -> Iterator[Document]:
    """The documents of one file (or of its part), a line or record batch at a time; no more than
    `max_document_bytes` of a line is held."""
    for _, doc in read_positioned(file, report, max_document_bytes):
        yield doc


def read_positioned(file: CorpusFile, report: CorpusReport,
                    max_document_bytes: int = MAX_DOCUMENT_BYTES) -> Iterator[Positioned]:
    """`read_file` with each document's position: its byte offset in the (decompressed) file, or its row."""
    if type(max_document_bytes) is not int or max_document_bytes < 4:  # room for any one UTF-8 character
        raise ConfigError(f"max_document_bytes={max_document_bytes!r}: must be an integer >= 4")
    if file.first_part:
        report.files += 1
    before = report.documents
    try:
        if file.format in ("parquet", "arrow"):
            yield from read_columnar(file, report, max_document_bytes)
            return
        with open_lines(file.path, file.compression) as stream:
            read = read_plain if file.compression is None else read_stream
            yield from read(stream, file, report, max_document_bytes)
    except (OSError, *corruption_errors()) as err:
        kept = report.documents - before
        if isinstance(err, OSError) and err.errno is not None:  # the system's error (permissions, I/O)
            report.unreadable_files += 1
            after = f" after {kept:,} documents" if kept else ""
            report.note(f"{file.name}: cannot read ({err.strerror or err}){after}")
            return
        # A format's error (BadGzipFile, EOFError, zlib, zstd or Arrow errors): the data is damaged.
        report.corrupt_files += 1
        report.note(f"{file.name}: corrupt or truncated after {kept:,} documents ({type(err).__name__}: {err}); "
                    "the rest of the file skipped")
