"""The eval tasks on the real FLORES-200, SIB-200 and XCOPA files in ../shared/data, with a tiny random model."""
from __future__ import annotations

import json

import pytest
import torch

from seqlab.evaluation.aggregates import corpus_score
from seqlab.evaluation.harness import evaluate
from seqlab.evaluation.model import SeqlabModel
from seqlab.evaluation.tasks import resolve_tasks
from seqlab.experiment import resource_path
from seqlab.registry import ARCHITECTURES, EVAL_TASKS, load_plugins
from seqlab.tokenizer import Tokenizer
from seqlab_plugins.architectures.decoder_only import DecoderOnlyConfig
from seqlab_plugins.architectures.seq2seq import Seq2SeqConfig

pytestmark = pytest.mark.shared_data

LIMIT = 4
TASKS = [
    {"preset": "flores_de_en", "max_new_tokens": 6},
    {"preset": "flores_en_ja", "max_new_tokens": 6},
    "sib200_hi",
    "xcopa_ta",
]
CONFIGS = {
    "seq2seq": Seq2SeqConfig(name="seq2seq", d_model=32, n_heads=4, encoder_layers=1, decoder_layers=1, d_ff=64,
                             max_positions=256),
    "decoder_only": DecoderOnlyConfig(name="decoder_only", d_model=32, n_heads=4, n_layers=1, d_ff=64,
                                      max_positions=256),
}


def tiny_model(arch: str) -> SeqlabModel:
    load_plugins()
    tokenizer = Tokenizer(resource_path("tokenizer/embedded.model"))
    torch.manual_seed(0)
    model = ARCHITECTURES.build(CONFIGS[arch], vocab_size=tokenizer.vocab_size)
    model.init_weights()
    return SeqlabModel(model, tokenizer, CONFIGS[arch], name=f"tiny-{arch}", batch_size=8)


def lines(path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_paper_tasks_run_on_the_real_data(shared_data, tmp_path, arch):
    model = tiny_model(arch)
    results = evaluate(model, resolve_tasks(TASKS), tmp_path, data_root=shared_data, limit=LIMIT, progress=False)
    assert list(results) == ["flores_de_en", "flores_en_ja", "sib200_hi", "xcopa_ta"]
    for label in ("flores_de_en", "flores_en_ja"):
        assert set(results[label]) == {"chrf++", "bleu", "gold_ll_per_byte", "icl_gain_per_byte", "examples",
                                       "truncated"}
        assert 0.0 <= results[label]["chrf++"] <= 100.0 and 0.0 <= results[label]["bleu"] <= 100.0
    for label in ("sib200_hi", "xcopa_ta"):
        assert set(results[label]) == {"accuracy", "accuracy_norm", "accuracy_bytes", "gold_ll_per_byte", "margin",
                                       "icl_gain_per_byte", "examples", "truncated"}
        assert 0.0 <= results[label]["accuracy"] <= 100.0 and 0.0 <= results[label]["accuracy_norm"] <= 100.0
        assert results[label]["accuracy"] % 25.0 == 0.0  # a whole number of 4 examples right
    for label, metrics in results.items():
        assert metrics["examples"] == LIMIT, label
        records = [json.loads(line) for line in (tmp_path / f"{label}.predictions.jsonl").read_text().splitlines()]
        assert len(records) == LIMIT, label

    sib = [json.loads(line) for line in (tmp_path / "sib200_hi.predictions.jsonl").read_text().splitlines()]
    labels = lines(shared_data / "sib200" / "data" / "annotated" / "hin_Deva" / "labels.txt")
    assert all(r["candidates"] == labels and len(r["loglikelihoods"]) == len(labels) for r in sib)
    assert all(r["loglikelihoods"][0] < 0 for r in sib)  # real scores from the model
    xcopa = [json.loads(line) for line in (tmp_path / "xcopa_ta.predictions.jsonl").read_text().splitlines()]
    assert all(len(r["candidates"]) == 2 for r in xcopa)
    items = {str(item["idx"]): item for item in map(json.loads, lines(shared_data / "xcopa" / "data" / "ta" /
                                                                      "test.ta.jsonl"))}
    for record in xcopa:  # each record is its test item: premise, connector, label
        item = items[record["id"]]
        connector = "காரணமாக" if item["question"] == "cause" else "எனவே"
        assert record["prompt"].endswith(f"; {item['premise'].rstrip(' .。')} {connector}")
        assert record["label"] == item["label"]

    saved = json.loads((tmp_path / "scores.json").read_text())
    assert saved["scores"] == results and saved["model"] == f"tiny-{arch}"
    assert saved["aggregates"]["flores_en_ja"]["bleu"] == "bleu:ja-mecab"
    assert saved["aggregates"]["flores_de_en"]["bleu"] == "bleu:13a"
    for label, metrics in results.items():  # every value is what its per-example statistics give
        records = [json.loads(line) for line in (tmp_path / f"{label}.predictions.jsonl").read_text().splitlines()]
        for name, aggregate in saved["aggregates"][label].items():
            assert corpus_score(aggregate, [r["stats"][name] for r in records]) == metrics[name], (label, name)
        assert all(r["gold_logprob"] < 0 and r["gold_bytes"] > 0 for r in records)
    assert saved["clm_token_used"] == {label: True for label in results}


def test_flores_prompt_and_reference_are_the_real_lines(shared_data, tmp_path):
    (cfg,) = resolve_tasks(["flores_de_en"]).values()
    examples = EVAL_TASKS.build(cfg).examples(shared_data)
    german = lines(shared_data / "flores200" / "devtest" / "deu.devtest")
    english = lines(shared_data / "flores200" / "devtest" / "eng.devtest")
    assert len(examples) == len(german) == len(english)
    prompt = examples[0].prompt
    assert f"Sentence: {german[0]}; Translation in English:" in prompt
    assert prompt.endswith(f"; Sentence: {german[0]}; Translation in English:")
    assert prompt.startswith("Sentence: ") and prompt.count("Translation in English:") == 2  # one shot
    assert examples[0].reference == english[0]
    shot_source = prompt.removeprefix("Sentence: ").split("; Translation in English: ")[0]
    assert shot_source in lines(shared_data / "flores200" / "dev" / "deu.dev")  # the shot comes from dev

    # The same through the harness: each record of a run is the example its id names.
    model = tiny_model("decoder_only")
    evaluate(model, resolve_tasks([{"preset": "flores_de_en", "max_new_tokens": 2}]), tmp_path,
             data_root=shared_data, limit=2, progress=False)
    records = [json.loads(line) for line in (tmp_path / "flores_de_en.predictions.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for record in records:
        i = int(record["id"].removeprefix("devtest:"))
        assert record["prompt"] == examples[i].prompt
        assert record["reference"] == english[i] and record["source"] == german[i]
        assert record["prompt"].endswith(f"; Sentence: {german[i]}; Translation in English:")


def test_denoising_mode_runs_on_the_real_data(shared_data, tmp_path):
    model = tiny_model("seq2seq")
    tasks = resolve_tasks([{"preset": "flores_de_en", "mode": "denoising", "max_new_tokens": 4},
                           {"preset": "xcopa_ta", "mode": "denoising"}])
    results = evaluate(model, tasks, tmp_path, data_root=shared_data, limit=2, progress=False)
    assert results["flores_de_en"]["examples"] == 2 and results["xcopa_ta"]["examples"] == 2
    assert json.loads((tmp_path / "scores.json").read_text())["clm_token_used"] == {"flores_de_en": False,
                                                                                   "xcopa_ta": False}
