"""Seeded, resumable packing sampler over prepared shards (a hot path: everything is vectorised).

Each shard view is read as an endless stream: epoch e is a seeded permutation of the view's documents, each
followed by one separator token ([DOC]), laid end to end. Every step draws, for each sequence of every
data-parallel rank, the view it comes from (per-language alpha sampling, per-source weights); the sequence
then takes the next `raw_len` tokens of that view's stream. So documents are packed back to back, a document
longer than a sequence simply continues in a later one, and nothing is dropped.

Draws depend only on (seed, step), so every consumer (rank x data-loader worker) replays all draws, which is
cheap, and materialises only its own batches. The state after a step is just (step, stream cursors): saving it
in a checkpoint and passing it back resumes the exact same stream.
"""
from __future__ import annotations

import zlib
from collections import OrderedDict
from dataclasses import dataclass
from enum import IntEnum
from typing import Iterator, Mapping, Sequence

import numpy as np

from seqlab.data.store import Shard
from seqlab.errors import ConfigError, DataError


class Stream(IntEnum):
    """First word of every random stream's seed, so no two uses of the run seed ever share a stream.

    numpy pads seed tuples with zeros, so (seed, 1) and (seed, 1, 0, 0) are the same stream: tags differ at a
    fixed position and each tag's tuples have a fixed length.
    """

    DRAW = 1  # (tag, seed, step): which view each sequence of a step comes from
    ORDER = 2  # (tag, seed, view, epoch): document order of a view in one epoch
    SPLIT = 3  # (tag, seed, shard-name hash, n_docs): held-out documents of a shard
    NOISE = 4  # (tag, seed, step, rank): the objective's randomness for one batch


@dataclass(frozen=True)
class ShardView:
    """The documents of one shard that belong to one split (train or validation)."""

    shard: Shard
    docs: np.ndarray  # (n,) int64 document ids, ascending

    @property
    def name(self) -> str:
        return self.shard.name

    @property
    def lengths(self) -> np.ndarray:  # (n,) int64 tokens per document
        return self.shard.lengths[self.docs]

    @property
    def n_tokens(self) -> int:
        return int(self.lengths.sum())


def split_views(shards: Sequence[Shard], val_fraction: float, seed: int = 0) -> tuple[list[ShardView], list[ShardView]]:
    """Hold out `val_fraction` of each shard's documents (at least one when the shard has two or more).

    The held-out set depends only on `seed` and the shard itself (its name and size; not its position among
    the shards, nor the training seed), so filtering languages or adding a source never moves a document
    between training and validation, and validation losses of different runs are comparable.
    """
    train, val = [], []
    for shard in shards:
        n = shard.n_docs
        n_val = min(n - 1, max(1 if val_fraction > 0 and n > 1 else 0, int(round(n * val_fraction))))
        held = np.zeros(n, dtype=bool)
        rng = np.random.default_rng((Stream.SPLIT, seed, zlib.crc32(shard.name.encode()), n))
        held[rng.permutation(n)[:n_val]] = True
        train.append(ShardView(shard, np.flatnonzero(~held)))
        if n_val:
            val.append(ShardView(shard, np.flatnonzero(held)))
    return train, val


@dataclass(frozen=True)
class SamplingTable:
    probs: np.ndarray  # (V,) probability that a sequence comes from each view
    languages: list[str]
    p: np.ndarray  # (n_lang,) language shares of (weighted) tokens
    q: np.ndarray  # (n_lang,) sampling probabilities q_i = p_i^alpha / sum_j p_j^alpha


def sampling_table(views: Sequence[ShardView], alpha: float, weights: Mapping[str, float]) -> SamplingTable:
    """Per-language alpha sampling over token counts scaled by per-source weights (XLM-R / AlexaTM)."""
    if not views:
        raise DataError("no documents to sample from: every shard is empty or filtered out")
    eff = np.array([weights.get(v.shard.source, 1.0) * v.n_tokens for v in views], dtype=np.float64)
    if eff.sum() <= 0:
        raise ConfigError(f"data.weights={dict(weights)}: every source has weight 0 or no tokens")
    languages = sorted({v.shard.lang for v in views})
    lang_of = np.array([languages.index(v.shard.lang) for v in views])
    lang_tokens = np.bincount(lang_of, weights=eff, minlength=len(languages))
    p = lang_tokens / lang_tokens.sum()
    q = p**alpha
    q /= q.sum()
    # Within a language, views share its probability in proportion to their weighted tokens.
    within = np.divide(eff, lang_tokens[lang_of], out=np.zeros_like(eff), where=lang_tokens[lang_of] > 0)
    return SamplingTable(q[lang_of] * within, languages, p, q)


