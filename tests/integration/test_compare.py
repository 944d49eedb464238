"""`seqlab compare`: a size ladder of compute-matched pairs over seeds, evaluated, reported; every number in
report.md equals the one in results.json, which equals what the runs logged; `seqlab report` re-renders it."""
import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from seqlab.cli import main
from seqlab.evaluation.compare import example_lengths, size_architectures
from seqlab.evaluation.report import cell, fmt
from seqlab.registry import ARCHITECTURES
from seqlab.tokenizer import Tokenizer

TOY_ITEMS = [
    {"text": "The cat sat on the mat", "choices": ["animal", "weather"], "label": 0},
    {"text": "It rained all morning in the town", "choices": ["animal", "weather"], "label": 1},
    {"text": "The dog barked at the postman", "choices": ["animal", "weather"], "label": 0},
    {"text": "Snow is expected tomorrow", "choices": ["animal", "weather"], "label": 1},
    {"text": "A horse ran across the field", "choices": ["animal", "weather"], "label": 0},
    {"text": "The wind blew hard all night", "choices": ["animal", "weather"], "label": 1},
]


def _last(metrics_csv: Path, key: str) -> float:
    with open(metrics_csv) as f:
        return [float(row[key]) for row in csv.DictReader(f) if row.get(key)][-1]


@pytest.mark.parametrize("match", ["parameters", "flops"])
def test_the_derived_baseline_is_the_closest_match(compose_compare, match):
    run = compose_compare(f"compare.match={match}")
    tokenizer = Tokenizer(run.tokenizer.path)
    lengths = example_lengths(run, tokenizer, 256)
    _, baseline = size_architectures(run, run.compare.sizes[0], tokenizer.vocab_size, lengths)
    assert baseline.name == "decoder_only" and baseline.d_model == run.architecture.d_model
    factory = {name: ARCHITECTURES.get(name).factory for name in ("seq2seq", "decoder_only")}
    S, T = int(lengths[0].max()), int(lengths[1].max())

    def cost(arch):
        f = factory[arch.name]
        return f.parameter_count(arch, tokenizer.vocab_size).total if match == "parameters" else \
            f.training_flops(arch, tokenizer.vocab_size, S, T).per_example

    target = cost(run.architecture)
    gaps = {n: abs(cost(type(baseline)(**{**baseline.__dict__, "n_layers": n})) - target)
            for n in (baseline.n_layers - 1, baseline.n_layers, baseline.n_layers + 1) if n >= 1}
    assert min(gaps, key=gaps.get) == baseline.n_layers


def test_sizes_scale_the_model_and_its_named_baseline_alike(compose_compare):
    run = compose_compare("compare.baseline=seq2seq_tiny_decoder_flops",
                           "compare.sizes=[{width: 2, depth: 2}, {preset: seq2seq_small, baseline: seq2seq_small_decoder_params}]")
    tokenizer = Tokenizer(run.tokenizer.path)
    lengths = example_lengths(run, tokenizer, 16)
    model, baseline = size_architectures(run, run.compare.sizes[0], tokenizer.vocab_size, lengths)
    named = ARCHITECTURES.preset("seq2seq_tiny_decoder_flops")
    assert (model.d_model, model.encoder_layers) == (2 * run.architecture.d_model, 2 * run.architecture.encoder_layers)
    assert (baseline.d_model, baseline.n_layers) == (2 * named.d_model, 2 * named.n_layers)
    model, _ = size_architectures(run, run.compare.sizes[1], tokenizer.vocab_size, lengths)
    assert model == ARCHITECTURES.preset("seq2seq_small")


NUMBER = re.compile(r"-?\d[\d,]*\.?\d*(?:e[+-]\d+)?%?")


