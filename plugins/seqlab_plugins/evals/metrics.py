"""Corpus metrics shared by the eval tasks: BLEU, chrF++, ROUGE-1/2/L over token sequences, accuracy; and
their per-example sufficient statistics, whose sums give back the corpus score (see seqlab.evaluation.aggregates).

Every score is on a 0-100 scale, like sacrebleu's, so reports can put them side by side.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence

import numpy as np
import sacrebleu

from seqlab.errors import require
from seqlab.evaluation.aggregates import bleu_metric, chrf_metric

# BLEU counts n-grams of *words*, so the score depends on how a sentence is split into words: numbers are
# only comparable when computed with the same tokenizer (sacrebleu's signature records it for that reason;
# reports print `bleu_tokenizer(...)` next to the score). Japanese and Chinese are written without spaces:
# the default "13a" tokenizer would see a whole sentence as one word, and any difference would score 0.
_DEFAULT_BLEU_TOKENIZER = {"ja": "ja-mecab", "zh": "zh"}
_FALLBACK_BLEU_TOKENIZER = "13a"


def bleu_tokenizer(target_language: str, tokenize: str | None = None) -> str:
    """The sacrebleu tokenizer BLEU uses for `target_language` (an ISO 639-1 code); `tokenize` overrides it."""
    # A malformed code ("jpn", "ja_JP") would otherwise silently fall back to 13a and understate BLEU.
    require(len(target_language) == 2 and target_language.isalpha() and target_language.islower(),
            "target_language", target_language, "must be a two-letter ISO 639-1 code such as 'ja'")
    if tokenize is None:
        return _DEFAULT_BLEU_TOKENIZER.get(target_language, _FALLBACK_BLEU_TOKENIZER)
    available = sorted(sacrebleu.BLEU.TOKENIZERS)
    require(tokenize in available, "tokenize", tokenize, f"not a sacrebleu tokenizer; choose one of {available}")
    return tokenize


def _check_pairs(predictions: Sequence[object], references: Sequence[object]) -> None:
    # One reference per prediction: a length mismatch means the eval set was misaligned, never a valid input.
    require(len(predictions) > 0, "predictions", len(predictions), "need at least one example")
    require(len(references) == len(predictions), "references", len(references),
            f"need exactly one reference per prediction ({len(predictions)} predictions)")


def bleu(predictions: list[str], references: list[str], target_language: str, tokenize: str | None = None) -> float:
    """Corpus BLEU (sacrebleu defaults: exp smoothing, case-sensitive) with one reference per example."""
    _check_pairs(predictions, references)
    chosen = bleu_tokenizer(target_language, tokenize)
    return float(sacrebleu.corpus_bleu(predictions, [references], tokenize=chosen).score)


def chrf_pp(predictions: list[str], references: list[str]) -> float:
    """Corpus chrF++: character n-grams plus word uni- and bigrams (word_order=2), one reference per example."""
    _check_pairs(predictions, references)
    return float(sacrebleu.corpus_chrf(predictions, [references], word_order=2).score)


def chrf_pp_stats(predictions: list[str], references: list[str]) -> list[list[int]]:
    """chrF++ sentence statistics, 24 counts per example; scored from their sum they give `chrf_pp`."""
    _check_pairs(predictions, references)
    return chrf_metric()._extract_corpus_statistics(predictions, [references])


def bleu_stats(predictions: list[str], references: list[str], target_language: str,
               tokenize: str | None = None) -> list[list[int]]:
    """BLEU sentence statistics (lengths, then matching and total n-grams), 10 per example, under the tokenizer
    `bleu` uses; scored from their sum they give `bleu`."""
    _check_pairs(predictions, references)
    return bleu_metric(bleu_tokenizer(target_language, tokenize))._extract_corpus_statistics(predictions, [references])


def _f1(overlap: int, n_prediction: int, n_reference: int) -> float:
    # 2PR/(P+R) with P = overlap/n_prediction and R = overlap/n_reference simplifies to this; an empty side
    # has no overlap, so it scores 0 without a special case.
    return 2.0 * overlap / (n_prediction + n_reference) if overlap else 0.0


def _ngrams(tokens: Sequence[Hashable], n: int) -> Counter[tuple[Hashable, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _ngram_f1(prediction: Sequence[Hashable], reference: Sequence[Hashable], n: int) -> float:
    pred, ref = _ngrams(prediction, n), _ngrams(reference, n)
    # Counter `&` keeps the minimum count of each n-gram: a repeated n-gram matches at most as often as the
    # other side has it (clipping), so repeating a correct word cannot inflate the score.
    overlap = sum((pred & ref).values())
    return _f1(overlap, sum(pred.values()), sum(ref.values()))


def lcs_length(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Length of the longest common subsequence of `a` and `b`, one numpy pass per token of the shorter one."""
    if len(a) == 0 or len(b) == 0:  # len(), not truthiness: callers may pass numpy id arrays
        return 0
    # Map tokens (ints or strings) to small ints so equality against a whole row is one vectorised compare.
    ids: dict[Hashable, int] = {}
    a_ids = np.array([ids.setdefault(t, len(ids)) for t in a], dtype=np.int64)
    b_ids = np.array([ids.setdefault(t, len(ids)) for t in b], dtype=np.int64)
    if len(a_ids) > len(b_ids):  # LCS is symmetric: loop over the shorter, vectorise over the longer
        a_ids, b_ids = b_ids, a_ids
    prev = np.zeros(len(b_ids) + 1, dtype=np.int64)
    for token in a_ids:
        # curr[j] = max(curr[j-1], prev[j], prev[j-1] + 1 where a[i] == b[j]). The curr[j-1] term makes it a
        # running maximum of the other two terms, so one accumulate replaces the inner loop over j.
        candidates = prev.copy()
        candidates[1:] = np.maximum(prev[1:], np.where(b_ids == token, prev[:-1] + 1, 0))
        prev = np.maximum.accumulate(candidates)
    return int(prev[-1])


