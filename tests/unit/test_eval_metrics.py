"""Eval metrics: BLEU/chrF++ match sacrebleu, ROUGE matches rouge-score and holds its properties on any tokens,
and the per-example statistics of each sum to its corpus score."""
import numpy as np
import pytest
import sacrebleu
from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer

from seqlab.errors import ConfigError
from seqlab.evaluation.aggregates import bleu_aggregate, corpus_score, score_from_sums
from seqlab.experiment import resource_path
from seqlab.tokenizer import Tokenizer
from seqlab_plugins.evals.metrics import (
    accuracy, bleu, bleu_stats, bleu_tokenizer, chrf_pp, chrf_pp_stats, lcs_length, rouge, rouge_f1s,
)

PROPERTY = settings(max_examples=150, deadline=None)
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")

# (target language, predictions, references): two sentences each, neither identical nor disjoint.
CORPORA = [
    ("en", ["the cat sat on the mat", "it is raining in the city today"],
     ["the cat is sitting on the mat", "today it is raining in the city"]),
    ("de", ["Der Hund läuft schnell über die Straße.", "Ich habe heute keine Zeit."],
     ["Der Hund rennt schnell über die Straße.", "Heute habe ich keine Zeit."]),
    ("fr", ["Le chat dort sur le canapé.", "Nous allons au marché demain matin."],
     ["Le chat dort sur le lit.", "Demain matin, nous allons au marché."]),
    ("hi", ["आज सुबह मीरा की बस छूट गई।", "वह पैदल ही स्कूल गई।"],
     ["आज सुबह मीरा की बस निकल गई।", "वह पैदल स्कूल गई।"]),
    ("ar", ["ذهب الولد إلى المدرسة صباحا", "الطقس جميل اليوم"],
     ["ذهب الولد إلى المدرسة في الصباح", "الطقس جميل جدا اليوم"]),
    ("zh", ["今天天气很好。", "我们明天去市场。"], ["今天天气不错。", "明天我们去市场。"]),
    ("ja", ["今日は良い天気です。", "明日は市場に行きます。"], ["今日は悪い天気です。", "明日、市場に行きます。"]),
]


@pytest.mark.parametrize(("lang", "preds", "refs"), CORPORA, ids=[c[0] for c in CORPORA])
def test_bleu_and_chrf_pp_equal_sacrebleu(lang, preds, refs):
    expected_tokenizer = {"ja": "ja-mecab", "zh": "zh"}.get(lang, "13a")
    assert bleu_tokenizer(lang) == expected_tokenizer
    assert bleu(preds, refs, lang) == sacrebleu.corpus_bleu(preds, [refs], tokenize=expected_tokenizer).score
    assert chrf_pp(preds, refs) == sacrebleu.corpus_chrf(preds, [refs], word_order=2).score
    assert 0 < bleu(preds, refs, lang) < 100


def test_japanese_bleu_counts_mecab_words_not_whole_sentences():
    pred, ref = ["今日は良い天気です。"], ["今日は悪い天気です。"]  # one word differs
    ours = bleu(pred, ref, "ja")
    assert ours == sacrebleu.corpus_bleu(pred, [ref], tokenize="ja-mecab").score
    assert 0 < ours < 100
    # 13a splits on spaces and punctuation only: the unsegmented sentence is a single token, so one differing
    # word makes the whole hypothesis wrong.
    naive = sacrebleu.corpus_bleu(pred, [ref], tokenize="13a")
    assert naive.sys_len == 1 and naive.score == 0.0
    assert ours > naive.score


def test_tokenize_overrides_the_language_default():
    preds, refs = CORPORA[0][1], CORPORA[0][2]
    assert bleu_tokenizer("ja", "char") == "char"
    assert bleu(preds, refs, "en", tokenize="intl") == sacrebleu.corpus_bleu(preds, [refs], tokenize="intl").score


def test_unknown_tokenizer_and_malformed_language_are_config_errors():
    with pytest.raises(ConfigError, match=r"tokenize='moses'.*13a"):
        bleu(["a b"], ["a b"], "en", tokenize="moses")
    with pytest.raises(ConfigError, match=r"target_language='jpn'"):
        bleu_tokenizer("jpn")


