"""`generate_match`: free generation, an extractor, then exact match (GSM8K, MGSM and other short-answer sets).

The model answers each question greedily (after k shots, which may carry a chain of thought: GSM8K's answers
do); an extractor takes the answer out of the text and it is compared with the gold. Extractors:
`last_number` (lm-evaluation-harness's flexible extract: the last number in the text), `first_number`, `regex`
(`task.pattern`: its first group, or the whole match, at the first match) and `full` (the whole prediction).
A prediction with nothing to extract is wrong. Matching: `number` compares numbers by value ("1,000" = "1000.0",
digits of any script), falling back to text when either side is not a number; `text` compares the stripped
strings (case-folded with `task.ignore_case`). The gold is the answer field, or what `task.reference_pattern`
finds in it (GSM8K: "#### (.*)").
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, List, Optional, Sequence

from omegaconf import MISSING

from seqlab.config import EvalTaskConfig
from seqlab.errors import DataError, require
from seqlab.evaluation.aggregates import RATIO
from seqlab.evaluation.records import read_records, require_fields
from seqlab.evaluation.tasks import Example, items_and_shot_pool, shot_prompts, template_fields
from seqlab.registry import EVAL_TASKS

LAYOUT = ("a .jsonl file (one object per line) or a .tsv file (a header row, or task.columns), with the fields "
          "the query template names and the answer field (task.answer_field)")
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")  # \d: digits of every script
EXTRACTORS = ("last_number", "first_number", "regex", "full")
MATCHES = ("number", "text")


def _is_regex(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


@dataclass
class GenerateMatchConfig(EvalTaskConfig):
    path: str = MISSING  # the test set: a .jsonl or .tsv file
    shot_path: Optional[str] = None  # where shots come from; None: other items of the test file
    answer_field: str = "answer"
    reference_pattern: Optional[str] = None  # the gold in answer_field: this regex's first group; None: all of it
    id_field: str = "id"  # an item without it is named by its line number
    columns: Optional[List[str]] = None  # a headerless TSV's column names
    extract: str = "last_number"  # last_number | first_number | regex | full
    pattern: Optional[str] = None  # extract=regex: the answer is its first group (or whole match)
    match: str = "number"  # number | text
    ignore_case: bool = True  # text matching only
    shot_template: str = "Question: {question} Answer: {answer}"
    query_template: str = "Question: {question} Answer:"
    separator: str = " <br> "
    stop: List[str] = field(default_factory=lambda: ["Question:", "<br>"])
    max_new_tokens: int = 256  # room for a chain of thought

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.path not in ("", MISSING), "task.path", self.path, f"must name a file: {LAYOUT}")
        require(self.extract in EXTRACTORS, "task.extract", self.extract, f"must be one of {', '.join(EXTRACTORS)}")
        require(self.match in MATCHES, "task.match", self.match, f"must be one of {', '.join(MATCHES)}")
        require((self.extract == "regex") == (self.pattern is not None), "task.pattern", self.pattern,
                "is required by task.extract=regex and used by nothing else")
        for key in ("pattern", "reference_pattern"):
            value = getattr(self, key)
            require(value is None or _is_regex(value), f"task.{key}", value, "must be a valid regular expression")
        require(self.max_new_tokens >= 1, "task.max_new_tokens", self.max_new_tokens, "must be >= 1")


def first_match(pattern: re.Pattern, text: str) -> str | None:
    found = pattern.search(text)
    if found is None:
        return None
    return (found.group(1) if pattern.groups else found.group(0)).strip()


def extract(text: str, how: str, pattern: re.Pattern | None = None) -> str | None:
    """The answer in a prediction, or None when there is none."""
    if how == "full":
        return text.strip() or None
    if how == "regex":
        return first_match(pattern, text)
    numbers = NUMBER.findall(text)
    if not numbers:
        return None
    return numbers[-1] if how == "last_number" else numbers[0]


def as_number(text: str) -> Decimal | None:
    """"1,000.50" -> 1000.50, "$18." -> 18, "١٨" -> 18; None when the text is not one number."""
    text = text.strip().removeprefix("$").rstrip(".").replace(",", "")
    text = "".join(str(unicodedata.digit(c)) if c.isdigit() else c for c in text)
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def matches(answer: str | None, gold: str, how: str, ignore_case: bool) -> bool:
    if answer is None:
        return False
    if how == "number":
        a, b = as_number(answer), as_number(gold)
        if a is not None and b is not None:
            return a == b
    if ignore_case:
        return answer.strip().casefold() == gold.strip().casefold()
    return answer.strip() == gold.strip()


def read_items(path: Path, cfg: GenerateMatchConfig) -> list[dict[str, Any]]:
    needed = sorted(template_fields(cfg.query_template) | {cfg.answer_field})
    gold_pattern = re.compile(cfg.reference_pattern) if cfg.reference_pattern else None
    items = []
    for line, raw in read_records(path, LAYOUT, cfg.columns):
        require_fields(path, line, raw, needed, "task.query_template or task.answer_field")
        answer = str(raw[cfg.answer_field])
        gold = answer.strip() if gold_pattern is None else first_match(gold_pattern, answer)
        if not gold:
            raise DataError(f"{path} line {line}: no gold answer in {cfg.answer_field}="
                            f"{answer[-80:]!r}" + (f" (task.reference_pattern={cfg.reference_pattern!r})"
                                                   if gold_pattern else ""))
        items.append({**raw, "id": str(raw.get(cfg.id_field, line)), "answer": answer, "gold": gold})
    return items


@EVAL_TASKS.register("generate_match", config=GenerateMatchConfig, example={"path": "arithmetic.jsonl"})
class GenerateMatch:
    """Answer each question after k solved ones; extract the answer and compare it with the gold."""

    def __init__(self, cfg: GenerateMatchConfig):
        self.cfg = cfg
        self.label = f"generate_match_{Path(cfg.path).stem}"
        self.max_new_tokens = cfg.max_new_tokens
        self.stop = list(cfg.stop)
        self.pattern = re.compile(cfg.pattern) if cfg.pattern else None

    def examples(self, data_root: Path | None) -> list[Example]:
        test, pool, own_pool = items_and_shot_pool(self.cfg, data_root, LAYOUT, lambda path: read_items(path, self.cfg))
        return [Example(id=item["id"], prompt=prompt, reference=item["answer"], fields={"gold": item["gold"]})
                for item, prompt in zip(test, shot_prompts(self.cfg, test, pool, same_pool=own_pool))]

    def prediction_fields(self, examples: Sequence[Example], predictions: Sequence[str]) -> list[dict[str, Any]]:
        """What each prediction's record gains: the extracted answer (None: nothing found)."""
        return [{"extracted": extract(p, self.cfg.extract, self.pattern)} for p in predictions]

    def example_stats(self, examples: Sequence[Example],
                      predictions: Sequence[str]) -> dict[str, tuple[str, list[list[float]]]]:
        rows = [[100.0 * matches(extract(p, self.cfg.extract, self.pattern), ex.fields["gold"], self.cfg.match,
                                 self.cfg.ignore_case), 1.0] for ex, p in zip(examples, predictions)]
        return {"exact_match": (RATIO, rows)}


# GSM8K (Cobbe et al. 2021), the Hugging Face `gsm8k` "main" rows: shots show the worked answer, "#### N" last.
EVAL_TASKS.register_preset(
    "gsm8k", GenerateMatchConfig(name="generate_match", path="gsm8k/test.jsonl", shot_path="gsm8k/train.jsonl",
                                 shots=5, reference_pattern=r"####\s*(.+)$"),
    "5-shot GSM8K with worked answers, last number vs the gold; gsm8k/{test,train}.jsonl (question, answer)")
# MGSM (Shi et al. 2022) in the paper's languages it covers: the release's headerless mgsm_{lang}.tsv.
for _lang in ("de", "en", "es", "fr", "ja", "te"):
    EVAL_TASKS.register_preset(
        f"mgsm_{_lang}", GenerateMatchConfig(name="generate_match", path=f"mgsm/mgsm_{_lang}.tsv", shots=0,
                                             columns=["question", "answer_number"], answer_field="answer_number"),
        f"0-shot MGSM ({_lang}), last number vs the gold; mgsm/mgsm_{_lang}.tsv (question, answer number; no header)")
