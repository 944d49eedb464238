"""`extractive_qa`: SQuAD v2-style question answering by generation, scored with exact match and F1 under
SQuAD's official answer normalisation, unanswerable questions included.

Each item has a context, a question and its gold answers; an item with no gold answer is unanswerable, and
the model should say `task.no_answer` ("unanswerable", lm-evaluation-harness's SQuAD v2 wording; the shots
show it). As the official script does, a prediction is compared with every gold answer and keeps its best
score, and an unanswerable item scores 1 exactly when the prediction is empty (saying `no_answer` counts as
empty). Normalisation: lower case, punctuation removed, the articles a/an/the removed, whitespace collapsed;
F1 is over the normalised words. Besides `exact_match` and `f1` over all items, `has_answer_f1` and
`no_answer_exact` report the two kinds separately (the official HasAns/NoAns split), where the set has them.
"""
from __future__ import annotations

import json
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence

from omegaconf import MISSING

from seqlab.config import EvalTaskConfig
from seqlab.errors import DataError, require
from seqlab.evaluation.aggregates import RATIO
from seqlab.evaluation.tasks import Example, items_and_shot_pool, shot_prompts
from seqlab.registry import EVAL_TASKS

LAYOUT = ("a JSONL file, one item per line with the context, question and answers fields (task.context_field, "
          "task.question_field, task.answers_field); answers is a list of strings or SQuAD's "
          "{\"text\": [...], \"answer_start\": [...]}, empty for an unanswerable question")
SQUAD_V2_LAYOUT = "SQuAD v2: squad_v2/{split}.jsonl, the Hugging Face squad_v2 rows as JSON lines"


@dataclass
class ExtractiveQAConfig(EvalTaskConfig):
    path: str = MISSING  # the test set, a JSONL file
    shot_path: Optional[str] = None  # where shots come from; None: other items of the test file
    context_field: str = "context"
    question_field: str = "question"
    answers_field: str = "answers"
    no_answer: str = "unanswerable"  # what the model says to an unanswerable question (the shots show it)
    shot_template: str = "{context}\nQuestion: {question}\nAnswer: {answer}"
    query_template: str = "{context}\nQuestion: {question}\nAnswer:"
    separator: str = "\n\n"
    stop: List[str] = field(default_factory=lambda: ["\n"])
    max_new_tokens: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.path not in ("", MISSING), "task.path", self.path, f"must name a JSONL file: {LAYOUT}")
        require(self.max_new_tokens >= 1, "task.max_new_tokens", self.max_new_tokens, "must be >= 1")
        require(normalize_answer(self.no_answer) != "", "task.no_answer", self.no_answer,
                "must have words that survive SQuAD's normalisation")


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(c for c in text.lower() if c not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
    """Word-overlap F1 of the normalised strings; with an empty side, 1 if both are empty, else 0."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def best_scores(prediction: str, golds: Sequence[str], no_answer: str) -> tuple[float, float]:
    """(exact match, F1) of a prediction against its best gold answer; no gold answer: the empty one."""
    if normalize_answer(prediction) == normalize_answer(no_answer):
        prediction = ""
    golds = list(golds) or [""]
    return max(exact_match(prediction, g) for g in golds), max(f1(prediction, g) for g in golds)


def _answers(value: Any) -> list[str]:
    if isinstance(value, dict):  # SQuAD / Hugging Face layout: {"text": [...], "answer_start": [...]}
        value = value["text"]
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise TypeError(f"answers must be a list of strings or {{'text': [...]}}, got {type(value).__name__}")
    return value


def read_items(path: Path, cfg: ExtractiveQAConfig) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"eval data not found at {path}; expected layout: {LAYOUT}")
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            items.append({"id": str(raw.get("id", n)), "context": str(raw[cfg.context_field]),
                          "question": str(raw[cfg.question_field]), "golds": _answers(raw[cfg.answers_field])})
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(f"{path} line {n}: needs {cfg.context_field!r}, {cfg.question_field!r} and a list "
                            f"{cfg.answers_field!r} ({type(err).__name__}: {err})") from None
    if not items:
        raise DataError(f"{path}: no items; expected {LAYOUT}")
    for item in items:  # a shot's answer: its first gold answer, or the no-answer wording
        item["answer"] = item["golds"][0] if item["golds"] else cfg.no_answer
    return items


@EVAL_TASKS.register("extractive_qa", config=ExtractiveQAConfig, example={"path": "qa.jsonl"})
class ExtractiveQA:
    """Answer each question about its context after k solved items."""

    def __init__(self, cfg: ExtractiveQAConfig):
        self.cfg = cfg
        self.label = f"extractive_qa_{Path(cfg.path).stem}"
        self.max_new_tokens = cfg.max_new_tokens
        self.stop = list(cfg.stop)

    def examples(self, data_root: Path | None) -> list[Example]:
        test, pool, own_pool = items_and_shot_pool(self.cfg, data_root, LAYOUT, lambda path: read_items(path, self.cfg))
        return [Example(id=item["id"], prompt=prompt, reference=item["answer"], fields={"answers": item["golds"]})
                for item, prompt in zip(test, shot_prompts(self.cfg, test, pool, same_pool=own_pool))]

    def example_stats(self, examples: Sequence[Example],
                      predictions: Sequence[str]) -> dict[str, tuple[str, list[list[float]]]]:
        stats: dict[str, tuple[str, list[list[float]]]] = {
            name: (RATIO, []) for name in ("exact_match", "f1", "has_answer_f1", "no_answer_exact")}
        for example, prediction in zip(examples, predictions):
            golds = example.fields["answers"]
            em, score = best_scores(prediction, golds, self.cfg.no_answer)
            has = 1.0 if golds else 0.0
            stats["exact_match"][1].append([100.0 * em, 1.0])
            stats["f1"][1].append([100.0 * score, 1.0])
            stats["has_answer_f1"][1].append([100.0 * score * has, has])
            stats["no_answer_exact"][1].append([100.0 * em * (1 - has), 1 - has])
        # A split with no items has no score (0 / 0): it is left out rather than reported as NaN.
        return {name: value for name, value in stats.items() if sum(w for _, w in value[1]) > 0}


EVAL_TASKS.register_preset(
    "squad_v2", ExtractiveQAConfig(name="extractive_qa", path="squad_v2/validation.jsonl",
                                   shot_path="squad_v2/train.jsonl", shots=1),
    f"1-shot SQuAD v2 (extractive QA, unanswerable questions included), EM and F1; {SQUAD_V2_LAYOUT}")
