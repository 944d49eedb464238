"""Corpus formats: compressed JSON lines and text, parquet, datasets folders, and parts of large files."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import given, settings, strategies as st

from format_fixtures import DOCS, jsonl_bytes, write_formats

from seqlab.data.corpus import CorpusFile, CorpusReport, Document, find_files, read_corpus, read_file
from seqlab.data.plan import plan_tasks
from seqlab.data.prepare import prepare_corpus
from seqlab.data.store import PreparedCorpus
from seqlab.errors import DataError


@pytest.fixture(scope="module")
def formats(tmp_path_factory) -> dict[str, Path]:
    return write_formats(tmp_path_factory.mktemp("formats"))


@pytest.mark.parametrize("kind", ["jsonl.gz", "json.gz", "jsonl.zst", "parquet", "arrow"])
def test_every_format_gives_the_documents_of_the_jsonl(formats, kind):
    expected = list(read_corpus(formats["jsonl"], CorpusReport()))
    assert expected == DOCS
    report = CorpusReport()
    assert list(read_corpus(formats[kind], report)) == expected
    assert (report.files, report.documents, report.corrupt_files, report.bad_records) == (1, len(DOCS), 0, 0)
    if kind == "arrow":
        assert len(list(formats["arrow"].glob("*.arrow"))) > 1  # several Arrow files, read in state.json order


def test_text_files_compressed_or_not_and_configurable_fields(tmp_path):
    lines = "\n".join(d.text for d in DOCS).encode() + b"\n"
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "plain.txt").write_bytes(lines)
    (tmp_path / "en" / "web.txt.gz").write_bytes(gzip.compress(lines))
    (tmp_path / "en" / "web.txt.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
    kinds = [(f.path.name, f.format, f.compression) for f in find_files(tmp_path, CorpusReport())]
    assert kinds == [("plain.txt", "text", None), ("web.txt.gz", "text", "gzip"), ("web.txt.zst", "text", "zstd")]
    docs = list(read_corpus(tmp_path, CorpusReport()))
    assert docs == [Document("en", d.text) for d in DOCS] * 3
    # Other field names (a hub dump's "content" and "language"), in JSONL and parquet alike.
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.jsonl.gz").write_bytes(gzip.compress(jsonl_bytes(DOCS, "content", "language")))
    pq.write_table(pa.table({"content": [d.text for d in DOCS], "language": [d.lang for d in DOCS]}),
                   tmp_path / "other" / "b.parquet")
    for name in ("a.jsonl.gz", "b.parquet"):
        got = list(read_corpus(tmp_path / "other" / name, CorpusReport(), text_field="content",
                               lang_field="language"))
        assert got == DOCS


def test_prepare_stores_the_same_tokens_from_every_format(formats, tmp_path, tokenizer):
    prepared = {}
    for kind in ("jsonl", "jsonl.zst", "parquet", "arrow"):
        prepared[kind] = prepare_corpus([formats[kind]], tokenizer.path, tmp_path / kind, source="docs",
                                        progress=False, part_bytes=4096)
    reference = prepared["jsonl"]
    assert reference.report["documents"] == len(DOCS)
    for kind, corpus in prepared.items():
        assert [s.name for s in corpus.shards] == [s.name for s in reference.shards]
        for shard, ref in zip(corpus.shards, reference.shards):
            assert np.array_equal(shard.tokens, ref.tokens) and np.array_equal(shard.offsets, ref.offsets), kind


def test_missing_text_column_names_the_column_and_the_columns(tmp_path):
    pq.write_table(pa.table({"content": ["x"], "language": ["en"]}), tmp_path / "dump.parquet")
    with pytest.raises(DataError, match=r"dump.parquet: no column 'text' .*columns: content, language"):
        list(read_corpus(tmp_path / "dump.parquet", CorpusReport()))


def test_bad_parquet_rows_are_counted_per_reason(tmp_path):
    texts = ["good one", None, "good two", "", "bad lang", "x" * 40, "nul\0inside"]
    langs = ["en", "en", None, "en", "not a code!", "de", "en"]
    pq.write_table(pa.table({"text": texts, "lang": langs}), tmp_path / "rows.parquet")
    report = CorpusReport()
    docs = list(read_corpus(tmp_path / "rows.parquet", report, lang="fr", max_document_bytes=16))
    assert docs == [Document("en", "good one"), Document("fr", "good two")] + [Document("de", "x" * 16)] * 2 \
        + [Document("de", "x" * 8)]
    assert (report.bad_records, report.blank_lines, report.split_lines, report.nul_lines) == (2, 1, 1, 1)
    assert "rows.parquet row 1: 'text' is NoneType, not a string" in "\n".join(report.notes)
    assert "rows.parquet row 4: 'lang'='not a code!' is not a language code" in "\n".join(report.notes)


def test_truncated_gzip_keeps_every_document_before_the_damage(formats, tmp_path):
    data = formats["jsonl.gz"].read_bytes()
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) * 2 // 3])
    report = CorpusReport()
    docs = list(read_corpus(tmp_path / "cut.jsonl.gz", report))
    assert report.corrupt_files == 1 and 0 < len(docs) < len(DOCS)
    assert docs == DOCS[: len(docs)]  # a prefix: nothing invented from the damaged end
    assert len(docs) >= len(DOCS) // 2  # gzip streams: what decompressed before the cut arrives
    assert "cut.jsonl.gz: corrupt or truncated after" in report.notes[0]


def test_bad_zstd_frame_keeps_the_frames_before_it(tmp_path):
    many = [Document(d.lang, f"{d.text} copy {k}") for k in range(8) for d in DOCS]  # ~100 KB: many reads
    compressor = zstandard.ZstdCompressor(write_checksum=True)
    frame = bytearray(compressor.compress(jsonl_bytes(DOCS)))
    frame[0] ^= 0xFF  # the second frame's magic number: not a zstd frame
    (tmp_path / "bad.jsonl.zst").write_bytes(compressor.compress(jsonl_bytes(many)) + bytes(frame))
    report = CorpusReport()
    docs = list(read_corpus(tmp_path / "bad.jsonl.zst", report))
    assert report.corrupt_files == 1 and "bad.jsonl.zst: corrupt or truncated after" in report.notes[0]
    # The first frame's documents, but for those still in the last read buffer (8 KiB) when the damage is hit.
    assert docs == many[: len(docs)] and len(docs) > len(many) - 8192 * 2 // 40


def test_broken_parquet_footer_and_damaged_page(formats, tmp_path):
    data = formats["parquet"].read_bytes()
    (tmp_path / "footer.parquet").write_bytes(data[:-100])
    report = CorpusReport()
    assert list(read_corpus(tmp_path / "footer.parquet", report)) == []  # without a footer nothing is locatable
    assert report.corrupt_files == 1 and report.files == 1
    # A damaged page of the third row group: the two row groups before it arrive.
    pq.write_table(pa.table({"text": [d.text for d in DOCS], "lang": [d.lang for d in DOCS]}),
                   tmp_path / "good.parquet", row_group_size=64, write_page_checksum=True, compression="zstd")
    meta = pq.ParquetFile(tmp_path / "good.parquet").metadata
    damaged = bytearray((tmp_path / "good.parquet").read_bytes())
    column = meta.row_group(2).column(0)
    start = column.dictionary_page_offset if column.has_dictionary_page else column.data_page_offset
    damaged[start + column.total_compressed_size // 2] ^= 0xFF
    (tmp_path / "page.parquet").write_bytes(bytes(damaged))
    report = CorpusReport()
    docs = list(read_corpus(tmp_path / "page.parquet", report))
    assert report.corrupt_files == 1 and docs == DOCS[:128]


def test_corrupt_files_are_counted_by_prepare_with_the_good_ones_stored(formats, tmp_path, tokenizer):
    root = tmp_path / "mixed"
    root.mkdir()
    data = formats["jsonl.gz"].read_bytes()
    (root / "a_cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    (root / "b_good.jsonl").write_bytes(jsonl_bytes(DOCS[:5]))
    prepared = prepare_corpus([root], tokenizer.path, tmp_path / "out", progress=False, dedup=False)
    assert prepared.report["corrupt_files"] == 1
    assert prepared.report["documents"] > 5


# Parts of a large file: every split point gives the documents of the whole file, once each, in order.
LINE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\0"), max_size=30)


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(LINE, min_size=1, max_size=25), part_bytes=st.integers(1, 120), crlf=st.booleans(),
       bom=st.booleans(), limit=st.sampled_from([8, 4096]), jsonl=st.booleans())
def test_parts_of_a_file_give_exactly_the_documents_of_the_whole(tmp_path_factory, lines, part_bytes, crlf,
                                                                 bom, limit, jsonl):
    end = b"\r\n" if crlf else b"\n"
    body = (jsonl_bytes([Document("en", line) for line in lines]) if jsonl
            else end.join(line.encode() for line in lines) + end)
    path = tmp_path_factory.mktemp("parts") / ("f.jsonl" if jsonl else "f.txt")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + body)
    whole_report = CorpusReport()
    whole = list(read_corpus(path, whole_report, lang="en", max_document_bytes=limit))
    tasks, _ = plan_tasks([path], None, "en", path.parent / "out", part_bytes=part_bytes)
    assert len(tasks) == -(-path.stat().st_size // part_bytes)  # ceil: parts tile the file
    report = CorpusReport()
    parts = [doc for task in tasks for doc in read_file(task.file, report, limit)]
    assert parts == whole
    counts = {k: v for k, v in report.to_dict().items() if k != "notes"}
    assert counts == {k: v for k, v in whole_report.to_dict().items() if k != "notes"}


def test_a_binary_file_is_counted_once_however_many_parts(tmp_path):
    (tmp_path / "blob.txt").write_bytes(b"\0\1\2" * 3000)
    tasks, _ = plan_tasks([tmp_path / "blob.txt"], None, None, tmp_path / "out", part_bytes=1000)
    report = CorpusReport()
    assert len(tasks) == 9 and [d for t in tasks for d in read_file(t.file, report)] == []
    assert (report.files, report.binary_files) == (1, 1)
    assert isinstance(tasks[3].file, CorpusFile) and tasks[3].file.span == (3000, 4000)


def test_a_prepared_parquet_split_by_row_groups_equals_the_whole(formats, tmp_path, tokenizer):
    split = prepare_corpus([formats["parquet"]], tokenizer.path, tmp_path / "split", progress=False,
                           part_bytes=1024)
    whole = prepare_corpus([formats["parquet"]], tokenizer.path, tmp_path / "whole", progress=False)
    assert len(split.manifest["shards"]) == len(whole.manifest["shards"])
    for a, b in zip(split.shards, whole.shards):
        assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.offsets, b.offsets)
    tasks, _ = plan_tasks([formats["parquet"]], None, None, tmp_path / "x", part_bytes=1024)
    assert len(tasks) > 1 and all(t.file.span is not None for t in tasks)
    assert PreparedCorpus.open(tmp_path / "split").report == whole.report


def test_corpus_data_source_prepares_any_format_with_the_filters(formats, tmp_path, tokenizer):
    """`data=corpus` takes the preparation options; a changed filter prepares a new cache entry."""
    from seqlab_plugins.data.corpus import CorpusDataConfig, CorpusSource

    eval_file = tmp_path / "eval.txt"
    eval_file.write_text(DOCS[3].text + "\n", encoding="utf-8")  # 3-grams of one of the 8 texts
    base = dict(paths=[str(formats["parquet"]), str(formats["json.gz"])], prepare_workers=1, ngram=3)
    cache = tmp_path / "cache"
    filtered = CorpusSource(CorpusDataConfig(**base, decontaminate=[str(eval_file)])).prepared_dir(tokenizer, cache)
    plain = CorpusSource(CorpusDataConfig(**base, dedup=False)).prepared_dir(tokenizer, cache)
    assert filtered != plain
    kept, everything = PreparedCorpus.open(filtered), PreparedCorpus.open(plain)
    # docs.parquet repeats c4-docs.json.gz's documents: deduplication keeps the copies of "c4-docs", the first
    # source in output order; contamination removes the documents sharing a 3-gram with the evaluation text.
    removed = kept.manifest["preparation"]["removed"]
    assert removed["duplicates"]["c4-docs"]["documents"] == 0 and removed["duplicates"]["docs"]["documents"] > 0
    assert removed["contamination"]["eval"]["documents"] > 0
    assert sum(s.n_docs for s in everything.shards) == 2 * len(DOCS)
    contaminated = kept.report["contaminated_documents"]
    assert kept.report["duplicate_documents"] == len(DOCS) - contaminated // 2  # a contaminated copy is not one
    assert sum(s.n_docs for s in kept.shards) == len(DOCS) - contaminated // 2
    assert CorpusSource(CorpusDataConfig(**base, decontaminate=[str(eval_file)])).prepared_dir(tokenizer,
                                                                                                cache) == filtered
