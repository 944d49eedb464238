"""Objective throughput: each vectorised objective against a per-example reference, in the same run.

Each reference is what a straightforward implementation does (fairseq's and T5's per-example style): a loop over
rows, each row's spans or split drawn on its own, its inputs and targets built from Python list slices, then
padded into a batch. It draws from the same distributions (checked before timing: same raw tokens in, the
same total output tokens on average), so the ratio compares two implementations of one objective.
Throughput is raw tokens consumed per second on one core (numpy runs these kernels single-threaded), for a
batch of 64 rows at seq_len 1024, with the embedded 4096-piece tokenizer. Run with `make bench`; tokens/s and
the speedup land in each benchmark's extra_info.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from seqlab.errors import ConfigError
from seqlab.experiment import resource_path
from seqlab.interfaces import Features, Objective, Rows
from seqlab.registry import OBJECTIVES
from seqlab.tokenizer import Tokenizer

SEQ_LEN = 1024
BATCH_SIZE = 64
ROUNDS = 50  # rounds per implementation; medians, as the machine may be shared
RowFn = Callable[[np.ndarray, np.random.Generator], tuple[list[int], list[int]]]  # row -> (inputs, targets)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(resource_path("tokenizer/embedded.model"))


@pytest.fixture(scope="module")
def stream(tokenizer: Tokenizer) -> np.ndarray:
    """The embedded corpus (12 languages) encoded and packed as the sampler packs it: documents then [DOC]."""
    doc = tokenizer.token_id("[DOC]")
    lines = [line for path in sorted(Path(resource_path("corpus")).glob("*/*.txt"))
             for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return np.concatenate([np.append(np.asarray(ids, dtype=np.int64), doc) for ids in tokenizer.encode(lines)])


@pytest.fixture(scope="module")
def throughput() -> dict[tuple[str, str], float]:
    """tokens/s of each (objective, implementation) measured in this module, for the ratios."""
    return {}


def cut_rows(objective: Objective, stream: np.ndarray, seed: int = 0) -> Rows:
    """Rows as the sampler cuts them for the objective's own plan: full packed slices at random offsets, or
    single documents of random length in [2, planned length) (AlexaTM's CLM), right-padded."""
    rng = np.random.default_rng(seed)
    plan = objective.plan(BATCH_SIZE, rng)
    lengths = np.where(plan.document, rng.integers(2, plan.length), plan.length)  # (B,)
    width = int(lengths.max())
    offsets = rng.integers(0, len(stream) - width, size=BATCH_SIZE)
    tokens = stream[offsets[:, None] + np.arange(width)]  # (B, W)
    tokens[np.arange(width)[None, :] >= lengths[:, None]] = 0
    return Rows(tokens, lengths, plan)


def padded(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(row) for row in rows], dtype=np.int64)
    out = np.zeros((len(rows), int(lengths.max())), dtype=np.int64)
    for b, row in enumerate(rows):
        out[b, : len(row)] = row
    return out, lengths


def per_row(row_fns: list[RowFn]) -> Callable[[Rows, np.random.Generator], Features]:
    """The reference batch: row b handled by row_fns[task of b], one row at a time, then padded."""

    def batch(rows: Rows, rng: np.random.Generator) -> Features:
        inputs, targets = [], []
        for b in range(len(rows.lengths)):
            x, y = row_fns[rows.plan.task[b]](rows.tokens[b, : rows.lengths[b]], rng)
            inputs.append(x)
            targets.append(y)
        (xi, li), (yi, lt) = padded(inputs), padded(targets)
        return Features(xi, li, yi, lt, rows.plan.task.copy())

    return batch


def poisson_spans_row(rng: np.random.Generator, length: int, n_noise: int, mean: float,
                      allow_empty: bool) -> list[tuple[int, int]]:
    """(start, length) of one row's spans in row order, drawn as noise.poisson_spans does: k spans (rounded at
    random around the same expected count), the n_noise tokens dropped one at a time into them (after one each
    unless empty spans are allowed), each span after its own clean token on a circle of `length` positions, and
    the circle cut at a random point (a span across the cut becomes two). BART keeps at most one span per masked
    token, redrawing otherwise."""
    clean = length - n_noise
    while True:
        target = n_noise * (length - mean) / (mean * max(length - 1, 1))
        k = min(max(int(target) + int(rng.random() < target % 1), min(n_noise, 1)), n_noise, clean)
        lengths = [0 if allow_empty else 1] * k
        for _ in range(n_noise - sum(lengths)):
            lengths[int(rng.integers(k))] += 1
        after = dict(zip(sorted(rng.choice(clean, size=k, replace=False).tolist()), lengths))
        circle, position = [], 0  # (start on the circle, length) of each span
        for token in range(clean):
            position += 1
            if token in after:
                circle.append((position, after[token]))
                position += after[token]
        cut = int(rng.integers(length))
        spans = []
        for start, span in circle:
            start = (start - cut) % length
            if start + span > length:  # across the cut: its tail opens the row, its head ends it
                spans += [(0, start + span - length), (start, length - start)]
            else:
                spans.append((start, span))
        if len(spans) <= n_noise:
            return sorted(spans)


