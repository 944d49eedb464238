"""Decontamination and deduplication throughput, and what the filters cost `seqlab data prepare`.

- 13-gram matching of training documents against an evaluation set: seqlab's hashed, vectorised
  `EvalNgrams.flags` against the straightforward implementation (Python sets of word tuples), on the same
  normalised documents, after checking both flag the same documents. Documents are the embedded corpus (12
  languages, Japanese counted in characters) with evaluation sentences planted in some.
- the whole preparation (read, normalise, hash, match, tokenize, write) of the same corpus with the filters off,
  with deduplication, and with deduplication and decontamination.
Run with `make bench`; documents/s and MB/s land in each benchmark's extra_info.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from seqlab.data.decontaminate import load_eval_ngrams
from seqlab.data.prepare import prepare_corpus
from seqlab.data.textnorm import normalize
from seqlab.experiment import resource_path

N = 13
COPIES = 4  # the embedded corpus (~0.4 MB) x 4, numbered so no copy is a duplicate: ~1.7 MB, ~13k documents


def reference_flags(normalized: list[str], eval_grams: set[tuple[str, ...]]) -> np.ndarray:
    """The straightforward 13-gram test: every n-gram of every document as a tuple, looked up in a set."""
    out = np.zeros(len(normalized), dtype=bool)
    for i, text in enumerate(normalized):
        words = text.split()
        out[i] = any(tuple(words[k : k + N]) in eval_grams for k in range(len(words) - N + 1))
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    root = tmp_path_factory.mktemp("filters")
    lines = [line for path in sorted(Path(resource_path("corpus")).rglob("*.txt"))
             for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    docs = [f"{line} ({k})" for k in range(COPIES) for line in lines]
    evals = lines[::97]  # one line in 97 is an evaluation sentence: its copies are contaminated
    (root / "corpus" / "und").mkdir(parents=True)
    (root / "corpus" / "und" / "docs.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    (root / "eval.txt").write_text("\n".join(evals) + "\n", encoding="utf-8")
    return root / "corpus", root / "eval.txt", docs


def _record(benchmark, documents: int, size: int) -> None:
    seconds = benchmark.stats.stats.mean
    benchmark.extra_info.update(documents_per_s=round(documents / seconds), mb_per_s=round(size / seconds / 1e6, 2))


@pytest.mark.parametrize("impl", ["seqlab", "reference"])
def test_ngram_matching(benchmark, corpus, impl):
    _, eval_path, docs = corpus
    normalized = [normalize(doc) for doc in docs]
    ngrams = load_eval_ngrams([str(eval_path)], N)
    eval_grams = {tuple(w[k : k + N]) for text in eval_path.read_text().splitlines()
                  for w in [normalize(text).split()] for k in range(len(w) - N + 1)}
    seqlab = ngrams.flags(normalized) != 0
    assert np.array_equal(seqlab, reference_flags(normalized, eval_grams)) and 0 < seqlab.sum() < len(docs)
    run = (lambda: ngrams.flags(normalized)) if impl == "seqlab" else (lambda: reference_flags(normalized, eval_grams))
    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    _record(benchmark, len(docs), sum(len(d.encode()) for d in docs))


@pytest.mark.parametrize("filters", ["none", "dedup", "dedup+decontaminate"])
def test_prepare_with_filters(benchmark, corpus, tmp_path, filters):
    corpus_dir, eval_path, docs = corpus
    options = {"dedup": filters != "none", "decontaminate": [str(eval_path)] if "decontaminate" in filters else []}
    out = iter(range(100))
    run = lambda: prepare_corpus([corpus_dir], resource_path("tokenizer/embedded.model"),  # noqa: E731
                                 tmp_path / f"out{next(out)}", progress=False, **options)
    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    _record(benchmark, len(docs), sum(len(d.encode()) for d in docs))
