"""`partial_scoring`: Winograd-style schemas (XWinograd, WinoGrande) by partial scoring.

A sentence has a blank (`task.blank`, "_") and options to fill it. Each option makes its own context, the
sentence up to the blank with the option in it; what follows the blank is the same for every option, and only
that continuation is scored (Trinh & Le 2018's partial scoring, lm-evaluation-harness's winogrande). The option
under which the continuation is likeliest is the answer. Shots are whole sentences with their right option.

Templates see the item's fields and: `context` (before the blank + the option), `continuation` (after the
blank, stripped: scored as a new word, as lm-evaluation-harness prefixes it with a space) and `filled` (the
sentence with the right option: a shot).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from omegaconf import MISSING

from seqlab.config import EvalTaskConfig
from seqlab.errors import DataError, require
from seqlab.evaluation.records import read_records, require_fields
from seqlab.evaluation.tasks import Example, few_shot_prompt, items_and_shot_pool, pick_shots
from seqlab.registry import EVAL_TASKS

LAYOUT = ("a .jsonl file (or .tsv with a header row), one schema per item: the sentence with one blank "
          "(task.sentence_field, task.blank), the options (task.option_fields) and the right one's number "
          "(task.answer_field, counted from task.answer_base)")


@dataclass
class PartialScoringConfig(EvalTaskConfig):
    path: str = MISSING  # the test set: a .jsonl or .tsv file
    shot_path: Optional[str] = None  # where shots come from; None: other items of the test file
    sentence_field: str = "sentence"
    option_fields: List[str] = field(default_factory=lambda: ["option1", "option2"])
    answer_field: str = "answer"
    answer_base: int = 1  # the number of the first option in answer_field (WinoGrande, XWinograd: "1" or "2")
    id_field: str = "id"  # an item without it is named by its line number
    blank: str = "_"
    shot_template: str = "{filled}"
    query_template: str = "{context}"
    separator: str = " "
    shots: int = 0  # the paper evaluates XWinograd zero-shot

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.path not in ("", MISSING), "task.path", self.path, f"must name a file: {LAYOUT}")
        require(len(self.option_fields) >= 2, "task.option_fields", list(self.option_fields),
                "needs at least 2 option fields")
        require(self.blank != "", "task.blank", self.blank, "must be the non-empty marker of the blank")
        require(self.answer_base in (0, 1), "task.answer_base", self.answer_base, "must be 0 or 1")


def read_items(path: Path, cfg: PartialScoringConfig) -> list[dict[str, Any]]:
    items = []
    for line, raw in read_records(path, LAYOUT, None):
        require_fields(path, line, raw, [cfg.sentence_field, *cfg.option_fields, cfg.answer_field],
                       "task.sentence_field, task.option_fields or task.answer_field")
        sentence = str(raw[cfg.sentence_field])
        if sentence.count(cfg.blank) != 1:
            raise DataError(f"{path} line {line}: {cfg.sentence_field} must hold the blank {cfg.blank!r} exactly "
                            f"once; it holds it {sentence.count(cfg.blank)} times: {sentence[:80]!r}")
        try:
            label = int(raw[cfg.answer_field]) - cfg.answer_base
        except (TypeError, ValueError):
            label = -1
        if not 0 <= label < len(cfg.option_fields):
            raise DataError(f"{path} line {line}: {cfg.answer_field}={raw[cfg.answer_field]!r} is not an option "
                            f"number from {cfg.answer_base} to {cfg.answer_base + len(cfg.option_fields) - 1}")
        before, after = sentence.split(cfg.blank)
        if not after.strip():
            raise DataError(f"{path} line {line}: nothing follows the blank in {cfg.sentence_field}, so there is "
                            f"no continuation to score: {sentence[:80]!r}")
        options = [str(raw[name]) for name in cfg.option_fields]
        items.append({**raw, "id": str(raw.get(cfg.id_field, line)), "label": label, "options": options,
                      "before": before, "continuation": after.strip(),
                      "filled": before + options[label] + after})
    return items


@EVAL_TASKS.register("partial_scoring", config=PartialScoringConfig, example={"path": "winograd.jsonl"})
class PartialScoring:
    """Score the words after the blank under each option; the option that makes them likeliest wins."""

    def __init__(self, cfg: PartialScoringConfig):
        self.cfg = cfg
        self.label = f"partial_scoring_{Path(cfg.path).stem}"

    def examples(self, data_root: Path | None) -> list[Example]:
        cfg = self.cfg
        test, pool, own_pool = items_and_shot_pool(cfg, data_root, LAYOUT, lambda path: read_items(path, cfg))
        out = []
        for i, item in enumerate(test):
            shots = [pool[j] for j in pick_shots(len(pool), cfg.shots, cfg.seed, i, exclude=i if own_pool else None)]
            contexts = tuple(few_shot_prompt(cfg.shot_template, cfg.query_template, cfg.separator, shots,
                                             {**item, "context": item["before"] + option})
                             for option in item["options"])
            out.append(Example(id=item["id"], prompt=contexts[item["label"]], label=item["label"], contexts=contexts,
                               candidates=(item["continuation"],) * len(contexts),
                               fields={"options": item["options"]}))
        return out


# XWinograd (Tikhonov & Ryabinin 2021), the Hugging Face `xwinograd` rows as JSON lines; its Japanese config is "jp".
for _lang, _folder in (("en", "en"), ("fr", "fr"), ("ja", "jp"), ("pt", "pt")):
    EVAL_TASKS.register_preset(
        f"xwinograd_{_lang}",
        PartialScoringConfig(name="partial_scoring", path=f"xwinograd/{_folder}/test.jsonl"),
        f"0-shot XWinograd ({_lang}) by partial scoring; xwinograd/{_folder}/test.jsonl (sentence with _, "
        "option1, option2, answer 1|2)")
