"""Reading parquet files and `datasets` folders as positioned documents, a record batch at a time."""
from __future__ import annotations

from typing import Iterator

from seqlab.data.document import CorpusFile, Document, is_valid_name
from seqlab.data.formats import record_batches
from seqlab.data.lines import Positioned, cut
from seqlab.data.report import CorpusReport


def read_columnar(file: CorpusFile, report: CorpusReport, limit: int) -> Iterator[Positioned]:
    """The documents of the rows (of the row groups in `file.span`); a document's position is its row number
    in the file (the dataset)."""
    batches, row = record_batches(file.path, file.format, [file.text_field, file.lang_field], file.span)
    for batch in batches:
        texts = batch.column(file.text_field).to_pylist()
        has_lang = file.lang_field in batch.schema.names
        langs = batch.column(file.lang_field).to_pylist() if has_lang else [None] * len(texts)
        for text, lang in zip(texts, langs):
            yield from _row(text, lang, row, file, report, limit)
            row += 1


def _row(text: object, lang: object, row: int, file: CorpusFile, report: CorpusReport,
         limit: int) -> Iterator[Positioned]:
    at = f"{file.path} row {row}"
    if not isinstance(text, str) or (lang is not None and not (isinstance(lang, str) and is_valid_name(lang))):
        report.bad_records += 1
        problem = (f"{file.text_field!r} is {type(text).__name__}, not a string" if not isinstance(text, str)
                   else f"{file.lang_field!r}={lang!r} is not a language code such as 'en'")
        report.note(f"{at}: {problem}, row skipped")
        return
    if "\0" in text:
        report.nul_lines += 1
        report.note(f"{at}: {file.text_field!r} holds a NUL character, row skipped")
        return
    if not text or text.isspace():
        report.blank_lines += 1
        return
    raw = text.encode("utf-8")
    if len(raw) > limit:  # already in memory, so cut like a long text line rather than skipped
        report.split_lines += 1
        report.note(f"{at}: text longer than max_document_bytes={limit:,}, split into several documents")
    while raw:
        end = cut(raw, limit) if len(raw) > limit else len(raw)
        piece, raw = raw[:end].decode("utf-8"), raw[end:]
        if piece.strip():
            report.documents += 1
            report.characters += len(piece)
            yield row, Document(lang or file.lang, piece)
