"""extractive_qa: SQuAD v2's normalisation, exact match and F1 on known strings, unanswerable questions, the
harness end to end, and malformed files named by file, line and field."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import CharModel, write_jsonl

from seqlab.errors import DataError
from seqlab.evaluation.harness import evaluate
from seqlab.evaluation.tasks import resolve_tasks
from seqlab.registry import EVAL_TASKS, load_plugins
from seqlab_plugins.evals.extractive_qa import ExtractiveQAConfig, best_scores, exact_match, f1, normalize_answer


@pytest.fixture(autouse=True, scope="module")
def plugins():
    load_plugins()


def test_normalisation_follows_squad():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("An apple, a pear; the end.") == "apple pear end"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words
    assert normalize_answer("  ") == ""


def test_exact_match_and_f1_on_known_strings():
    assert exact_match("the eiffel tower", "Eiffel Tower.") == 1.0
    assert exact_match("Eiffel", "Eiffel Tower") == 0.0
    # 2 shared words of 4 predicted and 2 gold: precision 1/2, recall 1, F1 2/3.
    assert f1("Eiffel Tower in Paris", "the Eiffel Tower") == pytest.approx(2 / 3)
    assert f1("tower tower", "tower") == pytest.approx(2 / 3)  # a word counts as often as both sides have it
    assert f1("Paris", "Lyon") == 0.0
    assert f1("a", "the") == 1.0 and f1("", "Paris") == 0.0  # empty after normalisation: equal or not


def test_best_gold_and_unanswerable_questions():
    assert best_scores("1842", ["in 1842", "1842"], "unanswerable") == (1.0, 1.0)
    assert best_scores("in the year 1842", ["1842", "in 1842"], "unanswerable") == (0.0, pytest.approx(0.8))
    assert best_scores("Unanswerable.", [], "unanswerable") == (1.0, 1.0)
    assert best_scores("", [], "unanswerable") == (1.0, 1.0)
    assert best_scores("Paris", [], "unanswerable") == (0.0, 0.0)
    assert best_scores("unanswerable", ["Paris"], "unanswerable") == (0.0, 0.0)


ITEMS = [
    {"id": "a", "context": "Paris is the capital of France.", "question": "Capital of France?",
     "answers": {"text": ["Paris", "Paris, France"], "answer_start": [0, 0]}},
    {"id": "b", "context": "The tower opened in 1889.", "question": "When did it open?", "answers": ["in 1889"]},
    {"id": "c", "context": "Cats sleep a lot.", "question": "Who built the tower?", "answers": []},
    {"id": "d", "context": "Water boils at 100 C.", "question": "Who wrote it?", "answers": {"text": []}},
]
REPLIES = {"Capital of France?": "paris\nmore", "When did it open?": "It opened in 1889",
           "Who built the tower?": "unanswerable", "Who wrote it?": "Gustave"}


class ReplyModel(CharModel):
    """Answers each question from REPLIES and scores by length."""

    def score(self, requests):
        return np.array([-1.0 * len(r.continuation) for r in requests])

    def generate(self, requests, max_new_tokens, stop=()):
        out = []
        for r in requests:
            question = self.decode(r.inputs).rsplit("Question: ", 1)[1].split("\n")[0]
            out.append(self.encode([REPLIES[question]])[0][:max_new_tokens])
        return out


def test_the_harness_scores_em_f1_and_the_two_splits(tmp_path):
    write_jsonl(tmp_path / "qa.jsonl", ITEMS)
    tasks = resolve_tasks([{"name": "extractive_qa", "path": "qa.jsonl", "shots": 1, "label": "qa"}])
    results = evaluate(ReplyModel(), tasks, tmp_path / "out", data_root=tmp_path, progress=False)["qa"]
    # Predictions, cut at "\n": "paris" (EM 1), "It opened in 1889" (F1 of 2 shared words of 4 and 2 = 2/3),
    # "unanswerable" on an unanswerable item (EM 1), "Gustave" on one (0).
    assert results["exact_match"] == pytest.approx(100 * 2 / 4)
    assert results["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1 + 0) / 4)
    assert results["has_answer_f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert results["no_answer_exact"] == pytest.approx(50.0)
    records = [json.loads(line) for line in (tmp_path / "out" / "qa.predictions.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in records] == ["paris", "It opened in 1889", "unanswerable", "Gustave"]
    assert [r["reference"] for r in records] == ["Paris", "in 1889", "unanswerable", "unanswerable"]


def test_a_set_without_unanswerable_items_reports_no_no_answer_score(tmp_path):
    write_jsonl(tmp_path / "qa.jsonl", ITEMS[:2])
    tasks = resolve_tasks([{"name": "extractive_qa", "path": "qa.jsonl", "shots": 0, "label": "qa"}])
    results = evaluate(ReplyModel(), tasks, tmp_path / "out", data_root=tmp_path, progress=False)["qa"]
    assert "no_answer_exact" not in results and results["has_answer_f1"] == results["f1"]


@pytest.mark.parametrize("bad, message", [
    ({"context": "c", "question": "q", "answers": "Paris"}, r"line 2: .*'answers'.*list of strings"),
    ({"context": "c", "answers": []}, r"line 2: needs 'context', 'question'.*KeyError"),
])
def test_a_malformed_item_names_file_line_and_field(tmp_path, bad, message):
    write_jsonl(tmp_path / "qa.jsonl", [ITEMS[1], bad])
    task = EVAL_TASKS.build(ExtractiveQAConfig(name="extractive_qa", path="qa.jsonl"))
    with pytest.raises(DataError, match=r"qa\.jsonl " + message):
        task.examples(tmp_path)


def test_the_squad_v2_preset_reads_its_documented_layout():
    cfg = EVAL_TASKS.preset("squad_v2")
    assert (cfg.path, cfg.shot_path, cfg.shots) == ("squad_v2/validation.jsonl", "squad_v2/train.jsonl", 1)
