"""The likelihood metrics (gold log-likelihood per byte, margin, in-context gain) against hand computations on
tiny models of both architectures, and per-example statistics that recombine to every reported score."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
import torch
from helpers import read_jsonl, tiny_seqlab_model, write_flores, write_jsonl

from seqlab.errors import DataError
from seqlab.evaluation.aggregates import corpus_score
from seqlab.evaluation.harness import evaluate
from seqlab.evaluation.model import SeqlabModel
from seqlab.evaluation.tasks import resolve_tasks
from seqlab.experiment import resource_path
from seqlab.registry import load_plugins
from seqlab.tokenizer import BOS_ID, Tokenizer
from seqlab_plugins.architectures.attention import prefix_lm_mask
from seqlab_plugins.evals.metrics import bleu_tokenizer, rouge

ARCHS = ["seq2seq", "prefix_lm", "causal_lm"]


@pytest.fixture(autouse=True, scope="module")
def plugins():
    load_plugins()


# ---------------------------------------------------------------------------------------------------------------
# Fixtures: a rank task with a one-item shot pool, FLORES de->en and en->ja, summaries


SHOT = {"text": "snow fell all night", "choices": ["weather", "sports", "animals"], "label": 0}
ITEMS = [{"id": "a", "text": "the cat slept", "choices": ["weather", "sports", "animals"], "label": 2},
         {"id": "b", "text": "they won the cup", "choices": ["weather", "sports", "animals"], "label": 1},
         {"id": "c", "text": "rain is coming", "choices": ["weather", "sports", "animals"], "label": 0}]
FLORES = {"dev": {"deu": ["Hallo Welt."], "eng": ["Hello world."], "jpn": ["こんにちは世界。"]},
          "devtest": {"deu": ["Guten Morgen.", "Danke schön.", "Bis bald."],
                      "eng": ["Good morning.", "Thank you.", "See you soon."],
                      "jpn": ["おはようございます。", "ありがとう。", "またね。"]}}


@pytest.fixture
def data(tmp_path) -> Path:
    write_jsonl(tmp_path / "mc" / "train.jsonl", [SHOT])
    write_jsonl(tmp_path / "mc" / "test.jsonl", ITEMS)
    write_flores(tmp_path, FLORES)
    write_jsonl(tmp_path / "news.jsonl", [{"document": f"Report {i}: the council met and voted.",
                                           "summary": f"Council vote {i} passed."} for i in range(3)])
    return tmp_path


def mc_task(mode: str = "clm") -> dict:
    return {"name": "rank_classification", "dataset": "jsonl", "path": "mc", "label": "mc", "mode": mode,
            "shot_template": "{text}: {answer}", "query_template": "{text}:"}


# ---------------------------------------------------------------------------------------------------------------
# Hand computations on tiny models


def hand_logprob(ours: SeqlabModel, arch: str, mode: str, prompt: str, continuation: str) -> float:
    """log p(continuation | prompt) from one plain forward pass: clm reads [CLM] + prompt; denoising reads the
    prompt and forces it again before the continuation."""
    tok, model = ours.tokenizer, ours.model
    prompt_ids, cont = tok.encode([prompt])[0], tok.encode([continuation])[0]
    inputs = ([tok.token_id("[CLM]")] if mode == "clm" else []) + prompt_ids
    targets = (prompt_ids if mode == "denoising" else []) + cont
    first = len(targets) - len(cont)  # index in `targets` of the first scored token
    with torch.no_grad():
        if arch == "seq2seq":
            logits = model(torch.tensor([inputs]), torch.tensor([len(inputs)]), torch.tensor([[BOS_ID] + targets[:-1]]))
            logp = logits[0].double().log_softmax(-1)  # position j predicts targets[j]
            return sum(float(logp[j, targets[j]]) for j in range(first, len(targets)))
        full = inputs + targets
        T = len(full) - 1
        mask = prefix_lm_mask(torch.tensor([T]), torch.tensor([len(inputs) if arch == "prefix_lm" else 0]), T)
        logp = model(torch.tensor([full[:-1]]), mask)[0].double().log_softmax(-1)  # position t predicts full[t + 1]
        start = len(inputs) + first
        return sum(float(logp[t - 1, full[t]]) for t in range(start, len(full)))


@pytest.mark.parametrize("mode", ["clm", "denoising"])
@pytest.mark.parametrize("arch", ARCHS)
def test_rank_task_likelihoods_equal_a_hand_computation(arch, mode, tokenizer, data, tmp_path):
    ours = tiny_seqlab_model(arch, tokenizer)
    out = tmp_path / "out"
    results = evaluate(ours, resolve_tasks([mc_task(mode)]), out, data_root=data, progress=False)["mc"]
    records = read_jsonl(out / "mc.predictions.jsonl")
    shot = f"{SHOT['text']}: {SHOT['choices'][SHOT['label']]}; "
    gold, zero, margin, nbytes = [], [], [], []
    for item, record in zip(ITEMS, records, strict=True):
        scores = [hand_logprob(ours, arch, mode, shot + f"{item['text']}:", c) for c in item["choices"]]
        right = item["label"]
        gold.append(scores[right])
        margin.append(scores[right] - max(s for i, s in enumerate(scores) if i != right))
        zero.append(hand_logprob(ours, arch, mode, f"{item['text']}:", item["choices"][right]))
        nbytes.append(len(item["choices"][right].encode("utf-8")))
        assert record["gold_logprob"] == pytest.approx(gold[-1], abs=1e-5)
        assert record["zero_shot_gold_logprob"] == pytest.approx(zero[-1], abs=1e-5)
        assert record["margin"] == pytest.approx(margin[-1], abs=1e-5)
        assert record["gold_bytes"] == nbytes[-1]
    assert results["gold_ll_per_byte"] == pytest.approx(sum(gold) / sum(nbytes), abs=1e-5)
    assert results["icl_gain_per_byte"] == pytest.approx((sum(gold) - sum(zero)) / sum(nbytes), abs=1e-5)
    assert results["margin"] == pytest.approx(np.mean(margin), abs=1e-5)
    assert abs(results["icl_gain_per_byte"]) > 1e-3  # the shot changes the gold's likelihood: a real check


@pytest.mark.parametrize("mode", ["clm", "denoising"])
@pytest.mark.parametrize("arch", ARCHS)
def test_translation_reference_likelihood_equals_a_hand_computation(arch, mode, tokenizer, data, tmp_path):
    ours = tiny_seqlab_model(arch, tokenizer)
    out = tmp_path / "out"
    tasks = resolve_tasks([{"preset": "flores_de_en", "mode": mode, "max_new_tokens": 3}])
    results = evaluate(ours, tasks, out, data_root=data, progress=False)["flores_de_en"]
    records = read_jsonl(out / "flores_de_en.predictions.jsonl")
    shot = "Sentence: Hallo Welt.; Translation in English: Hello world.; "
    gold, zero = [], []
    for source, reference, record in zip(FLORES["devtest"]["deu"], FLORES["devtest"]["eng"], records, strict=True):
        query = f"Sentence: {source}; Translation in English:"
        gold.append(hand_logprob(ours, arch, mode, shot + query, reference))
        zero.append(hand_logprob(ours, arch, mode, query, reference))
        assert record["gold_logprob"] == pytest.approx(gold[-1], abs=1e-5)
        assert record["zero_shot_gold_logprob"] == pytest.approx(zero[-1], abs=1e-5)
        assert record["gold_bytes"] == len(reference.encode("utf-8")) and "margin" not in record
    nbytes = sum(len(r.encode("utf-8")) for r in FLORES["devtest"]["eng"])
    assert results["gold_ll_per_byte"] == pytest.approx(sum(gold) / nbytes, abs=1e-5)
    assert results["icl_gain_per_byte"] == pytest.approx((sum(gold) - sum(zero)) / nbytes, abs=1e-5)
    assert "margin" not in results


def test_zero_shots_have_no_in_context_gain(tokenizer, data, tmp_path):
    ours = tiny_seqlab_model("causal_lm", tokenizer)
    tasks = resolve_tasks([{**mc_task(), "shots": 0}, {"preset": "flores_de_en", "shots": 0, "max_new_tokens": 2}])
    results = evaluate(ours, tasks, tmp_path / "out", data_root=data, progress=False)
    for label in ("mc", "flores_de_en"):
        assert "icl_gain_per_byte" not in results[label] and "gold_ll_per_byte" in results[label]
        records = read_jsonl(tmp_path / "out" / f"{label}.predictions.jsonl")
        assert all("zero_shot_gold_logprob" not in r and "icl_gain_per_byte" not in r["stats"] for r in records)


def test_zero_shot_examples_that_differ_are_a_data_error(tokenizer, data, monkeypatch):
    from seqlab_plugins.evals.rank_classification import RankClassification

    real = RankClassification.examples
    monkeypatch.setattr(RankClassification, "examples",  # the 0-shot copy of the task loses its first example
                        lambda self, root: real(self, root)[int(self.cfg.shots == 0):])
    with pytest.raises(DataError, match=r"eval task 'mc': with task.shots=0 the data gives other examples"):
        evaluate(tiny_seqlab_model("causal_lm", tokenizer), resolve_tasks([mc_task()]), None, data_root=data, progress=False)


# ---------------------------------------------------------------------------------------------------------------
# Every reported metric is what its per-example statistics give, and what the metric computed directly gives


class CharModel:
    """An EvalModel whose tokens are characters: generations are canned replies to each query, scores a fixed
    function of prompt and continuation (so shots change them)."""

    name = "chars"
    encoder_decoder = True
    max_positions = 10_000

    def __init__(self, replies: dict[str, str]):
        self.replies = replies

    def encode(self, texts):
        return [[ord(c) for c in text] for text in texts]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)

    def special_id(self, token):
        return None

    def score(self, requests):
        return np.array([-0.3 * len(r.continuation) - 0.01 * (len(r.inputs) % 7) - 0.05 * (sum(r.continuation) % 5)
                         for r in requests], dtype=np.float64)

    def generate(self, requests, max_new_tokens, stop=()):
        out = []
        for r in requests:
            prompt = self.decode(r.inputs)
            reply = next(v for k, v in self.replies.items() if prompt.endswith(k))
            out.append(self.encode([reply])[0][:max_new_tokens])
        return out


REPLIES = {"Guten Morgen.; Translation in English:": " Good morning!; Sentence",
           "Danke schön.; Translation in English:": " Thanks you.",
           "Bis bald.; Translation in English:": " See you soon.; more",
           "Good morning.; Translation in Japanese:": " おはよう。",
           "Thank you.; Translation in Japanese:": " ありがとうございます。",
           "See you soon.; Translation in Japanese:": " またね。; x",
           **{f"Report {i}: the council met and voted. ==> Short summary:": f" Council vote {i} failed. <br> x"
              for i in range(3)}}


def test_stats_recombine_to_every_score_and_match_the_direct_metrics(data, tmp_path):
    tasks = resolve_tasks([mc_task(), "flores_de_en", "flores_en_ja",
                           {"name": "summarization", "path": "news.jsonl", "label": "news"}])
    out = tmp_path / "out"
    results = evaluate(CharModel(REPLIES), tasks, out, data_root=data, progress=False)
    saved = json.loads((out / "scores.json").read_text())
    assert saved["scores"] == results
    assert saved["aggregates"] == {
        "mc": {"accuracy": "ratio", "accuracy_norm": "ratio", "accuracy_bytes": "ratio", "gold_ll_per_byte": "ratio",
               "margin": "ratio", "icl_gain_per_byte": "ratio"},
        "flores_de_en": {"chrf++": "chrf", "bleu": "bleu:13a", "gold_ll_per_byte": "ratio",
                         "icl_gain_per_byte": "ratio"},
        "flores_en_ja": {"chrf++": "chrf", "bleu": "bleu:ja-mecab", "gold_ll_per_byte": "ratio",
                         "icl_gain_per_byte": "ratio"},
        "news": {"rouge1": "ratio", "rouge2": "ratio", "rougeL": "ratio", "gold_ll_per_byte": "ratio",
                 "icl_gain_per_byte": "ratio"}}
    assert saved["higher_is_better"] == {label: {name: True for name in names}
                                         for label, names in saved["aggregates"].items()}
    records = {label: read_jsonl(out / f"{label}.predictions.jsonl") for label in results}
    for label, aggregates in saved["aggregates"].items():
        assert set(results[label]) == {*aggregates, "examples", "truncated"}
        for name, aggregate in aggregates.items():
            stats = [r["stats"][name] for r in records[label]]
            assert corpus_score(aggregate, stats) == results[label][name], (label, name)
        rows = records[label]
        assert all(r["stats"]["gold_ll_per_byte"] == [r["gold_logprob"], r["gold_bytes"]] for r in rows)
        assert all(r["stats"]["icl_gain_per_byte"] == [r["gold_logprob"] - r["zero_shot_gold_logprob"],
                                                       r["gold_bytes"]] for r in rows)
        nbytes = sum(r["gold_bytes"] for r in rows)
        assert results[label]["gold_ll_per_byte"] == pytest.approx(sum(r["gold_logprob"] for r in rows) / nbytes)
        gain = sum(r["gold_logprob"] - r["zero_shot_gold_logprob"] for r in rows) / nbytes
        assert results[label]["icl_gain_per_byte"] == pytest.approx(gain) and gain != 0

    mc = records["mc"]
    assert results["mc"]["accuracy"] == 100 * sum(r["prediction"] == r["label"] for r in mc) / len(mc)
    assert results["mc"]["accuracy_norm"] == 100 * sum(r["prediction_norm"] == r["label"] for r in mc) / len(mc)
    assert results["mc"]["accuracy_bytes"] == 100 * sum(r["prediction_bytes"] == r["label"] for r in mc) / len(mc)
    assert results["mc"]["margin"] == pytest.approx(np.mean([r["margin"] for r in mc]))
    assert all(r["stats"]["margin"] == [r["margin"], 1.0] for r in mc)
    for label, lang in (("flores_de_en", "en"), ("flores_en_ja", "ja")):
        preds, refs = [r["prediction"] for r in records[label]], [r["reference"] for r in records[label]]
        assert results[label]["chrf++"] == sacrebleu.corpus_chrf(preds, [refs], word_order=2).score
        assert results[label]["bleu"] == sacrebleu.corpus_bleu(preds, [refs], tokenize=bleu_tokenizer(lang)).score
        assert 0 < results[label]["bleu"] < 100 and 0 < results[label]["chrf++"] < 100
        assert all(len(r["stats"]["chrf++"]) == 24 and len(r["stats"]["bleu"]) == 10 for r in records[label])
    pieces = Tokenizer(resource_path("tokenizer/embedded.model"))
    boundary = pieces.token_id("\u2581")  # the bare word-boundary piece, which ROUGE leaves out

    def units(texts: list[str]) -> list[list[int]]:
        return [[i for i in ids if i != boundary] for ids in pieces.encode(texts)]

    news = records["news"]
    direct = rouge(units([r["prediction"] for r in news]), units([r["reference"] for r in news]))
    for name, value in direct.items():
        assert results["news"][name] == pytest.approx(value, abs=1e-9) and 0 < value < 100
