"""Files that crashed or hung `seqlab data prepare`: a FIFO (reading it blocks forever), a symlink loop, a file
name that is not UTF-8 (reaching the report's UTF-8 writers as lone surrogates), and UTF-16 text without a NUL
byte (CJK), which the binary probe cannot see. Each is counted as a bad input; the valid documents arrive."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from seqlab.data.corpus import find_files
from seqlab.data.report import CorpusReport
from seqlab.data.store import PreparedCorpus
from seqlab.experiment import resource_path

GOOD = "A valid English document that must arrive."


@pytest.fixture
def hostile_folder(tmp_path):
    root = tmp_path / "corpus"
    (root / "en").mkdir(parents=True)
    (root / "en" / "good.txt").write_text(GOOD + "\n", encoding="utf-8")
    os.mkfifo(root / "en" / "pipe.txt")
    (root / "en" / "loop.txt").symlink_to(root / "en" / "loop.txt")
    (root / "en" / "sub").symlink_to(root / "en")  # a folder loop: walked once
    bad_name = os.fsencode(root / "en") + b"/caf\xe9.txt"  # Latin-1 bytes of a name, not UTF-8
    with open(bad_name, "wb") as f:
        f.write(b"")  # empty: noted with its name
    (root / "en" / "cjk.txt").write_bytes("\ufeff日本語の文章です。中文的文章。".encode("utf-16-be"))  # no newline: 00 0A
    assert b"\0" not in (root / "en" / "cjk.txt").read_bytes()
    return root


def test_prepare_counts_fifo_symlink_loop_odd_name_and_utf16_and_keeps_the_good_document(hostile_folder, tmp_path):
    out = tmp_path / "prepared"
    command = [sys.executable, "-m", "seqlab", "data", "prepare", str(hostile_folder), "--tokenizer",
               resource_path("tokenizer/embedded.model"), "--output", str(out), "--workers", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)  # a FIFO would hang: timeout
    assert result.returncode == 0, result.stderr[-3000:]
    prepared = PreparedCorpus.open(out)
    report = prepared.report
    assert report["documents"] == 1
    # The FIFO is skipped (never opened); the loop cannot be opened; the UTF-16 file is refused at the probe.
    assert (report["skipped_files"], report["unreadable_files"], report["binary_files"], report["empty_files"]) \
        == (1, 1, 1, 1), report
    notes = "\n".join(report["notes"])
    assert "pipe.txt: not a regular file (a FIFO, socket or device), skipped" in notes
    assert "loop.txt: cannot read (Too many levels of symbolic links)" in notes
    assert "cjk.txt: UTF-16BE text (byte-order mark), skipped; convert it to UTF-8 first" in notes
    assert "caf\\xe9.txt: empty file" in notes  # the name's raw byte, shown escaped
    json.dumps(report, ensure_ascii=False).encode("utf-8")  # every note is writable as UTF-8


def test_a_fifo_named_as_the_input_is_refused_with_a_message(tmp_path):
    from seqlab.errors import DataError

    os.mkfifo(tmp_path / "pipe.txt")
    with pytest.raises(DataError, match=r"pipe.txt: not a regular file \(a FIFO, socket or device\)"):
        find_files(tmp_path / "pipe.txt", CorpusReport())
