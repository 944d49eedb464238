"""How an eval metric's per-example statistics combine into its corpus score.

Every metric is written per example as a vector of sufficient statistics; the corpus score is a function of
their sum over examples, named by an aggregate:

- "ratio": [value, weight] -> sum(value) / sum(weight): a mean (accuracy: [100 * correct, 1]) or a micro
  average (log-likelihood per byte: [log p, bytes]);
- "chrf": sacrebleu's chrF++ sentence statistics (24 counts), scored by sacrebleu from their sums;
- "bleu:<tokenize>": sacrebleu's BLEU sentence statistics (10 counts) under that tokenizer, likewise.

Resampling examples (a bootstrap) only changes how often each example's statistics are counted, so one
function of the sums serves the reported score and every resample.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import sacrebleu

from seqlab.evaluation.stats import from_scalar_score, ratio_score

RATIO = "ratio"
CHRF = "chrf"
BLEU = "bleu"


def bleu_aggregate(tokenize: str) -> str:
    """The aggregate of BLEU under a sacrebleu tokenizer: the tokenizer is part of what the number means."""
    return f"{BLEU}:{tokenize}"


@lru_cache(maxsize=None)
def chrf_metric() -> sacrebleu.metrics.CHRF:
    """chrF++: character 6-grams plus word uni- and bigrams, as `sacrebleu.corpus_chrf(..., word_order=2)`."""
    return sacrebleu.metrics.CHRF(word_order=2)


@lru_cache(maxsize=None)
def bleu_metric(tokenize: str) -> sacrebleu.metrics.BLEU:
    """sacrebleu's corpus BLEU defaults under `tokenize` (built once: ja-mecab loads a dictionary)."""
    return sacrebleu.metrics.BLEU(tokenize=tokenize)


def _sacrebleu_score(metric: sacrebleu.metrics.base.Metric):
    return from_scalar_score(lambda sums: float(metric._compute_score_from_stats(sums.tolist()).score))


def score_from_sums(aggregate: str, sums: np.ndarray) -> np.ndarray:
    """Statistics summed over examples (..., k) -> the corpus score (...), for each leading index."""
    sums = np.asarray(sums, dtype=np.float64)
    if aggregate == RATIO:
        return ratio_score(sums)
    if aggregate == CHRF:
        return _sacrebleu_score(chrf_metric())(sums)
    name, _, tokenize = aggregate.partition(":")
    if name == BLEU and tokenize:
        if tokenize not in sacrebleu.BLEU.TOKENIZERS:
            raise ValueError(f"aggregate={aggregate!r}: {tokenize!r} is not a sacrebleu tokenizer; choose one of "
                             f"{sorted(sacrebleu.BLEU.TOKENIZERS)}")
        return _sacrebleu_score(bleu_metric(tokenize))(sums)
    raise ValueError(f"aggregate={aggregate!r}: must be {RATIO!r}, {CHRF!r} or '{BLEU}:<sacrebleu tokenizer>'")


def corpus_score(aggregate: str, stats: np.ndarray) -> float:
    """Per-example statistics (n, k) -> the corpus score of the n examples."""
    stats = np.asarray(stats, dtype=np.float64)
    if stats.ndim != 2 or stats.shape[0] == 0:
        raise ValueError(f"stats.shape={stats.shape}: must be (examples, statistics) with at least one example")
    return float(score_from_sums(aggregate, stats.sum(axis=0)))
