"""`pair_classification`: sentence-pair (or passage-question) classification by ranking verbalised labels: XNLI,
PAWS-X and SuperGLUE's BoolQ, CB and RTE, or any local JSONL/TSV set, through config alone.

An item's fields fill the query template; each label's verbaliser (`task.verbalizers`, label value -> words, in
the order the candidates are ranked) is scored as the prompt's continuation, and the likeliest is the answer.
Shots show their own label's verbaliser as `{answer}`. Label values are matched as strings: a TSV's "1", a
JSON 1 and a JSON true are the keys "1", "1" and "true".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from seqlab.config import EvalTaskConfig
from seqlab.errors import DataError, require
from seqlab.evaluation.records import label_key, read_records, require_fields
from seqlab.evaluation.tasks import Example, items_and_shot_pool, shot_prompts, template_fields
from seqlab.registry import EVAL_TASKS

LAYOUT = ("a .jsonl file (one object per line) or a .tsv file with a header row, holding the fields the query "
          "template names and the label field (task.label_field), whose values are task.verbalizers' keys")
NLI = "{premise} Question: {hypothesis} True, False or Neither? Answer:"  # GPT-3's CB/ANLI prompt


@dataclass
class PairClassificationConfig(EvalTaskConfig):
    path: str = MISSING  # the test set: a .jsonl or .tsv file
    shot_path: Optional[str] = None  # where shots come from; None: other items of the test file
    label_field: str = "label"
    id_field: str = "id"  # an item without it is named by its line number
    verbalizers: Dict[str, str] = field(default_factory=lambda: {"0": "True", "1": "Neither", "2": "False"})
    columns: Optional[List[str]] = None  # a headerless TSV's column names
    shot_template: str = NLI + " {answer}"
    query_template: str = NLI
    separator: str = " <br> "
    shots: int = 0  # the paper evaluates these tasks zero-shot

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.path not in ("", MISSING), "task.path", self.path, f"must name a file: {LAYOUT}")
        require(len(self.verbalizers) >= 2, "task.verbalizers", dict(self.verbalizers),
                "needs at least 2 labels (label value -> the words scored for it)")
        words = list(self.verbalizers.values())
        require(all(w.strip() for w in words) and len(set(words)) == len(words), "task.verbalizers",
                dict(self.verbalizers), "each label needs its own non-empty words")
        require("answer" not in template_fields(self.query_template), "task.query_template", self.query_template,
                "must not contain {answer}: that is the label being predicted")


def read_items(path: Path, cfg: PairClassificationConfig) -> list[dict[str, Any]]:
    keys = list(cfg.verbalizers)
    needed = template_fields(cfg.query_template) | {cfg.label_field}
    items = []
    for line, raw in read_records(path, LAYOUT, cfg.columns):
        require_fields(path, line, raw, sorted(needed), "task.query_template or task.label_field")
        key = label_key(raw[cfg.label_field])
        if key not in cfg.verbalizers:
            raise DataError(f"{path} line {line}: {cfg.label_field}={raw[cfg.label_field]!r} is not one of "
                            f"task.verbalizers' labels ({', '.join(keys)})")
        label = keys.index(key)
        items.append({**raw, "id": str(raw.get(cfg.id_field, line)), "label": label,
                      "answer": cfg.verbalizers[key]})
    return items


@EVAL_TASKS.register("pair_classification", config=PairClassificationConfig, example={"path": "nli.jsonl"})
class PairClassification:
    """Rank every label's verbaliser after the item's prompt."""

    def __init__(self, cfg: PairClassificationConfig):
        self.cfg = cfg
        self.label = f"pair_classification_{Path(cfg.path).stem}"

    def examples(self, data_root: Path | None) -> list[Example]:
        test, pool, own_pool = items_and_shot_pool(self.cfg, data_root, LAYOUT, lambda path: read_items(path, self.cfg))
        candidates = tuple(self.cfg.verbalizers.values())
        return [Example(id=item["id"], prompt=prompt, candidates=candidates, label=item["label"])
                for item, prompt in zip(test, shot_prompts(self.cfg, test, pool, same_pool=own_pool))]


def _preset(name: str, what: str, **fields: Any) -> None:
    EVAL_TASKS.register_preset(name, PairClassificationConfig(name="pair_classification", **fields), what)


# XNLI (Conneau et al. 2018) in the paper's languages it covers: the Hugging Face `xnli` rows as JSON lines,
# label 0 entailment, 1 neutral, 2 contradiction.
for _lang in ("ar", "de", "en", "es", "fr", "hi"):
    _preset(f"xnli_{_lang}", f"0-shot XNLI ({_lang}); xnli/{_lang}/test.jsonl (premise, hypothesis, label 0-2)",
            path=f"xnli/{_lang}/test.jsonl", shot_path=f"xnli/{_lang}/validation.jsonl")
# PAWS-X (Yang et al. 2019): the Hugging Face `paws-x` rows, label 1 paraphrase.
PAWS = "Sentence 1: {sentence1} Sentence 2: {sentence2} Question: Do both sentences mean the same thing? Answer:"
for _lang in ("de", "en", "es", "fr", "ja"):
    _preset(f"paws_x_{_lang}", f"0-shot PAWS-X ({_lang}); paws-x/{_lang}/test.jsonl (sentence1, sentence2, label)",
            path=f"paws-x/{_lang}/test.jsonl", shot_path=f"paws-x/{_lang}/validation.jsonl",
            verbalizers={"0": "No", "1": "Yes"}, query_template=PAWS, shot_template=PAWS + " {answer}")
# SuperGLUE (Wang et al. 2019) as its official download unpacks: super_glue/{Task}/val.jsonl, ids in `idx`.
BOOLQ = "{passage} Question: {question}? Answer:"
_preset("superglue_boolq", "0-shot SuperGLUE BoolQ; super_glue/BoolQ/val.jsonl (passage, question, label true|false)",
        path="super_glue/BoolQ/val.jsonl", shot_path="super_glue/BoolQ/train.jsonl", id_field="idx",
        verbalizers={"false": "no", "true": "yes"}, query_template=BOOLQ, shot_template=BOOLQ + " {answer}")
_preset("superglue_cb", "0-shot SuperGLUE CB; super_glue/CB/val.jsonl (premise, hypothesis, label)",
        path="super_glue/CB/val.jsonl", shot_path="super_glue/CB/train.jsonl", id_field="idx",
        verbalizers={"entailment": "True", "contradiction": "False", "neutral": "Neither"})
RTE = "{premise} Question: {hypothesis} True or False? Answer:"
_preset("superglue_rte", "0-shot SuperGLUE RTE; super_glue/RTE/val.jsonl (premise, hypothesis, label)",
        path="super_glue/RTE/val.jsonl", shot_path="super_glue/RTE/train.jsonl", id_field="idx",
        verbalizers={"entailment": "True", "not_entailment": "False"}, query_template=RTE,
        shot_template=RTE + " {answer}")
WIC = ("Sentence 1: {sentence1} Sentence 2: {sentence2} Question: Is the word '{word}' used in the same way in the "
       "two sentences above? Answer:")
_preset("superglue_wic", "0-shot SuperGLUE WiC; super_glue/WiC/val.jsonl (word, sentence1, sentence2, label)",
        path="super_glue/WiC/val.jsonl", shot_path="super_glue/WiC/train.jsonl", id_field="idx",
        verbalizers={"false": "no", "true": "yes"}, query_template=WIC, shot_template=WIC + " {answer}")
