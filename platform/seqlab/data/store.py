"""The prepared corpus on disk: flat token files plus document offsets, memory-mapped for training.

    OUT/manifest.json
    OUT/<source>/<lang>.bin      token ids of all documents back to back (uint16, or uint32 for vocabularies
                                 over 65535 pieces); no separators, so any slice is a zero-copy view
    OUT/<source>/<lang>.idx.npy  int64 offsets, n_docs + 1 of them: document i is tokens[offsets[i]:offsets[i+1]]

Every stored document has at least one token, so offsets strictly increase. Opening validates sizes and
offsets but never reads the tokens, so it costs milliseconds for any corpus size.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from seqlab.errors import DataError
from seqlab.tokenizer import Tokenizer

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest dtype holding every id: halves disk and page-cache use for the common 32k vocabulary."""
    return np.dtype(np.uint16 if vocab_size <= 65535 else np.uint32)


def shard_files(source: str, lang: str) -> tuple[str, str]:
    """Paths of a shard's token and index files, relative to the prepared directory."""
    return f"{source}/{lang}.bin", f"{source}/{lang}.idx.npy"


@dataclass(frozen=True)
class Shard:
    """The documents of one language of one source."""

    source: str
    lang: str
    tokens: np.ndarray  # (n_tokens,) read-only memmap
    offsets: np.ndarray  # (n_docs + 1,) int64

    @property
    def name(self) -> str:
        return f"{self.source}/{self.lang}"

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def document(self, i: int) -> np.ndarray:
        """Token ids of document `i` (a view into the memory map)."""
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]


@dataclass(frozen=True)
class PreparedCorpus:
    """An opened prepared directory: its manifest and memory-mapped shards."""

    path: Path
    manifest: dict[str, Any]
    shards: list[Shard]

    @property
    def report(self) -> dict[str, Any]:
        return self.manifest["report"]

    @property
    def tokenizer_sha256(self) -> str:
        return self.manifest["tokenizer"]["sha256"]

    @property
    def vocab_size(self) -> int:
        return self.manifest["tokenizer"]["vocab_size"]

    @classmethod
    def open(cls, path: str | Path) -> PreparedCorpus:
        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise DataError(f"{manifest_path}: not found, so {path} is not a prepared corpus; run "
                            f"`seqlab data prepare CORPUS --tokenizer TOKENIZER.model --output {path}`")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DataError(f"{manifest_path}: unreadable manifest ({err})") from None
        _check_manifest(manifest, manifest_path)
        dtype = np.dtype(manifest["dtype"])
        shards = [_open_shard(path, entry, dtype) for entry in manifest["shards"]]
        return cls(path, manifest, shards)


def check_tokenizer(prepared: PreparedCorpus, tokenizer: Tokenizer) -> None:
    """Refuse to train on token ids that another tokenizer produced: they would silently mean other pieces."""
    if prepared.tokenizer_sha256 != tokenizer.sha256():
        raise DataError(
            f"{prepared.path} was prepared with tokenizer {prepared.manifest['tokenizer']['path']} "
            f"(sha256 {prepared.tokenizer_sha256[:12]}...), but the tokenizer in use is {tokenizer.path} "
            f"(sha256 {tokenizer.sha256()[:12]}...). Prepare the corpus again with this tokenizer or use the other."
        )


def write_shard(root: Path, source: str, lang: str, parts: Sequence[tuple[Path, Path]],
                keeps: Sequence[np.ndarray | None] | None = None) -> dict[str, Any]:
    """Concatenate part files, each (tokens .bin, lengths .npy), into one shard; return its manifest entry.

    `keeps` gives, per part, which documents to store ((n_docs,) bool), or None for all. A part kept whole is
    appended byte for byte and offsets come from one cumulative sum, so the cost is a file copy whatever the
    number of documents; a filtered part is copied a run of documents at a time.
    """
    tokens_rel, index_rel = shard_files(source, lang)
    (root / source).mkdir(parents=True, exist_ok=True)
    keeps = keeps if keeps is not None else [None] * len(parts)
    lengths = []
    with open(root / tokens_rel, "wb") as out:
        for (tokens_part, lengths_part), keep in zip(parts, keeps):
            part_lengths = np.load(lengths_part)
            if keep is None or keep.all():
                with open(tokens_part, "rb") as part:
                    shutil.copyfileobj(part, out, length=16 << 20)
                lengths.append(part_lengths)
            elif keep.any():
                _copy_kept(tokens_part, part_lengths, keep, out)
                lengths.append(part_lengths[keep])
    lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    np.save(root / index_rel, offsets)
    return {"source": source, "lang": lang, "tokens": tokens_rel, "index": index_rel,
            "documents": len(lengths), "tokens_count": int(offsets[-1])}


