"""The `seqlab` model type in lm-evaluation-harness: on an exported GPT-2-layout model, lm-eval's own `hf`
backend and the seqlab backend give the same log-likelihoods, greedy flags, choices, rolling log-likelihoods
and generations on local tasks; and a seq2seq checkpoint runs through `seqlab lm-eval`."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local JSONL tasks: nothing to fetch
os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("lm_eval")
pytest.importorskip("transformers")

from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from seqlab.evaluation.lm_harness import SeqlabLM  # noqa: E402
from seqlab.evaluation.model import SeqlabModel  # noqa: E402
from seqlab.registry import ARCHITECTURES, load_plugins  # noqa: E402
from seqlab.tokenizer import EOS_ID  # noqa: E402
from seqlab_plugins.architectures.decoder_only import DecoderOnlyConfig  # noqa: E402
from seqlab_plugins.architectures.export import export_model  # noqa: E402

QUESTIONS = [("The capital of France is", ["Paris", "a small dog", "blue"], 0),
             ("Two plus two makes", ["four", "the cat sat on the mat", "Guten Morgen"], 0),
             ("Ein etwas längerer Satz auf", ["Deutsch", "English words here", "1234"], 0),
             ("digits 1234 and more", ["words", "numbers to read", "zusammen"], 1),
             ("", ["an empty context", "still scored"], 1)]
TEXTS = ["the cat sat on the mat and then it sat on the mat again, a long text in several windows " * 3,
         "Guten Morgen zusammen"]
TASKS = {
    "seqlab_mc": {"output_type": "multiple_choice", "doc_to_text": "{{question}}", "doc_to_choice": "{{choices}}",
                  "doc_to_target": "{{label}}", "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}]},
    "seqlab_rolling": {"output_type": "loglikelihood_rolling", "doc_to_text": "", "doc_to_target": "{{text}}",
                       "metric_list": [{"metric": "word_perplexity"}]},
    "seqlab_gen": {"output_type": "generate_until", "doc_to_text": "{{question}}", "doc_to_target": "{{answer}}",
                   "generation_kwargs": {"until": ["."], "max_gen_toks": 8, "do_sample": False},
                   "metric_list": [{"metric": "exact_match"}]},
}


def write_tasks(root: Path) -> Path:
    rows = {"seqlab_mc": [{"question": q, "choices": c, "label": y} for q, c, y in QUESTIONS],
            "seqlab_rolling": [{"text": t} for t in TEXTS],
            "seqlab_gen": [{"question": q, "answer": c[y]} for q, c, y in QUESTIONS if q]}
    for name, spec in TASKS.items():
        data = root / f"{name}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows[name]))
        # JSON is YAML: lm-eval reads task files as YAML.
        (root / f"{name}.yaml").write_text(json.dumps({"task": name, "dataset_path": "json", "test_split": "test",
                                                       "dataset_kwargs": {"data_files": {"test": str(data)}},
                                                       **spec}))
    return root


@pytest.fixture(scope="module")
def causal(tokenizer, tmp_path_factory) -> tuple[SeqlabModel, Path]:
    """A GPT-2-layout model (causal, as its export is) whose predictions vary, and its export."""
    load_plugins()
    cfg = DecoderOnlyConfig(name="decoder_only", d_model=32, n_layers=2, n_heads=4, d_ff=48, max_positions=48,
                            prefix_lm=False)
    torch.manual_seed(3)
    model = ARCHITECTURES.build(cfg, vocab_size=tokenizer.vocab_size)
    model.init_weights()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * (0.02 if p.ndim == 1 else 0.2))
        model.head.weight[EOS_ID] *= -3
    out = export_model(model.eval(), tokenizer, tmp_path_factory.mktemp("gpt2"))
    return SeqlabModel(model, tokenizer, cfg, name="causal", batch_size=3), out


def samples(results: dict, task: str) -> list:
    return [s["resps"] for s in sorted(results["samples"][task], key=lambda s: s["doc_id"])]


@pytest.mark.slow
def test_the_seqlab_backend_matches_lm_evals_hf_backend(causal, tmp_path):
    ours, export = causal
    tasks = TaskManager(include_path=str(write_tasks(tmp_path)))
    common = dict(tasks=list(TASKS), task_manager=tasks, log_samples=True, device="cpu")
    # An empty context (and the first rolling window) is conditioned on one token: seqlab's is EOS, the token its
    # models see between texts; lm-eval's hf backend takes the tokenizer's BOS unless told otherwise.
    hf = simple_evaluate(model="hf", model_args=f"pretrained={export},dtype=float32,prefix_token_id={EOS_ID}",
                         batch_size=1, **common)
    seqlab = simple_evaluate(model=SeqlabLM(model=ours, mode="clm", mode_token=False, batch_size=3), **common)

    hf_mc, ours_mc = samples(hf, "seqlab_mc"), samples(seqlab, "seqlab_mc")
    hf_ll, ours_ll = ([ll for doc in docs for (ll, _), in doc] for docs in (hf_mc, ours_mc))
    assert len(ours_ll) == sum(len(c) for _, c, _ in QUESTIONS) and all(ll < -1.0 for ll in ours_ll)
    np.testing.assert_allclose(ours_ll, hf_ll, atol=1e-4, rtol=0)
    assert [g for doc in ours_mc for (_, g), in doc] == [g for doc in hf_mc for (_, g), in doc]
    for metric in ("acc,none", "acc_norm,none"):
        assert seqlab["results"]["seqlab_mc"][metric] == hf["results"]["seqlab_mc"][metric]

    # Rolling windows: the long text spans several 48-position windows.
    assert len(ours.encode([TEXTS[0]])[0]) > 2 * ours.max_positions
    hf_roll, ours_roll = samples(hf, "seqlab_rolling"), samples(seqlab, "seqlab_rolling")
    np.testing.assert_allclose([r[0][0] for r in ours_roll], [r[0][0] for r in hf_roll], atol=1e-4, rtol=1e-6)

    hf_gen, ours_gen = samples(hf, "seqlab_gen"), samples(seqlab, "seqlab_gen")
    assert ours_gen == hf_gen and any(r[0][0] for r in ours_gen)  # the same, and not all empty


def test_bad_model_args_name_the_argument(causal):
    ours, _ = causal
    with pytest.raises(Exception, match="mode"):
        SeqlabLM(model=ours, mode="fill_in")
    with pytest.raises(Exception, match="checkpoint=PATH"):
        SeqlabLM()


@pytest.mark.slow
def test_a_seq2seq_checkpoint_through_the_seqlab_lm_eval_command(tokenizer, tmp_path):
    from seqlab.cli import main
    from seqlab.evaluation.likelihood import build_request
    from seqlab.experiment import compose_config, to_run_config
    from seqlab.train import train

    run = to_run_config(compose_config(["architecture=seq2seq_tiny", "trainer=smoke", "trainer.max_steps=2",
                                        "trainer.val_check_interval=2",
                                        "trainer.checkpoint_every_n_steps=2", "data.val_batches=1",
                                        f"cache_dir={tmp_path / 'cache'}"]))
    assert run.architecture.name == "seq2seq"
    train(run, tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    out = tmp_path / "lm_eval"
    code = main(["lm-eval", "--model", "seqlab", "--model_args", f"checkpoint={checkpoint},mode=clm",
                 "--tasks", ",".join(TASKS), "--include_path", str(write_tasks(tmp_path)), "--batch_size", "2",
                 "--output_path", str(out), "--log_samples"])
    assert code == 0
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
    assert set(results) == set(TASKS) and 0 <= results["seqlab_mc"]["acc,none"] <= 1
    assert np.isfinite(results["seqlab_rolling"]["word_perplexity,none"])
    # Each choice scored as `seqlab eval` scores it in clm mode: [CLM] + context to the encoder, the continuation
    # (lm-eval's target delimiter, a space, in front) as the decoder's target.
    model = SeqlabModel.from_checkpoint(checkpoint)
    clm = [model.special_id("[CLM]")]
    logged = [json.loads(line) for line in next(out.rglob("samples_seqlab_mc_*.jsonl")).read_text().splitlines()]
    for sample in logged:
        question, choices, _ = QUESTIONS[sample["doc_id"]]
        for (ll, _), choice in zip((r[0] for r in sample["resps"]), choices):
            context = model.encode([question])[0] if question else [EOS_ID]
            request = build_request(context, clm, "clm", model.encode([" " + choice])[0], 100)[0]
            assert float(ll) == pytest.approx(float(model.score([request])[0]), abs=1e-5)  # logged as text
