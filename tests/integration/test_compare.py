"""`seqlab compare`: both models trained and evaluated on equal terms, every report file written, and the
report's numbers equal to what the runs logged."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from seqlab.cli import main
from seqlab.evaluation.compare import accounting, baseline_config, example_lengths, register_compare_schema
from seqlab.experiment import to_run_config
from seqlab.registry import ARCHITECTURES
from seqlab.tokenizer import Tokenizer

TOY_ITEMS = [
    {"text": "The cat sat on the mat", "choices": ["animal", "weather"], "label": 0},
    {"text": "It rained all morning in the town", "choices": ["animal", "weather"], "label": 1},
    {"text": "The dog barked at the postman", "choices": ["animal", "weather"], "label": 0},
    {"text": "Snow is expected tomorrow", "choices": ["animal", "weather"], "label": 1},
]


def _compose_compare(tmp_path: Path, *overrides: str):
    from hydra import compose, initialize_config_dir

    from seqlab.experiment import experiments_dir, setup

    setup()
    register_compare_schema()
    with initialize_config_dir(config_dir=str(experiments_dir()), version_base=None):
        cfg = compose(config_name="compare", overrides=["trainer=smoke", f"cache_dir={tmp_path / 'cache'}",
                                                         "eval.tasks=[]", *overrides])
    return to_run_config(cfg)


def _last(metrics_csv: Path, key: str) -> float:
    with open(metrics_csv) as f:
        return [float(row[key]) for row in csv.DictReader(f) if row.get(key)][-1]


@pytest.mark.parametrize("match", ["parameters", "flops"])
def test_the_derived_baseline_is_the_closest_match(tmp_path, match):
    run = _compose_compare(tmp_path, f"compare.match={match}")
    tokenizer = Tokenizer(run.tokenizer.path)
    lengths = example_lengths(run, tokenizer, 256)
    baseline = baseline_config(run, tokenizer.vocab_size, lengths)
    assert baseline.name == "decoder_only" and baseline.d_model == run.architecture.d_model
    key = "parameters" if match == "parameters" else "flops_per_example"
    # Matched at the longest example; for parameters the lengths only size the position table.
    longest = (np.array([lengths[0].max()]), np.array([lengths[1].max()]))
    target = accounting(run.architecture, tokenizer.vocab_size, longest)[key]
    gaps = {}
    for n_layers in (baseline.n_layers - 1, baseline.n_layers, baseline.n_layers + 1):
        if n_layers >= 1:
            other = type(baseline)(**{**baseline.__dict__, "n_layers": n_layers})
            gaps[n_layers] = abs(accounting(other, tokenizer.vocab_size, longest)[key] - target)
    assert min(gaps, key=gaps.get) == baseline.n_layers


def test_a_named_baseline_is_used_as_is(tmp_path):
    run = _compose_compare(tmp_path, "compare.baseline=seq2seq_tiny_decoder_flops")
    tokenizer = Tokenizer(run.tokenizer.path)
    baseline = baseline_config(run, tokenizer.vocab_size, example_lengths(run, tokenizer, 16))
    assert baseline == ARCHITECTURES.preset("seq2seq_tiny_decoder_flops")


@pytest.mark.slow
def test_compare_multirun_writes_the_report_and_its_numbers_match_the_logs(tmp_path):
    data = tmp_path / "toy"
    data.mkdir()
    (data / "test.jsonl").write_text("".join(json.dumps(item) + "\n" for item in TOY_ITEMS))
    sweep = tmp_path / "sweep"
    task = f"{{name: rank_classification, dataset: jsonl, path: {data}, shots: 0, label: toy, " \
           "query_template: '{text}; Topic:'}"
    code = main(["compare", "-m", "seed=0,1", "trainer=smoke", f"cache_dir={tmp_path / 'cache'}",
                 f"hydra.sweep.dir={sweep}", f"eval.tasks=[{task}]", "eval.progress_bar=false"])
    assert code == 0
    report = sweep / "report"
    for name in ("report.md", "loss_vs_flops.png", "loss_vs_tokens.png", "configs/seq2seq.yaml",
                 "configs/decoder_only.yaml"):
        assert (report / name).is_file(), name
    for png in ("loss_vs_flops.png", "loss_vs_tokens.png"):
        assert (report / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    jobs = [json.loads((sweep / f"seed{seed}" / "results.json").read_text()) for seed in (0, 1)]
    text = (report / "report.md").read_text()
    for name in ("seq2seq", "decoder_only"):
        finals, tokens = [], []
        for job in jobs:
            model = job["models"][name]
            metrics_csv = Path(model["run_dir"]) / "csv" / "metrics.csv"
            assert model["val_final"]["val/loss"] == _last(metrics_csv, "val/loss")
            assert model["tokens_seen"] == _last(metrics_csv, "train/tokens_seen")
            assert model["steps"] == 6
            scores = json.loads((Path(model["run_dir"]) / "eval" / "final" / "scores.json").read_text())
            assert model["eval"]["toy"] == scores["scores"]["toy"]
            predictions = (Path(model["run_dir"]) / "eval" / "final" / "toy.predictions.jsonl").read_text()
            assert len(predictions.splitlines()) == len(TOY_ITEMS)
            finals.append(model["val_final"]["val/loss"])
            tokens.append(model["tokens_seen"])
        # The report's cells are the mean and sample standard deviation of the logged values over seeds.
        assert f"{np.mean(finals):.4f} ± {np.std(finals, ddof=1):.4f}" in text
        assert f"{np.mean(tokens):,.0f} ± {np.std(tokens, ddof=1):,.0f}" in text
    assert "| toy accuracy |" in text and "seeds [0, 1]" in text
    params = [job["models"][n]["parameters"] for job in jobs[:1] for n in ("seq2seq", "decoder_only")]
    assert abs(params[0] - params[1]) / params[0] < 0.05  # matched by parameters (the default)
