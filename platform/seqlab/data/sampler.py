"""Seeded, resumable sampler over prepared shards (a hot path: everything is vectorised).

Every step, the objective first plans its rows (how many raw tokens each needs, packed slice or whole
document, which child objective gets it); then each row of every data-parallel rank draws the view it comes
from (per-language alpha sampling, per-source weights) and takes the next tokens (or document) of that view's
stream (see streams.py). So documents are packed back to back, a document longer than a sequence continues in
a later one, and nothing is dropped.

Plans and draws depend only on (seed, step), so every consumer (rank x data-loader worker) replays all of them,
which is cheap, and materialises only its own batches. The state after a step is (step, stream cursors):
saving it in a checkpoint and passing it back resumes the exact same stream.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np

from seqlab.data.store import Shard
from seqlab.data.streams import Stream, ViewStreams, ragged_arange
from seqlab.errors import ConfigError, DataError
from seqlab.interfaces import RowPlan, Rows
from seqlab.tokenizer import PAD_ID


Planner = Callable[[int, np.random.Generator], RowPlan]  # an objective's `plan`


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


class Draw(NamedTuple):
    """Everything decided for one step, for all R replicas x B rows."""

    choice: np.ndarray  # (R, B) view of each row
    start: np.ndarray  # (R, B) packed rows: stream position; document rows: document number in the view
    plan: RowPlan  # R * B rows, replica-major


class PackingSampler:
    """Yields (step, Rows, state after the step) for one consumer (a rank's data-loader worker)."""

    def __init__(self, views: Sequence[ShardView], probs: np.ndarray, *, planner: Planner, batch_size: int,
                 separator_id: int, seed: int, num_replicas: int = 1, rank: int = 0):
        self.streams = ViewStreams(views, separator_id, seed)
        self.views = self.streams.views
        self.probs = probs
        self.planner = planner
        self.batch_size = batch_size
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.step = 0
        self.cursors = np.zeros(len(self.views), dtype=np.int64)  # packed tokens read from each view
        self.doc_cursors = np.zeros(len(self.views), dtype=np.int64)  # documents read whole from each view

    def fingerprint(self) -> list[str]:
        return [f"{v.name}:{len(v.docs)}:{n}" for v, n in zip(self.views, self.streams.stream_len)]

    def state_dict(self) -> dict:
        return {"step": self.step, "cursors": self.cursors.tolist(), "doc_cursors": self.doc_cursors.tolist(),
                "seed": self.seed, "views": self.fingerprint()}

    def load_state_dict(self, state: Mapping) -> None:
        if list(state["views"]) != self.fingerprint() or state["seed"] != self.seed:
            raise DataError("the sampler state in the checkpoint was made for other data or another seed: "
                            f"checkpoint views {state['views']} seed {state['seed']}, "
                            f"this run {self.fingerprint()} seed {self.seed}")
        self.step = int(state["step"])
        self.cursors = np.asarray(state["cursors"], dtype=np.int64)
        self.doc_cursors = np.asarray(state["doc_cursors"], dtype=np.int64)

    def _draw(self, step: int) -> Draw:
        """Plan, views and stream positions of every row of one step; advances the cursors."""
        n = self.num_replicas * self.batch_size
        plan = self.planner(n, np.random.default_rng((Stream.PLAN, self.seed, step)))
        rng = np.random.default_rng((Stream.DRAW, self.seed, step))
        choice = rng.choice(len(self.views), size=n, p=self.probs)
        # A row starts where the earlier rows of its view, in (replica, row) order, stopped reading: packed
        # rows consume their length in tokens, document rows one document, each kind with its own cursor.
        order = np.argsort(choice, kind="stable")
        group_first = np.searchsorted(choice[order], choice[order], side="left")

        def consumed_before(amount: np.ndarray) -> np.ndarray:  # exclusive sum within each view's rows
            ordered = amount[order]
            before = np.cumsum(ordered) - ordered
            out = np.empty(n, dtype=np.int64)
            out[order] = before - before[group_first]
            return out

        tokens = np.where(plan.document, 0, plan.length)
        docs = plan.document.astype(np.int64)
        start = np.where(plan.document, self.doc_cursors[choice] + consumed_before(docs),
                         self.cursors[choice] + consumed_before(tokens))
        self.cursors = self.cursors + np.bincount(choice, weights=tokens, minlength=len(self.views)).astype(np.int64)
        self.doc_cursors = self.doc_cursors + np.bincount(choice, weights=docs,
                                                          minlength=len(self.views)).astype(np.int64)
        shape = (self.num_replicas, self.batch_size)
        return Draw(choice.reshape(shape), start.reshape(shape), plan)

    def materialise(self, choice: np.ndarray, start: np.ndarray, plan: RowPlan) -> Rows:
        """One replica's (B,) views, positions and plan -> Rows (B, longest row), right-padded."""
        lengths = plan.length.copy()
        pieces = []
        for v in np.unique(choice):
            for document in (False, True):
                rows = np.flatnonzero((choice == v) & (plan.document == document))
                if not len(rows):
                    continue
                if document:
                    tokens, lengths[rows] = self.streams.documents(int(v), start[rows], plan.length[rows])
                else:
                    tokens = self.streams.packed(int(v), start[rows], plan.length[rows])
                pieces.append((rows, tokens))
        width = int(lengths.max())
        out = np.full((len(choice), width), PAD_ID, dtype=np.int64)
        for rows, tokens in pieces:
            if (lengths[rows] == width).all():  # full rows (the usual packed batch): a plain row copy
                out[rows] = tokens.reshape(len(rows), width)
            else:
                out.reshape(-1)[np.repeat(rows * width, lengths[rows]) + ragged_arange(lengths[rows])] = tokens
        return Rows(out, lengths, plan)

    def iterate(self, consumer: int = 0, num_consumers: int = 1) -> Iterator[tuple[int, Rows, dict]]:
        """Endless (step, rows, state after step) for the steps owned by `consumer`.

        Consumers take turns from the step they start at, not from step 0: a DataLoader reads its workers
        round-robin from worker 0, so after resuming at an odd step, ownership by `step % n` would hand out
        batches out of order.
        """
        first = self.step
        B = self.batch_size
        while True:
            step = self.step
            draw = self._draw(step)
            self.step += 1
            if (step - first) % num_consumers == consumer:
                mine = np.arange(self.rank * B, (self.rank + 1) * B)
                yield step, self.materialise(draw.choice[self.rank], draw.start[self.rank], draw.plan.select(mine)), \
                    self.state_dict()