@pytest.mark.slow
def test_a_ladder_over_seeds_reports_numbers_that_trace_back_to_the_logs(tmp_path):
    data = tmp_path / "toy"
    data.mkdir()
    (data / "test.jsonl").write_text("".join(json.dumps(item) + "\n" for item in TOY_ITEMS))
    sweep = tmp_path / "sweep"
    task = f"{{name: rank_classification, dataset: jsonl, path: {data}, shots: 0, label: toy, " \
           "query_template: '{text}; Topic:'}"
    code = main(["compare", "-m", "seed=0,1", "trainer=smoke", f"cache_dir={tmp_path / 'cache'}",
                 "compare.sizes=[{width: 0.5},{},{width: 2}]", "compare.bootstrap=200", "data.batch_size=4",
                 "data.val_batches=1", "trainer.checkpoint_every_n_steps=100",
                 f"hydra.sweep.dir={sweep}", f"eval.tasks=[{task}]", "eval.progress_bar=false"])
    assert code == 0
    report = sweep / "report"
    for name in ("report.md", "results.json", "loss_vs_flops.png", "eval_vs_flops.png"):
        assert (report / name).is_file(), name
    assert (report / "loss_vs_flops.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((report / "results.json").read_text())
    text = (report / "report.md").read_text()
    assert len(results["runs"]) == 12 and results["seeds"] == [0, 1] and len(results["sizes"]) == 3
    # results.json holds what the runs logged and evaluated.
    for run in results["runs"]:
        metrics_csv = Path(run["run_dir"]) / "csv" / "metrics.csv"
        assert run["val_final"]["val/loss"] == _last(metrics_csv, "val/loss")
        assert run["tokens_seen"] == _last(metrics_csv, "train/tokens_seen")
        assert run["flops_seen"] == _last(metrics_csv, "train/flops_seen")
        scores = json.loads((Path(run["eval_dir"]) / "scores.json").read_text())
        assert run["eval"]["toy"] == scores["scores"]["toy"]
        assert len((Path(run["eval_dir"]) / "toy.predictions.jsonl").read_text().splitlines()) == len(TOY_ITEMS)
    # Each table row of report.md is exactly the numbers of its results.json row, with CIs and a verdict.
    for size in results["sizes"]:
        for row in size["rows"]:
            line = next(l for l in text.splitlines() if l.startswith(f"| {row['metric']} |")
                        and cell(row["model"]) in l)
            assert line == (f"| {row['metric']} | {cell(row['model'])} | {cell(row['baseline'])} | "
                            f"{cell(row['difference'])} | {row['verdict']} |")
            seeds = [r for r in results["runs"] if r["size"] == size["index"] and r["role"] == "model"]
            if row["metric"] == "final val/loss":
                assert row["model"]["estimate"] == pytest.approx(np.mean([r["val_final"]["val/loss"] for r in seeds]))
        assert {row["metric"] for row in size["rows"]} >= {"final val/loss", "toy accuracy", "toy gold_ll_per_byte"}
    # Every number printed in the tables appears in results.json (at the printed precision).
    printed = set()
    for value in _numbers(results):
        printed |= {fmt(value), f"{value:,.0f}", f"{value:.3%}"}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| size"):
            for number in NUMBER.findall("|".join(line.split("|")[2:-2])):  # the value cells, not the verdict
                assert number in printed, (number, line)
    # The report says how far each model's realised FLOPs are from the size's budget (test_budget.py checks
    # the 1% match at a realistic number of steps; 6 smoke steps make one step a large share).
    for size in results["sizes"]:
        for role in ("model", "baseline"):
            runs = [r for r in results["runs"] if r["size"] == size["index"] and r["role"] == role]
            assert size["roles"][role]["budget_deviation"] == max(abs(r["flops_seen"] / r["target"] - 1) for r in runs)
    assert results["fit"]["available"] and "Compute multiplier" in text
    # `seqlab report` renders the same report again from the finished jobs, without training.
    (report / "report.md").unlink()
    assert main(["report", str(sweep), "--bootstrap", "200"]) == 0
    assert (report / "report.md").read_text() == text


def _numbers(node):
    if isinstance(node, bool) or node is None:
        return
    if isinstance(node, (int, float)):
        yield float(node)
    elif isinstance(node, dict):
        for v in node.values():
            yield from _numbers(v)
    elif isinstance(node, list):
        for v in node:
            yield from _numbers(v)


def test_report_of_an_empty_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no results.json" in capsys.readouterr().err
