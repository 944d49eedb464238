"""Which documents a prepared corpus leaves out: exact duplicates and documents contaminated by evaluation data.

Workers compute, for every document they encode, a `DOC_META` row: where it came from, the 128-bit hash of
its normalised text (`textnorm`) and the bits of the evaluation sets it shares an n-gram with. Selection then
runs once over all rows, in output order, when the parts are joined (`seqlab.data.merge`), so whether one job
or many prepared the parts, the same documents stay:

- a contaminated document is removed, counted under every evaluation set it overlaps;
- of the remaining documents with one normalised text, the first in output order (source, language, file,
  position) is kept, within and across sources; the others are counted as duplicates of their source.

Every removed document is listed in removed.jsonl beside the manifest, with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from seqlab.data.decontaminate import EvalNgrams
from seqlab.data.textnorm import document_hash, normalize

# position: byte offset in the (decompressed) file, or row; hash: of the normalised text; contamination: bits.
DOC_META = np.dtype([("position", "<i8"), ("hash", "<u8", (2,)), ("contamination", "<u8")])


@dataclass(frozen=True)
class Filters:
    dedup: bool = True
    eval_ngrams: EvalNgrams | None = None

    @property
    def active(self) -> bool:
        return self.dedup or self.eval_ngrams is not None

    def describe(self) -> dict[str, Any]:
        """What the manifest records, and what parts prepared apart must agree on."""
        return {"dedup": self.dedup,
                "decontamination": self.eval_ngrams.describe() if self.eval_ngrams is not None else None}

    def document_meta(self, texts: Sequence[str], positions: Sequence[int]) -> np.ndarray:
        """(n_docs,) DOC_META rows of one batch of documents."""
        meta = np.zeros(len(texts), dtype=DOC_META)
        meta["position"] = positions
        if not self.active:
            return meta
        normalized = [normalize(text) for text in texts]
        if self.dedup:
            digests = b"".join(document_hash(norm, raw) for norm, raw in zip(normalized, texts))
            meta["hash"] = np.frombuffer(digests, dtype="<u8").reshape(-1, 2)
        if self.eval_ngrams is not None:
            meta["contamination"] = self.eval_ngrams.flags(normalized)
        return meta


@dataclass
class Selection:
    keep: np.ndarray  # (n_docs,) bool over all documents in output order
    duplicate_of: np.ndarray  # (n_docs,) int64: the kept document a duplicate repeats, -1 for others
    contaminated: np.ndarray  # (n_docs,) bool


def select(meta: np.ndarray, dedup: bool) -> Selection:
    """The documents to store, given every document's DOC_META row in output order."""
    n = len(meta)
    contaminated = meta["contamination"] != 0
    duplicate_of = np.full(n, -1, dtype=np.int64)
    if dedup and n:
        candidates = np.flatnonzero(~contaminated)
        # Sort by hash, then by position in the output, so each run of equal hashes starts with its first.
        # One expression per step, so that its temporaries are freed at once: this runs over every document.
        order = candidates[np.lexsort((candidates, meta["hash"][candidates, 1], meta["hash"][candidates, 0]))]
        del candidates
        sorted_hashes = meta["hash"][order]
        starts = np.ones(len(order), dtype=bool)
        starts[1:] = np.any(sorted_hashes[1:] != sorted_hashes[:-1], axis=1)
        del sorted_hashes
        first = np.where(starts, np.arange(len(order)), 0)
        np.maximum.accumulate(first, out=first)  # the index, in `order`, of the run's first document
        repeats = ~starts
        duplicate_of[order[repeats]] = order[first[repeats]]
    keep = ~contaminated & (duplicate_of < 0)
    return Selection(keep, duplicate_of, contaminated)


def removal_counts(selection: Selection, meta: np.ndarray, lengths: np.ndarray, sources: Sequence[str],
                   source_of: np.ndarray, dedup: bool, set_names: Sequence[str]) -> dict[str, Any]:
    """Documents and tokens removed: duplicates per source (`source_of`: (n_docs,) index into `sources`),
    contamination per evaluation set."""
    duplicate = selection.duplicate_of >= 0
    out: dict[str, Any] = {}
    if dedup:
        out["duplicates"] = {source: {"documents": int(np.count_nonzero(duplicate & (source_of == i))),
                                      "tokens": int(lengths[duplicate & (source_of == i)].sum())}
                             for i, source in enumerate(sources)}
    if set_names:
        sets = {}
        for bit, name in enumerate(set_names):
            hit = (meta["contamination"] >> np.uint64(bit)) & np.uint64(1) == 1
            sets[name] = {"documents": int(np.count_nonzero(hit)), "tokens": int(lengths[hit].sum())}
        out["contamination"] = sets
    return out
