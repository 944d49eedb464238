"""Packing throughput: the vectorised PackingSampler against a per-document Python packer, on a memory-mapped store.

Both produce the same batches (checked before timing): the same per-step view draws (`_draw`) and the same
shuffled document order per epoch, so the only difference timed is how tokens are cut into sequences.
Run with `make bench`; results land in benchmarks/results/ and tokens/s in each benchmark's extra_info.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from seqlab.data.sampler import PackingSampler, sampling_table, split_views
from seqlab.data.store import PreparedCorpus, token_dtype, write_manifest, write_shard
from seqlab.interfaces import RowPlan

RAW_LEN = 1025  # seq_len 1024 plus the one token a causal LM shifts by
BATCH_SIZE = 64
STEPS = 16  # batches per timed round: ~1M tokens, long enough to dwarf timer overhead
VOCAB_SIZE = 32000
SEPARATOR = 5
# Tokens per language: a skewed, few-million-token mixture so alpha sampling draws every view each step.
LANGUAGE_TOKENS = {"en": 2_000_000, "fr": 1_000_000, "de": 600_000, "sw": 200_000}


def _document_lengths(rng: np.random.Generator, tokens: int) -> np.ndarray:
    # Log-normal lengths (median ~300 tokens) with a tail past RAW_LEN, so long documents span sequences.
    lengths = np.clip(rng.lognormal(np.log(300), 1.0, size=tokens // 100), 1, 20_000).astype(np.int64)
    lengths = lengths[np.cumsum(lengths) <= tokens]
    return np.append(lengths, tokens - lengths.sum()) if lengths.sum() < tokens else lengths


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> PreparedCorpus:
    """A prepared store written as `seqlab data prepare` writes it (parts -> write_shard), opened as memmaps."""
    root = tmp_path_factory.mktemp("bench") / "prepared"
    rng = np.random.default_rng(0)
    entries = []
    for lang, tokens in LANGUAGE_TOKENS.items():
        part = root.parent / "parts" / lang
        part.mkdir(parents=True)
        rng.integers(SEPARATOR + 1, VOCAB_SIZE, size=tokens, dtype=token_dtype(VOCAB_SIZE)).tofile(part / "t.bin")
        np.save(part / "t.len.npy", _document_lengths(rng, tokens))
        entries.append(write_shard(root, "web", lang, [(part / "t.bin", part / "t.len.npy")]))
    # The store needs only a tokenizer's path, vocabulary size and checksum, not a SentencePiece model.
    tokenizer = SimpleNamespace(path=Path("bench.model"), vocab_size=VOCAB_SIZE, sha256=lambda: "0" * 64)
    write_manifest(root, tokenizer, entries, {"documents": 0})
    prepared = PreparedCorpus.open(root)
    assert all(isinstance(shard.tokens, np.memmap) for shard in prepared.shards)
    return prepared


def new_sampler(corpus: PreparedCorpus) -> PackingSampler:
    views, _ = split_views(corpus.shards, 0.0)
    table = sampling_table(views, alpha=0.5, weights={})
    return PackingSampler(views, table.probs, planner=lambda n, rng: RowPlan.uniform(n, RAW_LEN),
                          batch_size=BATCH_SIZE, separator_id=SEPARATOR, seed=0)


def vectorised_batch(sampler: PackingSampler) -> np.ndarray:
    """What PackingSampler.iterate does per step, minus the state dict."""
    draw = sampler._draw(sampler.step)
    sampler.step += 1
    return sampler.materialise(draw.choice[0], draw.start[0], draw.plan).tokens


class PythonPacker:
    """The straightforward packer: one Python list per view; whole documents and a separator appended one at a
    time until a sequence is full, then sliced off the front. Draws and epoch orders come from a sampler."""

    def __init__(self, sampler: PackingSampler):
        self.sampler = sampler
        self.buffers: list[list[int]] = [[] for _ in sampler.views]
        self.next_doc = [(0, 0)] * len(sampler.views)  # (epoch, index into that epoch's document order)

    def _document(self, v: int) -> np.ndarray:
        epoch, i = self.next_doc[v]
        order, _ = self.sampler.streams.epoch(v, epoch)
        self.next_doc[v] = (epoch, i + 1) if i + 1 < len(order) else (epoch + 1, 0)
        return self.sampler.views[v].shard.document(int(order[i]))

    def _sequence(self, v: int) -> list[int]:
        buffer = self.buffers[v]
        while len(buffer) < RAW_LEN:
            buffer.extend(self._document(v).tolist())
            buffer.append(SEPARATOR)
        sequence = buffer[:RAW_LEN]
        del buffer[:RAW_LEN]
        return sequence

    def batch(self) -> np.ndarray:
        choice = self.sampler._draw(self.sampler.step).choice
        self.sampler.step += 1
        return np.array([self._sequence(int(v)) for v in choice[0]], dtype=np.int64)


@pytest.fixture(scope="module")
def throughput() -> dict[str, float]:
    """tokens/s of each implementation measured in this module, for the ratio."""
    return {}


def run(benchmark, produce, name: str, throughput: dict[str, float]) -> None:
    benchmark.group = f"packing raw_len={RAW_LEN} batch={BATCH_SIZE}"
    # One warm-up round faults the memory map into the page cache for both implementations alike.
    benchmark.pedantic(lambda: [produce() for _ in range(STEPS)], rounds=8, iterations=1, warmup_rounds=1)
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing measured
        return
    throughput[name] = STEPS * BATCH_SIZE * RAW_LEN / benchmark.stats.stats.median
    benchmark.extra_info["tokens_per_s"] = round(throughput[name])
    benchmark.extra_info["tokens_per_round"] = STEPS * BATCH_SIZE * RAW_LEN


def test_packing_sampler(benchmark, corpus, throughput):
    sampler = new_sampler(corpus)
    run(benchmark, lambda: vectorised_batch(sampler), "packing_sampler", throughput)


def test_python_reference_packer(benchmark, corpus, throughput):
    # Same output first, so the ratio compares two implementations of one thing.
    sampler, packer = new_sampler(corpus), PythonPacker(new_sampler(corpus))
    for step in range(2 * STEPS):
        assert np.array_equal(vectorised_batch(sampler), packer.batch()), f"step {step}: the reference differs"
    run(benchmark, packer.batch, "python_reference", throughput)
    if "packing_sampler" in throughput and "python_reference" in throughput:
        benchmark.extra_info["packing_sampler_speedup"] = round(
            throughput["packing_sampler"] / throughput["python_reference"], 2)