def test_mismatched_or_empty_inputs_are_rejected():
    with pytest.raises(ConfigError, match=r"references=1"):
        chrf_pp(["a", "b"], ["a"])
    with pytest.raises(ConfigError, match=r"predictions=0"):
        rouge([], [])


class _Whitespace:
    """Splits on whitespace only, so rouge-score sees exactly the tokens our rouge() is given."""

    def tokenize(self, text: str) -> list[str]:
        return text.split()


ENGLISH_PAIRS = [
    ("the cat sat on the mat", "the cat is sitting on the mat"),
    ("the the the the", "the cat ate the fish"),  # clipping: 'the' matches at most twice
    ("a b c d e f", "f e d c b a"),
    ("police killed the gunman", "the gunman was killed by police"),
    ("completely different words here", "nothing in common at all"),
    ("single", "single"),
]


def test_rouge_equals_rouge_score_on_english():
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=_Whitespace())
    preds = [p.split() for p, _ in ENGLISH_PAIRS]
    refs = [r.split() for _, r in ENGLISH_PAIRS]
    ours = rouge(preds, refs)
    per_example = [scorer.score(r, p) for p, r in ENGLISH_PAIRS]  # rouge-score takes (target, prediction)
    for name in ROUGE_TYPES:
        expected = 100 * sum(s[name].fmeasure for s in per_example) / len(per_example)
        assert ours[name] == pytest.approx(expected, abs=1e-9)
        for (p, r), s in zip(ENGLISH_PAIRS, per_example):
            assert rouge([p.split()], [r.split()])[name] == pytest.approx(100 * s[name].fmeasure, abs=1e-9)


def test_rouge_over_pieces_scores_scripts_that_rouge_score_drops():
    tok = Tokenizer(resource_path("tokenizer/embedded.model"))
    pairs = [("आज सुबह मीरा की बस छूट गई।", "आज सुबह मीरा की बस निकल गई।"),
             ("இன்று காலை மழை பெய்தது.", "இன்று காலை மழை பெய்ததால் தெருக்கள் ஈரமாக இருந்தன.")]
    preds = tok.encode([p for p, _ in pairs])
    refs = tok.encode([r for _, r in pairs])
    ours = rouge(preds, refs)
    assert all(0 < ours[name] < 100 for name in ROUGE_TYPES)
    # The default tokenizer keeps only [a-z0-9] runs: Devanagari and Tamil text has no tokens at all.
    default = rouge_scorer.RougeScorer(list(ROUGE_TYPES))
    for p, r in pairs:
        assert all(score.fmeasure == 0 for score in default.score(r, p).values())


def test_rouge_accepts_strings_and_ints_and_empty_sides():
    assert rouge([["x", "y"]], [["x", "y"]]) == {name: 100.0 for name in ROUGE_TYPES}
    assert rouge([[]], [[1, 2]]) == rouge([[1, 2]], [[]]) == {name: 0.0 for name in ROUGE_TYPES}
    # A one-token pair has no bigrams: ROUGE-2 is 0 while ROUGE-1 and ROUGE-L are perfect.
    assert rouge([[7]], [[7]]) == {"rouge1": 100.0, "rouge2": 0.0, "rougeL": 100.0}


