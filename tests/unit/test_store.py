"""Prepared corpus format: write/open round trip, and every kind of corruption named by file."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from seqlab.data.store import MANIFEST, PreparedCorpus, check_tokenizer, token_dtype, write_manifest, write_shard
from seqlab.errors import DataError


def _fake_tokenizer(path: Path, vocab_size: int = 1000, sha: str = "a" * 64) -> SimpleNamespace:
    # store only needs a tokenizer's path, vocabulary size and checksum, not a SentencePiece model.
    return SimpleNamespace(path=path, vocab_size=vocab_size, sha256=lambda: sha)


def _write_parts(folder: Path, docs: list[list[int]], dtype: np.dtype) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    tokens, lengths = folder / "part.bin", folder / "part.len.npy"
    np.array([t for doc in docs for t in doc], dtype=dtype).tofile(tokens)
    np.save(lengths, np.array([len(doc) for doc in docs], dtype=np.int64))
    return tokens, lengths


def _prepare(root: Path, vocab_size: int = 1000) -> dict[str, list[list[int]]]:
    """Write a two-shard corpus whose first shard comes from two parts; return the documents of each shard."""
    dtype = token_dtype(vocab_size)
    docs = {"web/en": [[5, 6, 7], [vocab_size - 1], [8, 9]], "web/fr": [[10, 11, 12, 13]]}
    en_parts = [_write_parts(root / "parts" / "a", docs["web/en"][:2], dtype),
                _write_parts(root / "parts" / "b", docs["web/en"][2:], dtype)]
    shards = [write_shard(root, "web", "en", en_parts),
              write_shard(root, "web", "fr", [_write_parts(root / "parts" / "c", docs["web/fr"], dtype)])]
    write_manifest(root, _fake_tokenizer(root / "tok.model", vocab_size), shards, {"documents": 4})
    return docs


@pytest.mark.parametrize("vocab_size, dtype", [(1000, np.uint16), (65535, np.uint16), (70000, np.uint32)])
def test_round_trip(tmp_path, vocab_size, dtype):
    docs = _prepare(tmp_path, vocab_size)
    prepared = PreparedCorpus.open(tmp_path)
    assert [shard.name for shard in prepared.shards] == list(docs)
    for shard in prepared.shards:
        assert shard.tokens.dtype == dtype and isinstance(shard.tokens, np.memmap)
        assert shard.n_docs == len(docs[shard.name])
        assert shard.n_tokens == sum(map(len, docs[shard.name]))
        assert shard.lengths.tolist() == [len(doc) for doc in docs[shard.name]]
        assert [shard.document(i).tolist() for i in range(shard.n_docs)] == docs[shard.name]
    assert prepared.vocab_size == vocab_size and prepared.tokenizer_sha256 == "a" * 64
    assert prepared.report == {"documents": 4}
    assert prepared.manifest["dtype"] == np.dtype(dtype).name


def _edit_manifest(root: Path, edit) -> None:
    manifest = json.loads((root / MANIFEST).read_text())
    edit(manifest)
    (root / MANIFEST).write_text(json.dumps(manifest))


CORRUPTIONS = {
    "no manifest": (lambda root: (root / MANIFEST).unlink(), MANIFEST, "run `seqlab data prepare"),
    "not json": (lambda root: (root / MANIFEST).write_text("{"), MANIFEST, "unreadable manifest"),
    "future format": (lambda root: _edit_manifest(root, lambda m: m.update(format=2)), MANIFEST, "unknown format 2"),
    "no tokenizer": (lambda root: _edit_manifest(root, lambda m: m.pop("tokenizer")), MANIFEST, "'tokenizer'"),
    "wrong dtype": (lambda root: _edit_manifest(root, lambda m: m.update(dtype="uint32")), MANIFEST, "dtype='uint32'"),
    "shard missing": (lambda root: (root / "web" / "fr.bin").unlink(), "fr.bin", "missing"),
    "index missing": (lambda root: (root / "web" / "en.idx.npy").unlink(), "en.idx.npy", "missing"),
    "truncated tokens": (lambda root: (root / "web" / "en.bin").write_bytes(b"\0" * 6), "en.bin", "6 bytes"),
    "index not npy": (lambda root: (root / "web" / "en.idx.npy").write_bytes(b"junk"), "en.idx.npy", "unreadable"),
    "offsets fall": (lambda root: np.save(root / "web" / "en.idx.npy", np.array([0, 3, 2, 6])), "en.idx.npy", "rise"),
    "offsets short": (lambda root: np.save(root / "web" / "en.idx.npy", np.array([0, 6])), "en.idx.npy", "expected 4"),
    "offsets end early": (lambda root: np.save(root / "web" / "en.idx.npy", np.array([0, 1, 2, 5])), "en.idx.npy",
                          "tokens_count=6"),
    "path escapes": (lambda root: _edit_manifest(root, lambda m: m["shards"][0].update(tokens="../en.bin")), MANIFEST,
                     "inside"),
    "empty shard": (lambda root: _edit_manifest(root, lambda m: m["shards"][0].update(documents=0)), MANIFEST,
                    "documents=0"),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corruption_is_a_data_error_naming_the_file(tmp_path, corruption):
    _prepare(tmp_path)
    corrupt, file_name, problem = CORRUPTIONS[corruption]
    corrupt(tmp_path)
    with pytest.raises(DataError, match=problem) as err:
        PreparedCorpus.open(tmp_path)
    assert str(tmp_path / "web" / file_name if file_name != MANIFEST else tmp_path / MANIFEST) in str(err.value)


def test_check_tokenizer_names_both_paths(tmp_path):
    _prepare(tmp_path)
    prepared = PreparedCorpus.open(tmp_path)
    check_tokenizer(prepared, _fake_tokenizer(tmp_path / "tok.model"))
    with pytest.raises(DataError) as err:
        check_tokenizer(prepared, _fake_tokenizer(tmp_path / "other.model", sha="b" * 64))
    assert str(tmp_path / "tok.model") in str(err.value) and str(tmp_path / "other.model") in str(err.value)
