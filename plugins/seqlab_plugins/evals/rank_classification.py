"""`rank_classification`: multiple choice by log-likelihood (the paper's ranking protocol), accuracy and
length-normalised accuracies (per character and per byte). Ships with readers for SIB-200 (7-way topic
classification of FLORES sentences) and XCOPA (choice of plausible alternatives), and a generic JSONL format for
users' own sets.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqlab.config import EvalTaskConfig
from seqlab.errors import DataError, require
from seqlab.evaluation.tasks import Example, data_path, render, shot_prompts
from seqlab.registry import EVAL_TASKS

# ISO 639-1 -> SIB-200 folder (FLORES-200 language_script code).
SIB200_FOLDERS = {
    "ar": "arb_Arab", "de": "deu_Latn", "en": "eng_Latn", "es": "spa_Latn", "fr": "fra_Latn", "hi": "hin_Deva",
    "it": "ita_Latn", "ja": "jpn_Jpan", "mr": "mar_Deva", "pt": "por_Latn", "ta": "tam_Taml", "te": "tel_Telu",
}
# XCOPA premises are joined to the answer by "because" (cause) or "so" (effect), in the item's language.
XCOPA_CONNECTORS = {"en": ("because", "so"), "it": ("perché", "quindi"), "ta": ("காரணமாக", "எனவே")}
LAYOUTS = {
    "sib200": "SIB-200: data/annotated/{lang_Script}/{split}.tsv (index_id, category, text) and labels.txt",
    "xcopa": "XCOPA: data/{lang}/{split}.{lang}.jsonl with premise, choice1, choice2, question, label",
    "copa": "SuperGLUE COPA: {split}.jsonl (the official download's COPA/val.jsonl, train.jsonl) with premise, "
            "choice1, choice2, question, label, in English",
    "jsonl": "a folder with {split}.jsonl, or one .jsonl file (shots then come from its other items), one object "
             "per line with the template's fields, a list of choices and the index of the right one",
}


@dataclass
class RankClassificationConfig(EvalTaskConfig):
    dataset: str = "sib200"  # sib200 | xcopa | copa | jsonl
    path: str = "sib200"
    language: str = "en"
    shot_split: str = "train"
    test_split: str = "test"
    shot_template: str = "Sentence: {text}; Topic: {answer}"
    query_template: str = "Sentence: {text}; Topic:"
    choice_template: str = "{choice}"  # the scored continuation of the prompt
    choices_field: str = "choices"  # jsonl only
    label_field: str = "label"  # jsonl only

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.dataset in LAYOUTS, "task.dataset", self.dataset, f"must be one of {', '.join(LAYOUTS)}")
        if self.dataset == "sib200":
            require(self.language in SIB200_FOLDERS, "task.language", self.language,
                    f"SIB-200 languages here: {', '.join(SIB200_FOLDERS)}")
        if self.dataset in ("xcopa", "copa"):
            require(self.language in XCOPA_CONNECTORS, "task.language", self.language,
                    f"XCOPA connectors are known for {', '.join(XCOPA_CONNECTORS)}")


def _file(path: Path, layout: str) -> Path:
    if not path.is_file():
        raise DataError(f"eval data not found at {path}; expected layout: {layout}")
    return path


def read_sib200(folder: Path, language: str, split: str) -> list[dict[str, Any]]:
    lang_dir = folder / "data" / "annotated" / SIB200_FOLDERS[language]
    labels = _file(lang_dir / "labels.txt", LAYOUTS["sib200"]).read_text(encoding="utf-8").split("\n")
    labels = [label for label in labels if label.strip()]
    rows = _file(lang_dir / f"{split}.tsv", LAYOUTS["sib200"]).read_text(encoding="utf-8").splitlines()[1:]
    items = []
    for n, row in enumerate(rows, start=2):
        parts = row.split("\t")
        if len(parts) != 3 or parts[1] not in labels:
            raise DataError(f"{lang_dir / f'{split}.tsv'} line {n}: expected index_id, category (one of labels.txt), "
                            f"text; got {row[:80]!r}")
        items.append({"id": parts[0], "text": parts[2], "choices": labels, "label": labels.index(parts[1])})
    return items


def read_xcopa(folder: Path, language: str, split: str, layout: str = "xcopa") -> list[dict[str, Any]]:
    """XCOPA's items, or (layout copa) SuperGLUE COPA's: the same fields, in one folder of splits."""
    if layout == "copa":
        path = _file(folder / f"{split}.jsonl", LAYOUTS["copa"])
    else:
        path = _file(folder / "data" / language / f"{split}.{language}.jsonl", LAYOUTS["xcopa"])
    cause, effect = XCOPA_CONNECTORS[language]
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            raw = json.loads(line)
            choices = [_lower_first(raw["choice1"]), _lower_first(raw["choice2"])]
            items.append({"id": str(raw["idx"]), "premise": raw["premise"].rstrip(" .。"),
                          "connector": cause if raw["question"] == "cause" else effect, "question": raw["question"],
                          "choices": choices, "label": int(raw["label"])})
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise DataError(f"{path} line {n}: not an XCOPA item ({err})") from None
    return items


def read_jsonl(folder: Path, split: str, choices_field: str, label_field: str) -> list[dict[str, Any]]:
    """The items of FOLDER/{split}.jsonl, or of `folder` itself when it is a file."""
    path = folder if folder.is_file() else _file(folder / f"{split}.jsonl", LAYOUTS["jsonl"])
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            raw = json.loads(line)
            if not isinstance(raw[choices_field], list):  # a string would be split into its characters
                raise TypeError(f"{choices_field!r} is a {type(raw[choices_field]).__name__}, not a list")
            choices, label = [str(c) for c in raw[choices_field]], int(raw[label_field])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise DataError(f"{path} line {n}: needs a list {choices_field!r} and an integer {label_field!r} "
                            f"({err})") from None
        if not 0 <= label < len(choices):
            raise DataError(f"{path} line {n}: {label_field}={label} is not an index into its {len(choices)} choices")
        items.append({**raw, "id": str(raw.get("id", n)), "choices": choices, "label": label})
    return items


def _lower_first(text: str) -> str:
    # The answer continues the premise's sentence ("... because the sun rose"), so it does not start one.
    return text[:1].lower() + text[1:]


@EVAL_TASKS.register("rank_classification", config=RankClassificationConfig)
class RankClassification:
    """Score every choice as the continuation of the prompt; the likeliest (also per byte) is the answer."""

    def __init__(self, cfg: RankClassificationConfig):
        self.cfg = cfg
        name = Path(cfg.path).name.removesuffix(".jsonl")  # a folder's name, or a file's without .jsonl
        self.label = f"{cfg.dataset}_{cfg.language}" if cfg.dataset != "jsonl" else f"jsonl_{name}"

    def _read(self, folder: Path, split: str) -> list[dict[str, Any]]:
        if self.cfg.dataset == "sib200":
            return read_sib200(folder, self.cfg.language, split)
        if self.cfg.dataset in ("xcopa", "copa"):
            return read_xcopa(folder, self.cfg.language, split, self.cfg.dataset)
        return read_jsonl(folder, split, self.cfg.choices_field, self.cfg.label_field)

    def examples(self, data_root: Path | None) -> list[Example]:
        folder = data_path(self.cfg.path, data_root, LAYOUTS[self.cfg.dataset])
        pool = self._read(folder, self.cfg.shot_split) if self.cfg.shots else []
        for item in pool:
            item["answer"] = render(self.cfg.choice_template, {"choice": item["choices"][item["label"]]},
                                    "task.choice_template")
        # Then an item must not be its own shot (one file holds both splits).
        same_split = self.cfg.shot_split == self.cfg.test_split or folder.is_file()
        test = self._read(folder, self.cfg.test_split)
        out = []
        for item, prompt in zip(test, shot_prompts(self.cfg, test, pool, same_split)):
            candidates = tuple(render(self.cfg.choice_template, {"choice": c}, "task.choice_template")
                               for c in item["choices"])
            out.append(Example(id=item["id"], prompt=prompt, candidates=candidates, label=item["label"]))
        return out


for _lang in SIB200_FOLDERS:
    EVAL_TASKS.register_preset(f"sib200_{_lang}", RankClassificationConfig(name="rank_classification", language=_lang),
                               f"1-shot SIB-200 topic classification ({_lang}), ranked over the 7 labels")
for _lang in ("it", "ta"):
    EVAL_TASKS.register_preset(
        f"xcopa_{_lang}",
        RankClassificationConfig(name="rank_classification", dataset="xcopa", path="xcopa", language=_lang,
                                 shot_split="val", shot_template="{premise} {connector} {answer}",
                                 query_template="{premise} {connector}"),
        f"1-shot XCOPA ({_lang}): the more plausible cause or effect, ranked")
EVAL_TASKS.register_preset(
    "superglue_copa",
    RankClassificationConfig(name="rank_classification", dataset="copa", path="super_glue/COPA", language="en",
                             shots=0, test_split="val", shot_template="{premise} {connector} {answer}",
                             query_template="{premise} {connector}"),
    "0-shot SuperGLUE COPA: the more plausible cause or effect, ranked; super_glue/COPA/val.jsonl")