def random_segmentation_row(rng: np.random.Generator, n_items: int, n_segments: int) -> list[int]:
    cuts = np.sort(rng.choice(n_items - 1, size=n_segments - 1, replace=False) + 1).tolist()
    return np.diff([0, *cuts, n_items]).tolist()


def denoising_row(objective: Any) -> RowFn:
    """alexatm_denoising: delete the spans, no mask token; the target is the row."""
    def row_fn(row: np.ndarray, rng: np.random.Generator) -> tuple[list[int], list[int]]:
        tokens, kept, pos = row.tolist(), [], 0
        for start, span in poisson_spans_row(rng, len(tokens), objective.n_noise,
                                             objective.cfg.mean_span_length, allow_empty=False):
            kept += tokens[pos:start]
            pos = start + span
        return kept + tokens[pos:], tokens

    return row_fn


def infilling_row(objective: Any) -> RowFn:
    """bart_infilling: one [MASK] per span; the target is the row. With permutation, the spans are masked in
    the row with its sentences (each up to and including its closing token) shuffled."""
    def row_fn(row: np.ndarray, rng: np.random.Generator) -> tuple[list[int], list[int]]:
        tokens, inputs, pos = row.tolist(), [], 0
        source = tokens
        if objective.cfg.permute_sentences:
            sentences = np.split(row, np.flatnonzero(objective.sentence_end[row]) + 1)
            source = [t for k in rng.permutation(len(sentences)) for t in sentences[k].tolist()]
        n_noise = round(objective.cfg.mask_ratio * len(tokens))
        for start, span in poisson_spans_row(rng, len(tokens), n_noise, objective.cfg.poisson_lambda,
                                             allow_empty=True):
            inputs += source[pos:start] + [objective.mask_id]
            pos = start + span
        return inputs + source[pos:], tokens

    return row_fn


def span_corruption_row(objective: Any) -> RowFn:
    """t5_span_corruption: T5's per-example noise mask; one sentinel per span, EOS on both sides."""
    sentinels, eos = objective.sentinel_ids.tolist(), objective.eos_id
    mode = [] if objective.mode_id is None else [objective.mode_id]

    def row_fn(row: np.ndarray, rng: np.random.Generator) -> tuple[list[int], list[int]]:
        tokens, inputs, targets, pos = row.tolist(), list(mode), [], 0
        noise = random_segmentation_row(rng, objective.n_noise, objective.n_spans)
        kept = random_segmentation_row(rng, len(tokens) - objective.n_noise, objective.n_spans)
        for sentinel, n_kept, n_noise in zip(sentinels, kept, noise):
            inputs += tokens[pos : pos + n_kept] + [sentinel]
            targets += [sentinel] + tokens[pos + n_kept : pos + n_kept + n_noise]
            pos += n_kept + n_noise
        return inputs + [eos], targets + [eos]

    return row_fn


def prefix_lm_row(objective: Any) -> RowFn:
    """prefix_lm: a uniform split in [1, L-1]; the prefix (after the mode token, if any) is the input."""
    mode = [] if objective.mode_id is None else [objective.mode_id]

    def row_fn(row: np.ndarray, rng: np.random.Generator) -> tuple[list[int], list[int]]:
        tokens = row.tolist()
        split = int(rng.integers(1, len(tokens)))
        return mode + tokens[:split], tokens[split:]

    return row_fn


def clm_row(objective: Any) -> RowFn:
    """clm (AlexaTM): [CLM] + the document's first 20-80% -> the rest."""
    cfg = objective.cfg
    mode = [objective.clm_id] if cfg.mode_token else []

    def row_fn(row: np.ndarray, rng: np.random.Generator) -> tuple[list[int], list[int]]:
        tokens = row.tolist()
        split = min(max(int(rng.uniform(cfg.min_prefix, cfg.max_prefix) * len(tokens)), 1), len(tokens) - 1)
        return mode + tokens[:split], tokens[split:]

    return row_fn


def alexatm_denoising(tokenizer: Tokenizer) -> tuple[Objective, list[RowFn]]:
    module = pytest.importorskip("seqlab_plugins.objectives.alexatm_denoising")
    cfg = module.AlexaTMDenoisingConfig(name="alexatm_denoising")
    objective = OBJECTIVES.build(cfg, tokenizer=tokenizer, seq_len=SEQ_LEN)
    return objective, [denoising_row(objective)]


def clm(tokenizer: Tokenizer) -> tuple[Objective, list[RowFn]]:
    module = pytest.importorskip("seqlab_plugins.objectives.clm")
    objective = OBJECTIVES.build(module.ClmConfig(name="clm"), tokenizer=tokenizer, seq_len=SEQ_LEN)
    return objective, [clm_row(objective)]


