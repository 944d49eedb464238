"""Reading shard views as endless, epoch-shuffled streams (a hot path: no Python loop per token or document).

Each view is read two ways, with independent cursors:
- packed: epoch e is a seeded permutation of the view's documents, each followed by one separator ([DOC]),
  laid end to end; a row is any slice of that stream, so documents are packed back to back and a document
  longer than a row continues in the next row cut from the same view;
- documents: the n-th document of the same epoch orders, one per row, cut to the row's length.
"""
from __future__ import annotations

from collections import OrderedDict
from enum import IntEnum
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from seqlab.data.sampler import ShardView


class Stream(IntEnum):
    """First word of every random stream's seed, so no two uses of the run seed ever share a stream.

    numpy pads seed tuples with zeros, so (seed, 1) and (seed, 1, 0, 0) are the same stream: tags differ at a
    fixed position and each tag's tuples have a fixed length.
    """

    DRAW = 1  # (tag, seed, step): which view each sequence of a step comes from
    ORDER = 2  # (tag, seed, view, epoch): document order of a view in one epoch
    SPLIT = 3  # (tag, seed, shard-name hash, n_docs): held-out documents of a shard
    NOISE = 4  # (tag, seed, step, rank): the objective's randomness for one batch
    PLAN = 5  # (tag, seed, step): the objective's plan for a step (mixture choices, row lengths)
    MODEL = 6  # (tag, seed, step, rank, micro-batch): the model's own randomness (dropout) in one batch


def ragged_arange(counts: np.ndarray) -> np.ndarray:
    """Concatenated aranges: [0..counts[0]), [0..counts[1]), ... without a Python loop."""
    total = int(counts.sum())
    return np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)


class ViewStreams:
    def __init__(self, views: Sequence["ShardView"], separator_id: int, seed: int):
        self.views = list(views)
        self.separator_id = separator_id
        self.seed = seed
        # Lengths of every document of each view's shard, computed once: np.diff over a shard's offsets would
        # otherwise read the whole index for every batch.
        self._doc_lengths = [v.shard.lengths for v in self.views]
        self.n_docs = np.array([len(v.docs) for v in self.views], dtype=np.int64)  # (V,)
        # (V,) tokens in one epoch of each view's packed stream, separators included
        self.stream_len = np.array([int(n[v.docs].sum()) for v, n in zip(self.views, self._doc_lengths)],
                                   dtype=np.int64) + self.n_docs
        self._epochs: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def epoch(self, v: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
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
        order, starts = self.epoch(v, epoch)
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

    def packed(self, v: int, start: np.ndarray, length: np.ndarray) -> np.ndarray:
        """Rows [start, start + length) of view v's packed stream, concatenated: (sum(length),).

        Rows crossing the end of an epoch are cut into pieces, one per epoch.
        """
        T = self.stream_len[v]
        first, last = start // T, (start + length - 1) // T
        n_pieces = last - first + 1
        row = np.repeat(np.arange(len(start)), n_pieces)
        epoch = np.repeat(first, n_pieces) + ragged_arange(n_pieces)  # pieces in row order
        lo = np.maximum(start[row], epoch * T)
        piece_len = np.minimum(start[row] + length[row], (epoch + 1) * T) - lo
        if first.min() == last.max():  # the common case: the whole batch inside one epoch
            return self._gather_epoch(v, int(first[0]), lo - first[0] * T, piece_len)
        out = np.empty(int(length.sum()), dtype=np.int64)
        dst = np.cumsum(piece_len) - piece_len
        for e in np.unique(epoch):  # a handful of epochs, never one per token
            sel = epoch == e
            positions = np.repeat(dst[sel], piece_len[sel]) + ragged_arange(piece_len[sel])
            out[positions] = self._gather_epoch(v, int(e), lo[sel] - e * T, piece_len[sel])
        return out

    def documents(self, v: int, index: np.ndarray, limit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Documents number `index` of view v's document stream, each cut to its first `limit` tokens.

        Returns (tokens concatenated, (n,) lengths). Longer documents keep their beginning: a row is one
        document, as AlexaTM's CLM wants; the rest of the text is still read by packed rows.
        """
        epoch, slot = np.divmod(index, self.n_docs[v])
        doc = np.empty(len(index), dtype=np.int64)
        for e in np.unique(epoch):  # one or two epochs per batch
            sel = epoch == e
            doc[sel] = self.epoch(v, int(e))[0][slot[sel]]
        shard = self.views[v].shard
        lengths = np.minimum(self._doc_lengths[v][doc], limit)
        dst = np.cumsum(lengths) - lengths
        gather = np.repeat(shard.offsets[doc] - dst, lengths) + np.arange(int(lengths.sum()))
        return shard.tokens[gather].astype(np.int64), lengths
