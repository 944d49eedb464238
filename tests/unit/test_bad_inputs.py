"""The bad-input suite: a generated corpus of hostile files beside valid ones.

Every bad file and line is counted exactly in the report, and every valid document, including the valid lines
of mostly bad files, arrives byte-exact through `read_corpus` and through `seqlab data prepare`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from seqlab.cli import main
from seqlab.data.corpus import BINARY_PROBE_BYTES, MAX_DOCUMENT_BYTES, CorpusReport, Document, read_corpus
from seqlab.data.prepare import prepare_corpus
from seqlab.data.store import PreparedCorpus
from seqlab.errors import ConfigError
from seqlab.experiment import resource_path

# The 50 MB line: 10-byte words, so a piece is cut after the last space that fits in MAX_DOCUMENT_BYTES. The
# word is one token of the embedded tokenizer, which keeps encoding it quick.
WORD = b"important "
LONG_LINE = (WORD * 5_000_000).rstrip()  # 49,999,999 bytes, one line
PIECE = MAX_DOCUMENT_BYTES // len(WORD) * len(WORD)

RTL_AND_MIXED = [
    "مرحبا بالعالم، هذا نص عربي.",
    "שלום עולם, זה טקסט בעברית.",
    "English, العربية, עברית, 中文, русский, हिन्दी and 日本語 on one line",
    "\u202bעברית בתוך embedded English\u202c with an RLE/PDF pair",
    "\u2067مقطع معزول\u2069 inside isolates, and an RLM\u200f mark",
    "بِسْمِ اللَّهِ with Arabic diacritics (combining marks)",
    "क्षत्रिय: Devanagari conjuncts with a ZWJ \u200d and ZWNJ \u200c",
    "e\u0301 decomposed, \u00e9 composed, and a family emoji \U0001f468\u200d\U0001f469\u200d\U0001f467",
    "a line separator\u2028and a next-line\u0085stay inside one document",
]


def _jsonl(*records: object) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records)


def _hostile_files() -> dict[str, tuple[bytes, list[Document]]]:
    """Relative path -> (bytes, the documents it must yield, in order)."""
    nul_filler = [f"filler line {i:04d} before the NUL bytes, all valid text" for i in range(200)]
    assert sum(len(line) + 1 for line in nul_filler) > BINARY_PROBE_BYTES  # the NULs come past the probe
    return {
        "en/valid.txt": (b"A plain English document.\nAnother one.\n",
                         [Document("en", "A plain English document."), Document("en", "Another one.")]),
        "en/empty.txt": (b"", []),
        "en/bom_only.txt": (b"\xef\xbb\xbf", []),
        "en/binary.png": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", []),  # unsupported extension: never opened
        "en/binary.txt": (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03gzip bytes\n", []),
        "en/utf16.txt": ("UTF-16 text is not UTF-8\n".encode("utf-16"), []),
        "en/nul_early.txt": (b"a text file\nwith a NUL \x00 on line 2\nis binary by the probe\n", []),
        "en/nul_late.txt": (
            "\n".join(nul_filler).encode() + b"\nbroken \x00 line\nafter the NUL\nzero-filled\x00\x00\x00\x00\n",
            [Document("en", line) for line in nul_filler] + [Document("en", "after the NUL")]),
        "en/invalid_utf8.txt": (
            (b"good line one\ncaf\xe9 au lait\ngood line two\ncut \xe6\x97\n\xc0\xaf overlong\n\xed\xa0\x80 surrogate\n"
             b"last good line"),
            [Document("en", "good line one"), Document("en", "good line two"), Document("en", "last good line")]),
        "en/long_line.txt": (b"before\n" + LONG_LINE + b"\nafter\n",
                             [Document("en", "before")]
                             + [Document("en", LONG_LINE[i:i + PIECE].decode())
                                for i in range(0, len(LONG_LINE), PIECE)]
                             + [Document("en", "after")]),
        "ar/rtl.txt": ("\n".join(RTL_AND_MIXED).encode() + b"\n", [Document("ar", text) for text in RTL_AND_MIXED]),
        "de/windows.txt": (b"\xef\xbb\xbfErste Zeile\r\nZweite Zeile mit \xc3\xa4\r\n\r\nDritte Zeile ohne Ende",
                           [Document("de", "Erste Zeile"), Document("de", "Zweite Zeile mit ä"),
                            Document("de", "Dritte Zeile ohne Ende")]),
        "mixed.jsonl": (
            _jsonl({"text": "first record"}, {"text": RTL_AND_MIXED[1], "lang": "he"})
            + b'{"text": "cut off in the mid\n'
            + _jsonl("a bare string", [1, 2], {"txt": "wrong key"}, {"text": None}, {"text": "x", "lang": 5})
            + b'{"text": "\\u05e9\\u05dc\\u05d5\\u05dd escaped", "lang": "he"}\r\n'
            + b'{"text": "a NUL \\u0000 escaped"}\n'
            + b'{"text": "\\ud800 lone surrogate"}\n'
            + b'{"text": "caf\xe9"}\n'
            + b"\n"
            + _jsonl({"text": "Bonjour à tous", "lang": "fr"})
            + b'{"text": "no newline at the end"}',
            [Document("und", "first record"), Document("he", RTL_AND_MIXED[1]), Document("he", "שלום escaped"),
             Document("fr", "Bonjour à tous"), Document("und", "no newline at the end")]),
    }


# Exact counts for the corpus above.
EXPECTED_COUNTS = {
    "files": 13,  # every .txt and .jsonl, the dangling link included
    "skipped_files": 1,  # binary.png
    "empty_files": 2,  # no byte at all, only a byte-order mark
    "binary_files": 3,  # gzip bytes, UTF-16, a NUL on line 2
    "unreadable_files": 1,  # the dangling link
    "corrupt_files": 0,  # no compressed or columnar file here (see test_corpus_formats.py)
    "invalid_utf8_lines": 5,  # four in invalid_utf8.txt, one in mixed.jsonl
    "nul_lines": 3,  # two past the probe in nul_late.txt, a "\u0000" in mixed.jsonl
    "blank_lines": 2,  # one in windows.txt, one in mixed.jsonl
    "bad_json_lines": 7,  # cut off, string, list, no "text", null "text", int "lang", lone surrogate
    "bad_records": 0,
    "long_records": 0,
    "split_lines": 1,  # the 50 MB line
    "empty_after_tokenization": 0,
    "duplicate_documents": 0,
    "duplicate_tokens": 0,
    "contaminated_documents": 0,
    "contaminated_tokens": 0,
}


@pytest.fixture(scope="module")
def hostile_corpus(tmp_path_factory) -> tuple[Path, list[Document]]:
    root = tmp_path_factory.mktemp("hostile") / "hostile"
    expected: dict[Path, list[Document]] = {}
    for name, (data, docs) in _hostile_files().items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected[path] = docs
    (root / "en" / "dangling.txt").symlink_to(root / "missing.txt")
    return root, [doc for path in sorted(expected) for doc in expected[path]]


def _counts(report: dict) -> dict:
    return {key: value for key, value in report.items() if key not in ("notes", "notes_omitted", "documents",
                                                                       "characters")}


def test_read_corpus_counts_every_bad_input_and_yields_every_valid_document(hostile_corpus):
    root, expected = hostile_corpus
    report = CorpusReport()
    docs = list(read_corpus(root, report))
    assert len(docs) == len(expected) and docs == expected  # the length first: a failing diff of 50 MB is slow
    assert [len(doc.text) for doc in docs if len(doc.text) > 1000] == [PIECE] * 5 + [len(LONG_LINE) - 5 * PIECE]
    assert _counts(report.to_dict()) == EXPECTED_COUNTS
    assert (report.documents, report.characters) == (len(expected), sum(len(doc.text) for doc in expected))
    # One note per problem (blank lines aside), in reading order; past MAX_NOTES they are only counted.
    assert (len(report.notes), report.notes_omitted) == (20, 3)
    notes = "\n".join(report.notes)
    for fragment in ("binary.png: unsupported extension", "empty.txt: empty file", "bom_only.txt: empty file",
                     "utf16.txt: UTF-16LE text (byte-order mark), skipped; convert it to UTF-8", "nul_early.txt: binary file", "nul_late.txt:201: NUL byte at offset 7",
                     "nul_late.txt:203: NUL byte at offset 11", "invalid_utf8.txt:2: invalid UTF-8",
                     "long_line.txt:2: line longer than max_document_bytes=8,388,608", "dangling.txt: cannot read",
                     "mixed.jsonl:3: not valid JSON", 'mixed.jsonl:8: "lang"=5 is not a language code'):
        assert fragment in notes


def test_prepare_stores_every_valid_document_and_reports_every_bad_input(hostile_corpus, tmp_path, capsys):
    root, expected = hostile_corpus
    tokenizer = resource_path("tokenizer/embedded.model")
    out = tmp_path / "prepared"
    # --no-dedup: the pieces of the long line repeat each other, and every valid document is to arrive here.
    assert main(["data", "prepare", str(root), "--tokenizer", tokenizer, "--output", str(out), "--workers", "2",
                 "--no-dedup"]) == 0
    printed = capsys.readouterr().out
    assert f"read {len(expected):,} documents" in printed
    for key in ("skipped_files", "empty_files", "binary_files", "unreadable_files", "invalid_utf8_lines",
                "nul_lines", "blank_lines", "bad_json_lines"):
        assert f"{key}={EXPECTED_COUNTS[key]}" in printed
    assert "split: split_lines=1" in printed

    prepared = PreparedCorpus.open(out)
    assert _counts(prepared.report) == EXPECTED_COUNTS and prepared.report["documents"] == len(expected)
    sp = spm.SentencePieceProcessor(model_file=tokenizer)
    langs = sorted({doc.lang for doc in expected})
    assert [shard.name for shard in prepared.shards] == [f"hostile/{lang}" for lang in langs]
    for shard, lang in zip(prepared.shards, langs):
        ids = [np.asarray(sp.encode(doc.text), dtype=np.int64) for doc in expected if doc.lang == lang]
        assert shard.lengths.tolist() == [len(doc_ids) for doc_ids in ids]
        assert np.array_equal(shard.tokens, np.concatenate(ids))
    # Decoding gives the text back, right-to-left and mixed scripts included.
    arabic = next(shard for shard in prepared.shards if shard.lang == "ar")
    starts = np.concatenate([[0], np.cumsum(arabic.lengths)])
    assert sp.decode(arabic.tokens[starts[2]:starts[3]].tolist()) == RTL_AND_MIXED[2]


def test_pieces_of_long_lines_never_cut_a_character(tmp_path):
    lines = ["aaaa bbbb cccc dddd eeee ffff", "日本語の文章には空白がありません。" * 2, "\U0001f600" * 9, "short"]
    (tmp_path / "long.txt").write_bytes("\r\n".join(lines).encode() + b"\r\n")
    report = CorpusReport()
    docs = [doc.text for doc in read_corpus(tmp_path / "long.txt", report, max_document_bytes=16)]
    assert docs == ["aaaa bbbb cccc ", "dddd eeee ffff",  # after a space in the second half of a piece
                    "日本語の文", "章には空白", "がありませ", "ん。日本語", "の文章には", "空白があり", "ません。",
                    "\U0001f600" * 4, "\U0001f600" * 4, "\U0001f600", "short"]
    assert all(len(doc.encode()) <= 16 for doc in docs)
    assert (report.split_lines, report.documents, report.blank_lines) == (3, 13, 0)


def test_jsonl_record_longer_than_the_limit_is_skipped_and_counted(tmp_path):
    (tmp_path / "big.jsonl").write_bytes(_jsonl({"text": "kept"}, {"text": "x" * 100}, {"text": "also kept"}))
    report = CorpusReport()
    docs = list(read_corpus(tmp_path / "big.jsonl", report, max_document_bytes=64))
    assert [doc.text for doc in docs] == ["kept", "also kept"]
    assert (report.long_records, report.split_lines, report.bad_json_lines) == (1, 0, 0)
    assert report.notes[0].endswith("big.jsonl:2: JSONL record longer than max_document_bytes=64, skipped")
    assert "long_records=1" in report.summary()


def test_a_line_of_exactly_the_limit_comes_whole(tmp_path):
    (tmp_path / "edge.txt").write_bytes(b"x" * 16 + b"\r\n" + b"y" * 17 + b"\n")
    report = CorpusReport()
    docs = [doc.text for doc in read_corpus(tmp_path / "edge.txt", report, max_document_bytes=16)]
    assert docs == ["x" * 16, "y" * 16, "y"] and report.split_lines == 1


def test_the_limit_is_checked(tmp_path):
    (tmp_path / "a.txt").write_text("text\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="max_document_bytes=3: must be an integer >= 4"):
        list(read_corpus(tmp_path / "a.txt", CorpusReport(), max_document_bytes=3))
    with pytest.raises(ConfigError, match="max_document_bytes=0: must be an integer >= 4"):
        prepare_corpus([tmp_path / "a.txt"], resource_path("tokenizer/embedded.model"), tmp_path / "out",
                       max_document_bytes=0)