def t5_span_corruption(tokenizer: Tokenizer) -> tuple[Objective, list[RowFn]]:
    module = pytest.importorskip("seqlab_plugins.objectives.t5_span_corruption")
    cfg = module.T5SpanCorruptionConfig(name="t5_span_corruption")
    objective = OBJECTIVES.build(cfg, tokenizer=tokenizer, seq_len=SEQ_LEN)
    return objective, [span_corruption_row(objective)]


def bart_infilling(tokenizer: Tokenizer, permute_sentences: bool = False) -> tuple[Objective, list[RowFn]]:
    module = pytest.importorskip("seqlab_plugins.objectives.bart_infilling")
    cfg = module.BartInfillingConfig(name="bart_infilling", permute_sentences=permute_sentences)
    objective = OBJECTIVES.build(cfg, tokenizer=tokenizer, seq_len=SEQ_LEN)
    return objective, [infilling_row(objective)]


def bart_infilling_permuted(tokenizer: Tokenizer) -> tuple[Objective, list[RowFn]]:
    """BART's text infilling with sentence permutation, its best combination."""
    return bart_infilling(tokenizer, permute_sentences=True)


def prefix_lm(tokenizer: Tokenizer) -> tuple[Objective, list[RowFn]]:
    module = pytest.importorskip("seqlab_plugins.objectives.prefix_lm")
    objective = OBJECTIVES.build(module.PrefixLMConfig(name="prefix_lm"), tokenizer=tokenizer, seq_len=SEQ_LEN)
    return objective, [prefix_lm_row(objective)]


def ul2(tokenizer: Tokenizer) -> tuple[Objective, list[RowFn]]:
    module = pytest.importorskip("seqlab_plugins.objectives.ul2")

    def fits(denoiser: Any) -> bool:
        try:
            OBJECTIVES.build(module.UL2Config(name="ul2", denoisers=[denoiser]), tokenizer=tokenizer, seq_len=SEQ_LEN)
        except ConfigError:
            return False
        return True

    # UL2's mix less the denoisers the embedded tokenizer cannot serve: at seq_len 1024, x_3_0.5 and x_8_0.5
    # need 255 and 114 sentinels per row, and it has 100.
    cfg = module.UL2Config(name="ul2", denoisers=[d for d in module.UL2Config(name="ul2").denoisers if fits(d)])
    objective = OBJECTIVES.build(cfg, tokenizer=tokenizer, seq_len=SEQ_LEN)
    return objective, [span_corruption_row(child) if hasattr(child, "sentinel_ids") else prefix_lm_row(child)
                       for child in objective.children]


def alexatm(tokenizer: Tokenizer) -> tuple[Objective, list[RowFn]]:
    """AlexaTM's mixture: 80% denoising on packed rows, 20% CLM on single documents, drawn per row."""
    mixture = pytest.importorskip("seqlab_plugins.objectives.mixture")
    denoising, denoising_rows = alexatm_denoising(tokenizer)
    causal, clm_rows = clm(tokenizer)
    objective = mixture.Mixture([("alexatm_denoising", denoising), ("clm", causal)], [0.8, 0.2])
    return objective, denoising_rows + clm_rows


OBJECTIVES_BENCHMARKED = [alexatm_denoising, clm, t5_span_corruption, bart_infilling, bart_infilling_permuted,
                          prefix_lm, ul2, alexatm]


@pytest.mark.parametrize("implementation", ["seqlab", "reference"])
@pytest.mark.parametrize("make", OBJECTIVES_BENCHMARKED, ids=[f.__name__ for f in OBJECTIVES_BENCHMARKED])
def test_objective_throughput(benchmark, tokenizer, stream, throughput, make, implementation):
    objective, row_fns = make(tokenizer)
    reference = per_row(row_fns)
    rows = cut_rows(objective, stream)
    ours, theirs = objective(rows, np.random.default_rng(1)), reference(rows, np.random.default_rng(1))
    # The same job: same tasks, and as many output tokens in all (exactly, or within 1% where the count is
    # random: BART's number of spans).
    assert np.array_equal(ours.objective, theirs.objective)
    out_ours = (ours.input_lengths + ours.target_lengths).sum()
    out_theirs = (theirs.input_lengths + theirs.target_lengths).sum()
    assert abs(out_ours - out_theirs) <= 0.01 * out_ours, (out_ours, out_theirs)

    produce = objective if implementation == "seqlab" else reference
    rng = np.random.default_rng(2)
    benchmark.group = f"objective {make.__name__} seq_len={SEQ_LEN} batch={BATCH_SIZE}"
    benchmark.pedantic(lambda: produce(rows, rng), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing measured
        return
    tokens = int(rows.lengths.sum())
    throughput[make.__name__, implementation] = tokens / benchmark.stats.stats.median
    benchmark.extra_info["tokens_per_s"] = round(throughput[make.__name__, implementation])
    benchmark.extra_info["tokens_per_round"] = tokens
    benchmark.extra_info["tasks"] = list(objective.names)
    if implementation == "reference" and (make.__name__, "seqlab") in throughput:
        speedup = throughput[make.__name__, "seqlab"] / throughput[make.__name__, "reference"]
        benchmark.extra_info["seqlab_speedup"] = round(speedup, 2)
