"""Raw corpus reading: every bad input is counted exactly, every good document arrives intact."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from seqlab.data.corpus import MAX_NOTES, CorpusReport, Document, find_files, read_corpus
from seqlab.errors import ConfigError, DataError


def _jsonl(*records: object) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


@pytest.fixture
def messy_corpus(tmp_path: Path) -> tuple[Path, list[Document]]:
    """A folder per language holding one of each kind of bad input, and the documents it must yield in order."""
    root = tmp_path / "corpus"
    files: dict[str, bytes] = {
        "root.txt": "root document\n".encode(),
        "de/data.jsonl": (
            _jsonl({"text": "Hallo Welt"}, {"text": "Bonjour", "lang": "fr"}, {"text": "kein lang", "lang": None})
            + b'{"text": "broken\n'  # unparseable
            + _jsonl([1, 2], {"lang": "de"}, {"text": 42}, {"text": "x", "lang": "../etc"})
            + b'{"text": "\\ud800 lone surrogate"}\n'
            + b"\n"
            + _jsonl({"text": "  \t "})
            + b'{"text": "caf\xe9"}\n'  # Latin-1 byte: invalid UTF-8
            + _jsonl({"text": "zwei\nZeilen"})
            + b'{"text": "crlf record"}\r\n'
        ),
        "en/good.txt": b"first\r\nsecond\n\n   \n\xff\xfebad\nthird \r\n\xc3(\nno newline at end",
        "en/empty.txt": b"",
        "en/binary.txt": b"PK\x03\x04\x00\x00 zip bytes\n",
        "en/notes.md": b"# not a corpus file\n",
        "en/sub/deep.txt": "deep document\n".encode(),
        "fr/bom.txt": b"\xef\xbb\xbfBonjour \xc3\xa0 tous\n",
        "not a lang/x.txt": b"skipped: folder name has a space\n",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "en" / "dangling.txt").symlink_to(tmp_path / "missing.txt")  # open() fails: unreadable
    (root / "en" / "sub" / "loop").symlink_to(root / "en", target_is_directory=True)  # must not recurse forever
    expected = [  # sorted by path: de/, en/, fr/, root.txt
        Document("de", "Hallo Welt"), Document("fr", "Bonjour"), Document("de", "kein lang"),
        Document("de", "zwei\nZeilen"), Document("de", "crlf record"),
        Document("en", "first"), Document("en", "second"), Document("en", "third "),
        Document("en", "no newline at end"), Document("en", "deep document"),
        Document("fr", "Bonjour à tous"), Document("xx", "root document"),
    ]
    return root, expected


def test_messy_folder_counts_every_problem_exactly(messy_corpus):
    root, expected = messy_corpus
    report = CorpusReport()
    docs = list(read_corpus(root, report, lang="xx"))
    assert docs == expected
    counts = {k: v for k, v in report.to_dict().items() if k not in ("notes", "notes_omitted")}
    assert counts == {
        "files": 8,  # root, data.jsonl, good, empty, binary, dangling, deep, bom
        "skipped_files": 2,  # notes.md, "not a lang/x.txt"
        "empty_files": 1,
        "binary_files": 1,
        "unreadable_files": 1,
        "corrupt_files": 0,
        "invalid_utf8_lines": 3,  # two in good.txt, one in data.jsonl
        "nul_lines": 0,
        "blank_lines": 4,  # two in good.txt, an empty line and a whitespace "text" in data.jsonl
        "bad_json_lines": 6,  # broken, list, no text, int text, bad lang, lone surrogate
        "bad_records": 0,
        "long_records": 0,
        "split_lines": 0,
        "documents": len(expected),
        "characters": sum(len(doc.text) for doc in expected),
        "empty_after_tokenization": 0,
        "duplicate_documents": 0,
        "duplicate_tokens": 0,
        "contaminated_documents": 0,
        "contaminated_tokens": 0,
    }
    assert len(report.notes) == 14 and report.notes_omitted == 0  # one note per problem, blank lines aside
    notes = "\n".join(report.notes)
    for fragment in ("good.txt:5: invalid UTF-8", "good.txt:7: invalid UTF-8", "data.jsonl:4: not valid JSON",
                     'data.jsonl:6: "text" is missing', "data.jsonl:7: \"text\" is int", "empty.txt: empty file",
                     "binary.txt: binary file", "dangling.txt: cannot read", "notes.md: unsupported extension",
                     "'not a lang' is not a language code", "unpaired surrogate"):
        assert fragment in notes


def test_files_in_the_root_default_to_und(messy_corpus):
    root, _ = messy_corpus
    docs = list(read_corpus(root / "root.txt", CorpusReport()))
    assert docs == [Document("und", "root document")]


def test_explicit_file_is_text_whatever_its_extension(tmp_path):
    path = tmp_path / "eng.dev"
    path.write_text("one\ntwo\n", encoding="utf-8")
    report = CorpusReport()
    assert [doc.text for doc in read_corpus(path, report, lang="en")] == ["one", "two"]
    assert report.files == 1 and report.skipped_files == 0


def test_long_line_is_one_document(tmp_path):
    text = "ab " * 1_000_000
    (tmp_path / "long.txt").write_text(f"short\n{text}\nshort\n", encoding="utf-8")
    docs = list(read_corpus(tmp_path / "long.txt", CorpusReport()))
    assert [len(doc.text) for doc in docs] == [5, len(text), 5]


def test_missing_path_names_it_and_the_layout(tmp_path):
    with pytest.raises(DataError, match="nowhere.*no such file or folder(.|\n)*DIR/<lang>"):
        list(read_corpus(tmp_path / "nowhere", CorpusReport()))


def test_invalid_default_lang_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="lang='en/us'"):
        find_files(tmp_path, CorpusReport(), lang="en/us")


def test_report_merges_counts_and_bounds_notes():
    first, second = CorpusReport(files=1, documents=3), CorpusReport(files=2, blank_lines=1)
    for i in range(15):
        first.note(f"a{i}")
        second.note(f"b{i}")
    first.merge(second)
    assert (first.files, first.documents, first.blank_lines) == (3, 3, 1)
    assert first.notes == [f"a{i}" for i in range(15)] + [f"b{i}" for i in range(MAX_NOTES - 15)]
    assert first.notes_omitted == 30 - MAX_NOTES
    assert CorpusReport.from_dict(json.loads(json.dumps(first.to_dict()))) == first
    summary = first.summary()
    assert "read 3 documents" in summary and "blank_lines=1" in summary and "... and 10 more" in summary


def test_report_rejects_bad_counts():
    with pytest.raises(DataError, match="CorpusReport.files=-1"):
        CorpusReport(files=-1)
    with pytest.raises(DataError, match="unknown fields"):
        CorpusReport.from_dict({"files": 1, "lines": 2})
