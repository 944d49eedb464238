"""Normalisation, n-gram hashing, 13-gram decontamination and exact deduplication."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from seqlab.cli import main
from seqlab.data.decontaminate import load_eval_ngrams
from seqlab.data.prepare import prepare_corpus
from seqlab.data.store import PreparedCorpus
from seqlab.data import textnorm
from seqlab.data.textnorm import mix, ngram_hashes, normalize, word_hashes
from seqlab.errors import ConfigError, DataError

MASK = (1 << 64) - 1
P, Q = 0x100000001B3, 0x9E3779B97F4A7C15


def py_mix(x: int) -> int:
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def py_ngrams(texts: list[str], n: int) -> list[tuple[int, int]]:
    """The straightforward definition: per document, per word, per character, in Python integers."""
    out = []
    for doc, text in enumerate(texts):
        words = [py_mix(sum(py_mix(ord(c) + 1) * pow(P, i, 1 << 64) for i, c in enumerate(w)) & MASK)
                 for w in text.split(" ") if w]
        for k in range(len(words) - n + 1):
            gram = 0
            for w in words[k : k + n]:
                gram = (gram * Q + w) & MASK
            out.append((py_mix(gram), doc))
    return out


def test_normalize_folds_case_width_punctuation_and_spaces_out_unspaced_scripts():
    assert normalize("Hello,   WORLD!! It's\tme…") == "hello world it s me"
    assert normalize("ＦＵＬＬ－ｗｉｄｔｈ １２") == "full width 12"
    assert normalize("東京タワーは高い。Tokyo") == "東 京 タ ワ ー は 高 い tokyo"
    # Vowel signs and viramas are parts of their word, not separators.
    assert normalize("हिन्दी भाषा, नमस्ते!") == "हिन्दी भाषा नमस्ते"
    assert normalize("தமிழ் உரை") == "தமிழ் உரை"
    assert normalize("Straße") == normalize("STRASSE")


WORDS = st.lists(st.text(st.characters(codec="utf-8", categories=("L", "N", "M")), min_size=1, max_size=6),
                 max_size=30)


@settings(max_examples=80, deadline=None)
@given(docs=st.lists(WORDS, min_size=1, max_size=6), n=st.integers(1, 5))
def test_vectorised_ngram_hashes_equal_the_straightforward_definition(docs, n):
    texts = [normalize(" ".join(words)) for words in docs]
    grams, owners = ngram_hashes(texts, n)
    assert list(zip(grams.tolist(), owners.tolist())) == py_ngrams(texts, n)


@settings(max_examples=40, deadline=None)
@given(docs=st.lists(WORDS, min_size=1, max_size=8), chunk=st.integers(1, 40))
def test_word_hashes_do_not_depend_on_the_chunking(docs, chunk):
    """Chunks of whole documents, and documents longer than a chunk, hash every word as one pass does."""
    texts = [normalize(" ".join(words)) for words in docs]
    whole = word_hashes(texts)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(textnorm, "_CHUNK", chunk)
        patch.setattr(textnorm, "_power_tables", functools.lru_cache(maxsize=1)(textnorm._power_tables.__wrapped__))
        chunked = word_hashes(texts)
    assert np.array_equal(whole[0], chunked[0]) and np.array_equal(whole[1], chunked[1])


def test_word_hashes_are_per_word_and_mix_is_splitmix():
    hashes, docs = word_hashes(["ab ba ab", "ba"])
    assert hashes[0] == hashes[2] == word_hashes(["ab"])[0][0] and hashes[1] == hashes[3] != hashes[0]
    assert docs.tolist() == [0, 0, 0, 1]
    x = np.array([0, 1, 2**63 + 5], dtype=np.uint64)
    assert mix(x).tolist() == [py_mix(int(v)) for v in x]


EN = ("the committee agreed that the new bridge across the river would open to traffic early next spring after "
      "the final inspection")
JA = "東京の新しい美術館は来年の春に開館する予定だと市の担当者が発表した"
SHORT = "a short premise of seven words"


@pytest.fixture()
def eval_file(tmp_path) -> Path:
    path = tmp_path / "nli_eval.jsonl"
    items = [{"premise": EN, "hypothesis": "The bridge opens in spring.", "label": 0},
             {"premise": JA, "hypothesis": "美術館", "label": 1}, {"premise": SHORT, "label": 0}]
    path.write_text("".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items), encoding="utf-8")
    return path


def planted_corpus(root: Path) -> dict[str, str]:
    words = EN.split()
    docs = {
        # 13 consecutive words of the eval premise, in other case and punctuation, inside other text: removed.
        "en_13": "News today. " + " ".join(words[3:16]).upper().replace(" ", ", ", 2) + ". More news follows.",
        "en_12": "Only twelve: " + " ".join(words[3:15]) + " and then something else entirely.",  # kept
        "ja_13": "ニュース。" + JA[5:18] + "。以上です。",  # 13 characters of a Japanese premise: removed
        "ja_12": "ニュース。" + JA[5:17] + "。以上です。",  # 12: kept
        "short": "Here is " + SHORT + " inside a longer document about something else.",  # too short to match
        "cross_a": " ".join(words[:6]),  # 13 words only across two documents: neither removed
        "cross_b": " ".join(words[6:13]),
    }
    docs.update({f"other_{i}": f"An unrelated document number {i} about weather and trade." for i in range(20)})
    (root / "en").mkdir(parents=True)
    (root / "en" / "web.jsonl").write_text(
        "".join(json.dumps({"text": t, "id": k}, ensure_ascii=False) + "\n" for k, t in docs.items()), encoding="utf-8")
    return docs


def test_decontamination_removes_exactly_the_planted_overlaps(tmp_path, eval_file, tokenizer):
    docs = planted_corpus(tmp_path / "corpus")
    ngrams = load_eval_ngrams([str(eval_file)], 13)
    assert ngrams.names == ("nli_eval",) and ngrams.texts == (5,)  # the string fields; labels are numbers
    assert ngrams.short == (3,)  # the hypotheses (one Japanese word of 3 characters) and the short premise
    prepared = prepare_corpus([tmp_path / "corpus"], tokenizer.path, tmp_path / "out", progress=False,
                              decontaminate=[str(eval_file)])
    removed = [json.loads(line) for line in (tmp_path / "out" / "removed.jsonl").read_text().splitlines()]
    texts = list(docs.values())
    lines = (tmp_path / "corpus" / "en" / "web.jsonl").read_bytes().splitlines(keepends=True)
    offsets = np.cumsum([0] + [len(line) for line in lines])[:-1].tolist()
    removed_keys = [list(docs)[offsets.index(r["byte"])] for r in removed]
    assert removed_keys == ["en_13", "ja_13"]
    assert all(r["reason"] == "contaminated" and r["eval_sets"] == ["nli_eval"] for r in removed)
    tokens = sum(len(tokenizer.encode([docs[k]])[0]) for k in removed_keys)
    counts = prepared.manifest["preparation"]["removed"]["contamination"]
    assert counts == {"nli_eval": {"documents": 2, "tokens": tokens}}
    assert prepared.report["contaminated_documents"] == 2 and prepared.report["contaminated_tokens"] == tokens
    assert sum(shard.n_docs for shard in prepared.shards) == len(texts) - 2


def test_contamination_is_counted_under_every_set_it_overlaps(tmp_path, eval_file, tokenizer, capsys):
    planted_corpus(tmp_path / "corpus")
    other = tmp_path / "copy.txt"
    other.write_text(EN + "\n", encoding="utf-8")
    assert main(["data", "prepare", str(tmp_path / "corpus"), "--tokenizer", str(tokenizer.path), "--output",
                 str(tmp_path / "out"), "--workers", "1", "--decontaminate", str(eval_file), str(other)]) == 0
    prepared = PreparedCorpus.open(tmp_path / "out")
    counts = prepared.manifest["preparation"]["removed"]["contamination"]
    assert counts["nli_eval"]["documents"] == 2 and counts["copy"]["documents"] == 1
    assert prepared.report["contaminated_documents"] == 2
    printed = capsys.readouterr().out
    assert "removed: contaminated=2 documents" in printed
    assert f"eval set copy: removed 1 documents ({counts['copy']['tokens']:,} tokens)" in printed


def test_eval_task_names_read_the_task_data(tmp_path, tokenizer):
    rte = tmp_path / "eval" / "super_glue" / "RTE"
    rte.mkdir(parents=True)
    items = [{"idx": 0, "premise": EN, "hypothesis": "A bridge opens.", "label": "entailment"}]
    for split in ("val", "train"):
        (rte / f"{split}.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
    ngrams = load_eval_ngrams(["superglue_rte"], 13, tmp_path / "eval")
    premise = ngram_hashes([normalize(EN)], 13)[0]
    assert ngrams.names == ("superglue_rte",) and set(premise.tolist()) <= set(ngrams.grams.tolist())
    with pytest.raises(ConfigError, match="--decontaminate no_such_task: neither a file nor an eval task"):
        load_eval_ngrams(["no_such_task"])
    with pytest.raises(DataError, match="--decontaminate missing.jsonl: no such file"):
        load_eval_ngrams(["missing.jsonl"])
    with pytest.raises(ConfigError, match="--ngram=0"):
        load_eval_ngrams([str(rte / "val.jsonl")], 0)


def reference_overlaps(docs: list[str], evals: list[str], n: int) -> list[int]:
    """Documents sharing n consecutive normalised words with an eval text: Python sets of word tuples."""
    def grams(text: str) -> set[tuple[str, ...]]:
        words = normalize(text).split()
        return {tuple(words[k : k + n]) for k in range(len(words) - n + 1)}

    seen = set().union(*map(grams, evals))
    return [i for i, doc in enumerate(docs) if grams(doc) & seen]


def test_flores_sentences_planted_in_web_text_are_found(shared_data, tmp_path, tokenizer):
    flores = (shared_data / "flores200" / "devtest" / "jpn.devtest").read_text(encoding="utf-8").splitlines()
    web = (shared_data / "lingua-testdata" / "language-testdata" / "sentences" / "ja.txt").read_text(
        encoding="utf-8").splitlines()[:300]
    planted = {17: flores[5], 150: flores[600], 299: flores[1000][2:40]}
    lines = [planted.get(i, line) for i, line in enumerate(web)]
    (tmp_path / "ja").mkdir()
    (tmp_path / "ja" / "web.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    prepared = prepare_corpus([tmp_path], tokenizer.path, tmp_path / "out", progress=False, dedup=False,
                              decontaminate=["flores_ja_en"], eval_data_root=shared_data)
    removed = [json.loads(line) for line in (tmp_path / "out" / "removed.jsonl").read_text().splitlines()]
    starts = np.cumsum([0] + [len(line.encode()) + 1 for line in lines]).tolist()
    found = [starts.index(r["byte"]) for r in removed]
    # Exactly what matching n-grams as strings finds: the planted lines, and line 266, whose "...ことができるように
    # なっています" shares 13 characters with a FLORES sentence (character 13-grams catch common Japanese phrases).
    assert found == reference_overlaps(lines, flores, 13) == sorted([*planted, 266])
    assert prepared.report["contaminated_documents"] == 4


def test_exact_duplicates_are_dropped_within_and_across_sources(tmp_path, tokenizer):
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "en").mkdir(parents=True)
    (b / "en").mkdir(parents=True)
    (a / "en" / "x.txt").write_text("Hello world.\nSecond line\nhello,   WORLD\nThird\n", encoding="utf-8")
    (b / "en" / "y.txt").write_text("second line!\nOnly in b\nThird\n", encoding="utf-8")
    prepared = prepare_corpus([a, b], tokenizer.path, tmp_path / "out", progress=False)
    docs = {shard.source: [tokenizer.decode(shard.document(i).tolist()) for i in range(shard.n_docs)]
            for shard in prepared.shards}
    assert docs == {"a": ["Hello world.", "Second line", "Third"], "b": ["Only in b"]}
    counts = prepared.manifest["preparation"]["removed"]["duplicates"]
    assert counts["a"]["documents"] == 1 and counts["b"]["documents"] == 2
    assert prepared.report["duplicate_documents"] == 3
    removed = [json.loads(line) for line in (tmp_path / "out" / "removed.jsonl").read_text().splitlines()]
    assert [(r["source"], r["byte"], r["duplicate_of"]["source"], r["duplicate_of"]["byte"]) for r in removed] == [
        ("a", 25, "a", 0), ("b", 0, "a", 13), ("b", 23, "a", 40)]
    kept_all = prepare_corpus([a, b], tokenizer.path, tmp_path / "all", progress=False, dedup=False)
    assert sum(s.n_docs for s in kept_all.shards) == 7 and kept_all.report["duplicate_documents"] == 0