def rouge_f1s(predictions: list[Sequence[Hashable]], references: list[Sequence[Hashable]]) -> dict[str, list[float]]:
    """Each example's ROUGE-1, ROUGE-2 and ROUGE-L F1, in [0, 1]; see `rouge`."""
    _check_pairs(predictions, references)
    out: dict[str, list[float]] = {"rouge1": [], "rouge2": [], "rougeL": []}
    for prediction, reference in zip(predictions, references):
        out["rouge1"].append(_ngram_f1(prediction, reference, 1))
        out["rouge2"].append(_ngram_f1(prediction, reference, 2))
        out["rougeL"].append(_f1(lcs_length(prediction, reference), len(prediction), len(reference)))
    return out


def rouge(predictions: list[Sequence[Hashable]], references: list[Sequence[Hashable]]) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F1 over token sequences, averaged over examples, on a 0-100 scale.

    Tokens are compared as given (ints or strings). Callers pass SentencePiece pieces or ids rather than text:
    the usual ROUGE tokenizer keeps only [a-z0-9] runs, so Hindi, Tamil, Arabic or Japanese text has no tokens
    at all and every example scores 0; pieces exist for every script the model was trained on and are the units
    the model actually generates, so scores are comparable across languages. ROUGE-L is the sentence-level
    LCS score, not the summary-level ROUGE-Lsum. An empty prediction or reference scores 0 on every measure.
    """
    # Mean of per-example F1 (macro average), as the reference rouge-score implementation aggregates.
    return {name: 100.0 * sum(values) / len(predictions) for name, values in rouge_f1s(predictions, references).items()}


def accuracy(predicted: Sequence[int], gold: Sequence[int]) -> float:
    """Percentage of examples whose predicted label equals the gold label."""
    _check_pairs(predicted, gold)
    correct = sum(int(p) == int(g) for p, g in zip(predicted, gold))
    return 100.0 * correct / len(gold)
