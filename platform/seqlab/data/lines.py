"""Reading line files (text and JSON lines, plain or decompressed) as positioned documents.

The rules for bad input are those of `seqlab.data.corpus`. A part of a large file (`CorpusFile.span`, a byte
range) holds the lines that start in it: it skips the line cut by its first byte, which belongs to the part
before, and reads its last line to the end however far past the range that is. So the parts of a file give
exactly the documents of the whole file, in order.
"""
from __future__ import annotations

import codecs
import json
from typing import BinaryIO, Iterator

from seqlab.data.document import BINARY_PROBE_BYTES, CorpusFile, Document, is_valid_name
from seqlab.data.report import CorpusReport

# UTF-32 LE starts with the UTF-16 LE mark, so it is caught (and named UTF-16) too.
UTF16_BOMS = ((codecs.BOM_UTF16_LE, "UTF-16LE"), (codecs.BOM_UTF16_BE, "UTF-16BE"))
Positioned = tuple[int, Document]  # (byte offset of the document in the (decompressed) file, document)


def read_plain(stream: BinaryIO, file: CorpusFile, report: CorpusReport, limit: int) -> Iterator[Positioned]:
    """The documents of an uncompressed file, or of its byte range; `stream` is open at its start."""
    head = stream.read(BINARY_PROBE_BYTES)
    if not _probe(head, file, report):
        return
    start, end = file.span or (0, None)
    text_start = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
    if start <= text_start:  # the first line starts after the byte-order mark, in whichever part holds that
        start = text_start
        stream.seek(start)
    else:
        stream.seek(start - 1)
        if stream.read(1) != b"\n":
            start += len(stream.readline())  # the rest of a line that began in the part before
    yield from _documents(_Bounded(stream, start, end), start, file, report, limit)


def read_stream(stream: BinaryIO, file: CorpusFile, report: CorpusReport, limit: int) -> Iterator[Positioned]:
    """The documents of a decompressed stream, which cannot seek back: the probed bytes are served again."""
    head = stream.read(BINARY_PROBE_BYTES)
    if not _probe(head, file, report):
        return
    bom = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
    yield from _documents(_Replay(head[bom:], stream), bom, file, report, limit)


def _probe(head: bytes, file: CorpusFile, report: CorpusReport) -> bool:
    """Whether the file holds text; an empty or binary file is counted (once, at its first part)."""
    if not head.removeprefix(codecs.BOM_UTF8):
        report.empty_files += 1
        report.note(f"{file.path}: empty file")
        return False
    bom = next((name for mark, name in UTF16_BOMS if head.startswith(mark)), None)
    if bom is not None:  # UTF-16 text need not hold a NUL byte (CJK), and decoded as UTF-8 it would be junk
        if file.first_part:
            report.binary_files += 1
            report.note(f"{file.path}: {bom} text (byte-order mark), skipped; convert it to UTF-8 first "
                        f"(iconv -f {bom} -t UTF-8)")
        return False
    if b"\0" in head:
        if file.first_part:
            report.binary_files += 1
            report.note(f"{file.path}: binary file (NUL byte in the first {BINARY_PROBE_BYTES} bytes), skipped")
        return False
    return True


class _Bounded:
    """`readline` over the lines of a seekable stream that start before `end` (None: the end of the file)."""

    def __init__(self, stream: BinaryIO, position: int, end: int | None):
        self.stream, self.position, self.end, self.line_start = stream, position, end, True

    def readline(self, size: int = -1) -> bytes:
        if self.line_start and self.end is not None and self.position >= self.end:
            return b""
        data = self.stream.readline(size)
        self.position += len(data)
        self.line_start = data.endswith(b"\n")
        return data


class _Replay:
    """A stream whose first bytes were already read: `readline` serves them again, then the rest."""

    def __init__(self, head: bytes, rest: BinaryIO):
        self.head, self.rest = head, rest

    def readline(self, size: int = -1) -> bytes:
        if not self.head:
            return self.rest.readline(size)
        end = self.head.find(b"\n") + 1 or len(self.head)
        if size >= 0:
            end = min(end, size)
        line, self.head = self.head[:end], self.head[end:]
        if not line.endswith(b"\n") and not self.head and (size < 0 or len(line) < size):
            line += self.rest.readline(size - len(line) if size >= 0 else -1)
        return line