def _copy_kept(tokens_part: Path, lengths: np.ndarray, keep: np.ndarray, out: Any) -> None:
    """Append the kept documents' tokens, one contiguous run of kept documents per write."""
    raw = np.memmap(tokens_part, dtype=np.uint8, mode="r") if tokens_part.stat().st_size else np.zeros(0, np.uint8)
    width = raw.size // max(int(lengths.sum()), 1)  # bytes per token
    ends = np.cumsum(lengths) * width
    starts = ends - lengths * width
    # Runs of kept documents: where keep turns on, and where it turns off.
    edges = np.flatnonzero(np.diff(np.concatenate(([False], keep, [False])).astype(np.int8)))
    for first, last in zip(edges[::2], edges[1::2]):
        out.write(raw[starts[first]:ends[last - 1]])


def tokenizer_entry(tokenizer: Tokenizer) -> dict[str, Any]:
    """The manifest's record of the tokenizer that produced the ids."""
    return {"path": str(tokenizer.path.resolve()), "sha256": tokenizer.sha256(), "vocab_size": tokenizer.vocab_size}


def write_manifest(root: Path, tokenizer: Tokenizer | dict[str, Any], shards: list[dict[str, Any]],
                   report: dict[str, Any], preparation: dict[str, Any] | None = None) -> None:
    """Write manifest.json. `preparation` records the filters and options a corpus was prepared with. The time
    of creation is SOURCE_DATE_EPOCH where set (the reproducible-builds convention), so two preparations of
    the same inputs can be compared byte for byte."""
    entry = tokenizer if isinstance(tokenizer, dict) else tokenizer_entry(tokenizer)
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    created = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch else datetime.now(timezone.utc)
    manifest = {
        "format": FORMAT_VERSION,
        "tokenizer": entry,
        "dtype": token_dtype(entry["vocab_size"]).name,
        "shards": shards,
        "report": report,
        **({"preparation": preparation} if preparation is not None else {}),
        "created": created.isoformat(timespec="seconds"),
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _check_manifest(manifest: Any, where: Path) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise DataError(f"{where}: unknown format {found!r}; this seqlab reads format {FORMAT_VERSION}")
    tokenizer, shards = manifest.get("tokenizer"), manifest.get("shards")
    if not isinstance(tokenizer, dict) or not {"path", "sha256", "vocab_size"} <= tokenizer.keys():
        raise DataError(f"{where}: field 'tokenizer' must be an object with path, sha256 and vocab_size")
    if not isinstance(shards, list) or not all(isinstance(entry, dict) for entry in shards):
        raise DataError(f"{where}: field 'shards' must be a list of objects")
    if not isinstance(manifest.get("report"), dict):
        raise DataError(f"{where}: field 'report' must be an object")
    vocab_size = tokenizer["vocab_size"]
    if not isinstance(vocab_size, int) or manifest.get("dtype") != token_dtype(vocab_size).name:
        raise DataError(f"{where}: dtype={manifest.get('dtype')!r} does not fit tokenizer.vocab_size={vocab_size!r}")
    names = [(entry.get("source"), entry.get("lang")) for entry in shards]
    if len(set(names)) != len(names):
        raise DataError(f"{where}: a (source, lang) pair is listed twice in {names}")


def _open_shard(root: Path, entry: dict[str, Any], dtype: np.dtype) -> Shard:
    try:
        tokens_path, index_path = root / entry["tokens"], root / entry["index"]
        count, documents = int(entry["tokens_count"]), int(entry["documents"])
        source, lang = entry["source"], entry["lang"]
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{root / MANIFEST}: malformed shard entry {entry!r} ({err!r})") from None
    if documents < 1:
        raise DataError(f"{root / MANIFEST}: shard {source}/{lang} has documents={documents}; shards are never empty")
    for relative in (entry["tokens"], entry["index"]):
        if Path(relative).is_absolute() or ".." in Path(relative).parts:
            raise DataError(f"{root / MANIFEST}: shard path {relative!r} must lie inside {root}")
    for file in (tokens_path, index_path):
        if not file.is_file():
            raise DataError(f"{file}: shard file listed in {root / MANIFEST} is missing")
    size = tokens_path.stat().st_size
    if size != count * dtype.itemsize:
        raise DataError(f"{tokens_path}: {size} bytes, but the manifest says {count} tokens of {dtype.name} "
                        f"= {count * dtype.itemsize} bytes (truncated or overwritten?)")
    try:
        offsets = np.load(index_path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise DataError(f"{index_path}: unreadable index ({err})") from None
    if offsets.dtype != np.int64 or offsets.shape != (documents + 1,):
        raise DataError(f"{index_path}: expected {documents + 1} int64 offsets, found {offsets.shape} {offsets.dtype}")
    if offsets[0] != 0 or offsets[-1] != count or not np.all(np.diff(offsets) > 0):
        raise DataError(f"{index_path}: offsets must rise strictly from 0 to tokens_count={count} "
                        f"(first {offsets[0]}, last {offsets[-1]})")
    # np.memmap refuses empty files; count > 0 here because every document has a token.
    tokens = np.memmap(tokens_path, dtype=dtype, mode="r", shape=(count,))
    return Shard(source, lang, tokens, offsets)
