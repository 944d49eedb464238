"""Task inputs that would otherwise score silently wrong: choices given as a string, and ROUGE credit for the
bare word-boundary piece (the scoring cases, an empty candidate or prompt, are in test_eval_scoring.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from seqlab.errors import DataError
from seqlab.evaluation.tasks import Example
from seqlab.registry import EVAL_TASKS, load_plugins
from seqlab_plugins.evals.rank_classification import read_jsonl
from seqlab_plugins.evals.summarization import SummarizationConfig


def test_choices_given_as_a_string_are_an_error_naming_file_line_and_field(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text(json.dumps({"text": "a", "options": ["x", "y"], "label": 0}) + "\n"
                    + json.dumps({"text": "b", "options": "xy", "label": 1}) + "\n")
    with pytest.raises(DataError, match=r"test\.jsonl line 2: needs a list 'options'.*'options' is a str"):
        read_jsonl(tmp_path, "test", "options", "label")


def test_rouge_gives_no_credit_for_the_word_boundary_alone(tokenizer, tmp_path):
    load_plugins()
    task = EVAL_TASKS.build(SummarizationConfig(name="summarization", path=str(tmp_path / "x.jsonl")))
    assert tokenizer.encode(["xyz"])[0][0] == tokenizer.encode(["18"])[0][0]  # both start with the bare boundary
    examples = [Example(id="0", prompt="", reference="18"), Example(id="1", prompt="", reference="the cat sat")]
    stats = task.example_stats(examples, ["xyz", "the cat sat"])
    for name in ("rouge1", "rouge2", "rougeL"):
        scores = np.array(stats[name][1])[:, 0]
        assert scores[0] == 0.0 and scores[1] == 100.0