def _at(file: CorpusFile, lineno: int, offset: int) -> str:
    """Where a line is, for notes: its number, or in a later part of a split file its byte offset."""
    return f"{file.path}:{lineno}" if file.first_part else f"{file.path} (line at byte {offset:,})"


def _documents(stream: _Bounded | _Replay, start: int, file: CorpusFile, report: CorpusReport,
               limit: int) -> Iterator[Positioned]:
    parse = _parse_jsonl if file.format == "jsonl" else _parse_text
    split = 0  # number of the line being cut into pieces, 0 if none
    for lineno, offset, raw, last in _pieces(stream, start, limit):
        at = _at(file, lineno, offset)
        if not last and split != lineno:
            split = lineno
            if file.format == "jsonl":
                report.long_records += 1
                report.note(f"{at}: JSONL record longer than max_document_bytes={limit:,}, skipped")
            else:
                report.split_lines += 1
                report.note(f"{at}: line longer than max_document_bytes={limit:,}, split into several documents")
        if split == lineno and file.format == "jsonl":
            continue
        if b"\0" in raw:
            report.nul_lines += 1
            report.note(f"{at}: NUL byte at offset {raw.index(0)}, line skipped")
            continue
        doc = parse(raw, at, file, report)
        if doc is None:
            continue
        if not doc.text or doc.text.isspace():
            report.blank_lines += 1
            continue
        report.documents += 1
        report.characters += len(doc.text)
        yield offset, doc


def _pieces(stream: _Bounded | _Replay, offset: int, limit: int) -> Iterator[tuple[int, int, bytes, bool]]:
    """(line number, byte offset, bytes without the line end, whether the line ends here) for every line of
    `stream`, a line longer than `limit` bytes coming in several pieces of at most `limit` bytes (see `cut`)."""
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
            yield lineno, offset, body, True
            lineno, carry, offset = lineno + 1, b"", offset + len(raw)
        else:
            end = cut(body, limit)
            yield lineno, offset, body[:end], False
            carry, offset = raw[end:], offset + end


def cut(body: bytes, limit: int) -> int:
    """Where a piece of an over-long line ends: after the last space in the second half of its first `limit`
    bytes (so words stay whole), else before the UTF-8 character that straddles `limit`."""
    space = body.rfind(b" ", limit // 2, limit)
    if space >= 0:
        return space + 1
    for end in range(limit, limit - 4, -1):
        if body[end] & 0xC0 != 0x80:  # not a continuation byte: a character starts here
            return end
    return limit  # not UTF-8 here anyway: the piece is counted as invalid


def _decode(raw: bytes, at: str, report: CorpusReport) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        report.invalid_utf8_lines += 1
        report.note(f"{at}: invalid UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start}), line skipped")
        return None


def _parse_text(raw: bytes, at: str, file: CorpusFile, report: CorpusReport) -> Document | None:
    text = _decode(raw, at, report)
    return None if text is None else Document(file.lang, text)


def _parse_jsonl(raw: bytes, at: str, file: CorpusFile, report: CorpusReport) -> Document | None:
    line = _decode(raw, at, report)
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
        key = file.text_field
        text, lang = record.get(key), record.get(file.lang_field, file.lang)
        if not isinstance(text, str):
            problem = f'"{key}" is {"missing" if key not in record else type(text).__name__}, not a string'
        elif lang is not None and not (isinstance(lang, str) and is_valid_name(lang)):
            problem = f'"{file.lang_field}"={lang!r} is not a language code such as "en"'
        elif not _encodable(text):
            problem = f'"{key}" holds an unpaired surrogate escape (e.g. "\\ud800"), not valid Unicode'
        elif "\0" in text:
            report.nul_lines += 1  # the same rule as a NUL byte in a text line
            report.note(f'{at}: "{key}" holds a NUL character (\\u0000), line skipped')
            return None
        else:
            return Document(lang or file.lang, text)
    report.bad_json_lines += 1
    report.note(f"{at}: {problem}, line skipped")
    return None


def _encodable(text: str) -> bool:
    # JSON may escape lone UTF-16 surrogates, which Python accepts but no UTF-8 consumer (SentencePiece) can.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
