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

from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import numpy as np

from seqlab.data.store import Shard
from seqlab.errors import ConfigError, DataError


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

    The held-out set depends only on `seed` and the shard, not on the training seed, so validation losses of
    runs with different training seeds are comparable.
    """
    train, val = [], []
    for i, shard in enumerate(shards):
        n = shard.n_docs
        n_val = min(n - 1, max(1 if val_fraction > 0 and n > 1 else 0, int(round(n * val_fraction))))
        held = np.zeros(n, dtype=bool)
        held[np.random.default_rng((seed, i, n)).permutation(n)[:n_val]] = True
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
        # (V,) tokens in one epoch of each view's stream, separators included
        self._stream_len = np.array([int(v.lengths.sum()) + len(v.docs) for v in self.views], dtype=np.int64)
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
        rng = np.random.default_rng((self.seed, step))
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
        """(document ids in this epoch's order, stream start of each) for view v; a small LRU cache."""
        key = (v, epoch)
        if key not in self._epochs:
            view = self.views[v]
            order = view.docs[np.random.default_rng((self.seed, 1, v, epoch)).permutation(len(view.docs))]
            starts = np.zeros(len(order) + 1, dtype=np.int64)
            np.cumsum(view.shard.lengths[order] + 1, out=starts[1:])
            self._epochs[key] = (order, starts)
            if len(self._epochs) > 2 * len(self.views):
                self._epochs.popitem(last=False)
        self._epochs.move_to_end(key)
        return self._epochs[key]

    def _gather(self, v: int, pos: np.ndarray) -> np.ndarray:
        """Token ids at stream positions `pos` (any shape) of view v."""
        shard = self.views[v].shard
        epoch, local = np.divmod(pos, self._stream_len[v])
        out = np.empty(pos.shape, dtype=np.int64)
        for e in np.unique(epoch):  # one or two epochs per batch, never one per token
            sel = epoch == e
            order, starts = self._epoch(v, int(e))
            slot = np.searchsorted(starts, local[sel], side="right") - 1
            offset = local[sel] - starts[slot]
            doc = order[slot]
            length = shard.lengths[doc]
            is_separator = offset >= length
            index = shard.offsets[doc] + np.minimum(offset, np.maximum(length - 1, 0))
            out[sel] = np.where(is_separator, self.separator_id, shard.tokens[index])
        return out

    def materialise(self, choice: np.ndarray, start: np.ndarray) -> np.ndarray:
        """(B,) views and stream starts -> (B, raw_len) token ids."""
        pos = start[:, None] + np.arange(self.raw_len, dtype=np.int64)  # (B, raw_len)
        tokens = np.empty(pos.shape, dtype=np.int64)
        for v in np.unique(choice):
            rows = choice == v
            tokens[rows] = self._gather(int(v), pos[rows])
        return tokens

    def iterate(self, consumer: int = 0, num_consumers: int = 1) -> Iterator[tuple[int, np.ndarray, dict]]:
        """Endless (step, tokens, state after step) for steps owned by `consumer` (step % num_consumers)."""
        while True:
            step = self.step
            choice, start = self._draw(step)
            self.step += 1
            if step % num_consumers == consumer:
                yield step, self.materialise(choice[self.rank], start[self.rank]), self.state_dict()
