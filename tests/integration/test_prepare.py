"""`seqlab data prepare` end to end, checked against counts and ids computed independently of seqlab's reader."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from seqlab.data.cli import add_data_commands
from seqlab.data.prepare import prepare_corpus
from seqlab.data.store import PreparedCorpus
from seqlab.errors import ConfigError, DataError

FLORES = {"en": "eng", "fr": "fra", "ja": "jpn"}


def _expected_ids(path: Path, model: Path) -> list[list[int]]:
    """Token ids of each non-blank line, read with plain Python and encoded by SentencePiece directly."""
    lines = [line.removesuffix("\r") for line in path.read_bytes().decode("utf-8").split("\n")]
    return spm.SentencePieceProcessor(model_file=str(model)).encode([line for line in lines if line.strip()])


def _assert_shard(prepared: PreparedCorpus, name: str, expected: list[list[int]]) -> None:
    shard = next(shard for shard in prepared.shards if shard.name == name)
    assert shard.n_docs == len(expected)
    assert shard.lengths.tolist() == [len(ids) for ids in expected]
    assert np.array_equal(shard.tokens, np.concatenate([np.asarray(ids) for ids in expected]))


def _tree(root: Path) -> dict[str, bytes]:
    """Every file's bytes, with the manifest's creation time removed (the only field that may differ)."""
    files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    manifest = json.loads(files.pop("manifest.json"))
    del manifest["created"]
    return {**files, "manifest.json": json.dumps(manifest).encode()}


@pytest.fixture(scope="module")
def embedded_files(embedded_corpus_dir) -> dict[str, Path]:
    files = {p.parent.name: p for p in sorted(embedded_corpus_dir.glob("*/sample.txt")) if p.stat().st_size}
    if not files:
        pytest.skip(f"no embedded corpus files under {embedded_corpus_dir}")
    return files


def test_embedded_corpus_exact_and_independent_of_workers(tmp_path, small_tokenizer, embedded_corpus_dir,
                                                         embedded_files):
    one = prepare_corpus([embedded_corpus_dir], small_tokenizer, tmp_path / "one", workers=1, progress=False)
    two = prepare_corpus([embedded_corpus_dir], small_tokenizer, tmp_path / "two", workers=2, progress=False)
    assert [shard.name for shard in one.shards] == [f"corpus/{lang}" for lang in sorted(embedded_files)]
    for lang, path in embedded_files.items():
        _assert_shard(one, f"corpus/{lang}", _expected_ids(path, small_tokenizer))
    assert one.report["documents"] == sum(shard.n_docs for shard in one.shards)
    assert _tree(one.path) == _tree(two.path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # no temporary folders left behind


def test_jsonl_languages_and_empty_documents(tmp_path, small_tokenizer):
    records = [{"text": "Hello world", "lang": "en"}, {"text": "\u200b", "lang": "en"},
               {"text": "Bonjour le monde", "lang": "fr"}, {"text": "no language"}]
    (tmp_path / "mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    prepared = prepare_corpus([tmp_path / "mixed.jsonl"], small_tokenizer, tmp_path / "out", progress=False)
    sp = spm.SentencePieceProcessor(model_file=str(small_tokenizer))
    assert sp.encode("\u200b") == []  # a zero-width space normalises away: the document has no token
    _assert_shard(prepared, "mixed/en", [sp.encode("Hello world")])
    _assert_shard(prepared, "mixed/fr", [sp.encode("Bonjour le monde")])
    _assert_shard(prepared, "mixed/und", [sp.encode("no language")])
    assert prepared.report["documents"] == 4 and prepared.report["empty_after_tokenization"] == 1


def test_output_is_replaced_only_when_asked(tmp_path, small_tokenizer):
    (tmp_path / "a.txt").write_text("first run\n", encoding="utf-8")
    out = tmp_path / "out"
    prepare_corpus([tmp_path / "a.txt"], small_tokenizer, out, progress=False)
    with pytest.raises(DataError, match="--overwrite"):
        prepare_corpus([tmp_path / "a.txt"], small_tokenizer, out, progress=False)
    (tmp_path / "a.txt").write_text("second run\nwith two documents\n", encoding="utf-8")
    prepared = prepare_corpus([tmp_path / "a.txt"], small_tokenizer, out, progress=False, overwrite=True)
    assert prepared.shards[0].n_docs == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "out"]


def test_bad_plans_are_refused(tmp_path, small_tokenizer):
    for name in ("a/eng.txt", "b/eng.txt", "bad/x.bin"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("text\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="both give source name 'eng'"):
        prepare_corpus([tmp_path / "a/eng.txt", tmp_path / "b/eng.txt"], small_tokenizer, tmp_path / "o")
    with pytest.raises(ConfigError, match="would overwrite input"):
        prepare_corpus([tmp_path / "a"], small_tokenizer, tmp_path, overwrite=True)
    with pytest.raises(DataError, match="no documents(.|\n)*skipped_files=1"):
        prepare_corpus([tmp_path / "bad"], small_tokenizer, tmp_path / "o", progress=False)
    with pytest.raises(ConfigError, match="workers=0"):
        prepare_corpus([tmp_path / "a"], small_tokenizer, tmp_path / "o", workers=0)
    assert not (tmp_path / "o").exists()


def test_cli_prints_report_and_shards(tmp_path, small_tokenizer, capsys):
    (tmp_path / "en.txt").write_text("one document\n\nanother document\n", encoding="utf-8")
    parser = argparse.ArgumentParser()
    add_data_commands(parser.add_subparsers())
    args = parser.parse_args(["data", "prepare", str(tmp_path / "en.txt"), "--tokenizer", str(small_tokenizer),
                              "--output", str(tmp_path / "out"), "--source", "web", "--lang", "en", "--workers", "1"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    tokens = sum(map(len, spm.SentencePieceProcessor(model_file=str(small_tokenizer)).encode(
        ["one document", "another document"])))
    assert "read 2 documents" in out and "blank_lines=1" in out
    assert f"web     en            2  {tokens:>6}".split() in [line.split() for line in out.splitlines()]
    assert str(tmp_path / "out") in out


@pytest.mark.shared_data
def test_flores_files_as_sources(tmp_path, shared_data, small_tokenizer):
    paths = [shared_data / "flores200" / "dev" / f"{code}.dev" for code in FLORES.values()]
    prepared = prepare_corpus(paths, small_tokenizer, tmp_path / "out", progress=False)
    for path in paths:
        _assert_shard(prepared, f"{path.stem}/und", _expected_ids(path, small_tokenizer))
    assert prepared.report["documents"] == 3 * 997 and prepared.report["blank_lines"] == 0


@pytest.mark.shared_data
def test_flores_folder_per_language_in_parallel(tmp_path, shared_data, small_tokenizer):
    # Links, not copies: the corpus layout without duplicating shared data.
    for lang, code in FLORES.items():
        (tmp_path / "flores" / lang).mkdir(parents=True)
        (tmp_path / "flores" / lang / "dev.txt").symlink_to(shared_data / "flores200" / "dev" / f"{code}.dev")
    prepared = prepare_corpus([tmp_path / "flores"], small_tokenizer, tmp_path / "out", workers=2, progress=False)
    assert [shard.name for shard in prepared.shards] == [f"flores/{lang}" for lang in sorted(FLORES)]
    for lang, code in FLORES.items():
        _assert_shard(prepared, f"flores/{lang}", _expected_ids(shared_data / "flores200" / "dev" / f"{code}.dev",
                                                                small_tokenizer))