def ragged_arange(counts: np.ndarray) -> np.ndarray:
    """Concatenated aranges: [0..counts[0]), [0..counts[1]), ... without a Python loop."""
    total = int(counts.sum())
    return np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)


class PackingSampler:
    """Yields (tokens (B, raw_len) int64, state after the step) for one consumer of the stream."""

    def __init__(self, views: Sequence[ShardView], probs: np.ndarray, *, raw_len: int, batch_size: int,
                 separator_id: int, seed: int, num_replicas: int = 1, rank: int = 0):
        self.views = list(views)
        self.probs = probs
        self.raw_len = raw_len
        self.batch_size = batch_size
        self.separator_id = separator_id
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        # Lengths of every document of each view's shard, computed once: np.diff over a shard's offsets would
        # otherwise read the whole index for every batch.
        self._doc_lengths = [v.shard.lengths for v in self.views]
        # (V,) tokens in one epoch of each view's stream, separators included
        self._stream_len = np.array([int(n[v.docs].sum()) + len(v.docs) for v, n in zip(self.views, self._doc_lengths)],
                                    dtype=np.int64)
        self._epochs: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.step = 0
        self.cursors = np.zeros(len(self.views), dtype=np.int64)

    def fingerprint(self) -> list[str]:
        return [f"{v.name}:{len(v.docs)}:{n}" for v, n in zip(self.views, self._stream_len)]

    def state_dict(self) -> dict:
        return {"step": self.step, "cursors": self.cursors.tolist(), "seed": self.seed,
                "views": self.fingerprint()}

    def load_state_dict(self, state: Mapping) -> None:
        if list(state["views"]) != self.fingerprint() or state["seed"] != self.seed:
            raise DataError("the sampler state in the checkpoint was made for other data or another seed: "
                            f"checkpoint views {state['views']} seed {state['seed']}, "
                            f"this run {self.fingerprint()} seed {self.seed}")
        self.step = int(state["step"])
        self.cursors = np.asarray(state["cursors"], dtype=np.int64)

    def _draw(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Views and stream offsets of all (replica, row) sequences of one step: two (R, B) arrays."""
        rng = np.random.default_rng((Stream.DRAW, self.seed, step))
        choice = rng.choice(len(self.views), size=(self.num_replicas, self.batch_size), p=self.probs)
        flat = choice.ravel()
        counts = np.bincount(flat, minlength=len(self.views))
        # Occurrence number of each sequence among those of the same view, in (replica, row) order.
        order = np.argsort(flat, kind="stable")
        occurrence = np.empty_like(flat)
        occurrence[order] = np.arange(flat.size) - np.repeat(np.cumsum(counts) - counts, counts)
        start = self.cursors[flat] + occurrence * self.raw_len
        self.cursors = self.cursors + counts * self.raw_len
        return choice, start.reshape(choice.shape)

    def _epoch(self, v: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(document ids in this epoch's order, stream start of each slot + the end) for view v; a small LRU.

        Slot j holds document order[j] at stream positions [starts[j], starts[j+1] - 1), then one separator.
        """
        key = (v, epoch)
        if key not in self._epochs:
            view = self.views[v]
            rng = np.random.default_rng((Stream.ORDER, self.seed, v, epoch))
            order = view.docs[rng.permutation(len(view.docs))]
            starts = np.zeros(len(order) + 1, dtype=np.int64)
            np.cumsum(self._doc_lengths[v][order] + 1, out=starts[1:])
            self._epochs[key] = (order, starts)
            if len(self._epochs) > 2 * len(self.views):
                self._epochs.popitem(last=False)
        self._epochs.move_to_end(key)
        return self._epochs[key]

    def _gather_epoch(self, v: int, epoch: int, lo: np.ndarray, length: np.ndarray) -> np.ndarray:
        """Tokens of k stream pieces [lo, lo + length) inside one epoch of view v, concatenated: (sum(length),).

        Each piece is cut into segments, one per document slot it touches; a segment is a contiguous slice of
        the shard's token file, so the gather index is one arange shifted per segment. Work is per token only
        in numpy, per segment only in `np.repeat`.
        """
        order, starts = self._epoch(v, epoch)
        shard = self.views[v].shard
        first = np.searchsorted(starts, lo, side="right") - 1  # (k,) slot of each piece's first token
        last = np.searchsorted(starts, lo + length - 1, side="right") - 1
        n_segments = last - first + 1
        piece = np.repeat(np.arange(len(lo)), n_segments)
        slot = np.repeat(first, n_segments) + ragged_arange(n_segments)  # (S,)
        seg_lo = np.maximum(starts[slot], lo[piece])
        seg_hi = np.minimum(starts[slot + 1], lo[piece] + length[piece])
        seg_len = seg_hi - seg_lo
        dst = np.cumsum(seg_len) - seg_len  # (S,) where each segment starts in the output
        index = np.repeat(shard.offsets[order[slot]] - starts[slot] + seg_lo - dst, seg_len)
        index += np.arange(len(index))
        # A separator's position maps one past its document, which for the shard's last document is out of
        # range: clip, then overwrite separators below.
        np.minimum(index, shard.n_tokens - 1, out=index)
        tokens = shard.tokens[index].astype(np.int64)
        reaches_separator = seg_hi == starts[slot + 1]
        tokens[(dst + seg_len - 1)[reaches_separator]] = self.separator_id
        return tokens

    def _gather_rows(self, v: int, start: np.ndarray) -> np.ndarray:
        """(n,) stream starts in view v -> (n, raw_len) tokens. Rows crossing an epoch end are cut in pieces."""
        L, T = self.raw_len, self._stream_len[v]
        first, last = start // T, (start + L - 1) // T
        n_pieces = last - first + 1
        row = np.repeat(np.arange(len(start)), n_pieces)
        epoch = np.repeat(first, n_pieces) + ragged_arange(n_pieces)  # pieces in row-major order
        lo = np.maximum(start[row], epoch * T)
        length = np.minimum(start[row] + L, (epoch + 1) * T) - lo
        if len(lo) == len(start) and first.min() == first.max():  # the common case: one epoch, whole rows
            return self._gather_epoch(v, int(first[0]), lo - first[0] * T, length).reshape(-1, L)
        out = np.empty(len(start) * L, dtype=np.int64)
        dst = np.cumsum(length) - length
        for e in np.unique(epoch):  # a handful of epochs, never one per token
            sel = epoch == e
            positions = np.repeat(dst[sel], length[sel]) + ragged_arange(length[sel])
            out[positions] = self._gather_epoch(v, int(e), lo[sel] - e * T, length[sel])
        return out.reshape(-1, L)

    def materialise(self, choice: np.ndarray, start: np.ndarray) -> np.ndarray:
        """(B,) views and stream starts -> (B, raw_len) token ids."""
        tokens = np.empty((len(choice), self.raw_len), dtype=np.int64)
        for v in np.unique(choice):
            rows = choice == v
            tokens[rows] = self._gather_rows(int(v), start[rows])
        return tokens

    def iterate(self, consumer: int = 0, num_consumers: int = 1) -> Iterator[tuple[int, np.ndarray, dict]]:
        """Endless (step, tokens, state after step) for the steps owned by `consumer`.

        Consumers take turns from the step they start at, not from step 0: a DataLoader reads its workers
        round-robin from worker 0, so after resuming at an odd step, ownership by `step % n` would hand out
        batches out of order.
        """
        first = self.step
        while True:
            step = self.step
            choice, start = self._draw(step)
            self.step += 1
            if (step - first) % num_consumers == consumer:
                yield step, self.materialise(choice[self.rank], start[self.rank]), self.state_dict()
