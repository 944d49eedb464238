"""Evaluation inside training: every eval.every_n_steps, logged beside the losses, predictions on disk."""
import csv
import json

import pytest

from seqlab.experiment import compose_config, to_run_config
from seqlab.train import train

ITEMS = [
    {"text": "The cat sat on the mat", "choices": ["animal", "weather"], "label": 0},
    {"text": "It rained all morning", "choices": ["animal", "weather"], "label": 1},
    {"text": "Snow is expected tomorrow", "choices": ["animal", "weather"], "label": 1},
]


@pytest.mark.slow
def test_eval_every_n_steps_logs_metrics_and_writes_predictions(tmp_path):
    data = tmp_path / "toy"
    data.mkdir()
    (data / "test.jsonl").write_text("".join(json.dumps(item) + "\n" for item in ITEMS))
    task = f"{{name: rank_classification, dataset: jsonl, path: {data}, shots: 0, label: toy}}"
    run = to_run_config(compose_config(["trainer=smoke", f"cache_dir={tmp_path / 'cache'}", "eval.every_n_steps=3",
                                        f"eval.tasks=[{task}]", "eval.progress_bar=false"]))
    run_dir = tmp_path / "run"
    train(run, run_dir)
    with open(run_dir / "csv" / "metrics.csv") as f:
        logged = {int(row["step"]): float(row["eval/toy/accuracy"]) for row in csv.DictReader(f)
                  if row.get("eval/toy/accuracy")}
    assert sorted(logged) == [3, 6]
    for step, accuracy in logged.items():
        scores = json.loads((run_dir / "eval" / f"step{step}" / "scores.json").read_text())
        assert scores["scores"]["toy"]["accuracy"] == accuracy
        assert accuracy in (0.0, 100 / 3, 200 / 3, 100.0)  # three examples
        records = (run_dir / "eval" / f"step{step}" / "toy.predictions.jsonl").read_text().splitlines()
        assert [json.loads(r)["label"] for r in records] == [item["label"] for item in ITEMS]