def _plain_lcs(a: list[int], b: list[int]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            if a[i - 1] == b[j - 1]:
                table[i][j] = table[i - 1][j - 1] + 1
            else:
                table[i][j] = max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


tokens = st.lists(st.integers(0, 5), max_size=25)
nonempty = st.lists(st.integers(0, 5), min_size=1, max_size=25)


@PROPERTY
@given(tokens, tokens)
def test_vectorised_lcs_equals_plain_double_loop(a, b):
    assert lcs_length(a, b) == _plain_lcs(a, b)
    expected = 100 * 2 * _plain_lcs(a, b) / (len(a) + len(b)) if a and b else 0.0
    assert rouge([a], [b])["rougeL"] == pytest.approx(expected, abs=1e-9)


@PROPERTY
@given(st.lists(st.tuples(tokens, tokens), min_size=1, max_size=5))
def test_rouge_is_bounded_and_symmetric(pairs):
    preds, refs = [p for p, _ in pairs], [r for _, r in pairs]
    forward, backward = rouge(preds, refs), rouge(refs, preds)
    for name in ROUGE_TYPES:
        assert 0 <= forward[name] <= 100
        assert forward[name] == pytest.approx(backward[name], abs=1e-9)


@PROPERTY
@given(nonempty)
def test_identical_sequences_score_100(seq):
    scores = rouge([seq], [list(seq)])
    assert scores["rouge1"] == pytest.approx(100) and scores["rougeL"] == pytest.approx(100)
    if len(seq) >= 2:  # a single token has no bigram to match
        assert scores["rouge2"] == pytest.approx(100)


def test_accuracy():
    assert accuracy([1, 0, 2, 2], [1, 1, 2, 0]) == 50.0
    assert accuracy([3], [3]) == 100.0
    assert accuracy([0, 0], [1, 1]) == 0.0
    with pytest.raises(ConfigError):
        accuracy([1, 2], [1])


# ---------------------------------------------------------------------------------------------------------------
# Per-example statistics: summed, they give the corpus score


@pytest.mark.parametrize(("lang", "preds", "refs"), CORPORA, ids=[c[0] for c in CORPORA])
def test_summed_sentence_statistics_reproduce_corpus_chrf_and_bleu_exactly(lang, preds, refs):
    chrf_rows = np.array(chrf_pp_stats(preds, refs))
    assert chrf_rows.shape == (len(preds), 24)
    assert corpus_score("chrf", chrf_rows) == sacrebleu.corpus_chrf(preds, [refs], word_order=2).score
    tokenize = bleu_tokenizer(lang)
    bleu_rows = np.array(bleu_stats(preds, refs, lang))
    assert bleu_rows.shape == (len(preds), 10)
    expected = sacrebleu.corpus_bleu(preds, [refs], tokenize=tokenize).score
    assert corpus_score(bleu_aggregate(tokenize), bleu_rows) == expected
    assert (lang == "ja") == (bleu_aggregate(tokenize) == "bleu:ja-mecab")


def test_score_from_sums_is_vectorised_over_leading_dimensions():
    preds, refs = ["the cat sat on the mat", "it is raining in the city today", ""], ["the cat sat", "rain", "a"]
    stats = {"chrf": np.array(chrf_pp_stats(preds, refs), dtype=float),
             "bleu:13a": np.array(bleu_stats(preds, refs, "en"), dtype=float),
             "ratio": np.array([[-3.0, 4.0], [-1.0, 2.0], [-2.5, 5.0]])}
    counts = np.random.default_rng(0).integers(1, 4, size=(4, 2, 3)).astype(float)  # resamples of the 3 items
    counts[0, 0] = 1.0  # one resample that is the corpus itself
    for aggregate, rows in stats.items():
        sums = counts @ rows  # (4, 2, k)
        got = score_from_sums(aggregate, sums)
        assert got.shape == (4, 2)
        for i in np.ndindex(4, 2):
            assert got[i] == corpus_score(aggregate, counts[i][:, None] * rows), (aggregate, i)
        assert got[0, 0] == corpus_score(aggregate, rows)


def test_an_unknown_aggregate_names_itself():
    for bad in ("mean", "bleu", "bleu:nope"):
        with pytest.raises(ValueError, match=f"aggregate={bad!r}"):
            score_from_sums(bad, np.ones((2, 10)))
    with pytest.raises(ValueError, match=r"stats.shape=\(0, 2\)"):
        corpus_score("ratio", np.zeros((0, 2)))


def test_per_example_rouge_averages_to_rouge():
    preds = [[1, 2, 3, 4], [5, 6], [], [7, 7, 8]]
    refs = [[1, 2, 4, 3], [6, 5, 9], [1], [7, 8]]
    f1s = rouge_f1s(preds, refs)
    corpus = rouge(preds, refs)
    for name, values in f1s.items():
        assert len(values) == 4 and values[2] == 0.0
        assert corpus_score("ratio", [[100 * v, 1.0] for v in values]) == pytest.approx(corpus[name], abs=1e-12)
