"""`translation`: k-shot machine translation, chrF++ and BLEU: FLORES-200 (the paper's 1-shot MT benchmark),
or any file of sentence pairs (Tatoeba, NTREX, your own).

FLORES (`dataset: flores`): shots come from the dev split and test sentences from devtest, so no test sentence
is ever a shot; line i of every language's file is the same sentence. Languages are ISO 639-1 codes: the
paper's 12 are known, others name their file stem in `file_stems` ({sw: swh_Latn}) and their prompt name in
`target_language`. Pairs (`dataset: pairs`): one .jsonl or .tsv file (a header row, or `columns`) with a source
and a target field per item; shots come from `shot_path`, or from the file's other items.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from seqlab.config import EvalTaskConfig
from seqlab.errors import DataError, require
from seqlab.evaluation.aggregates import CHRF, bleu_aggregate
from seqlab.evaluation.records import read_records, require_fields
from seqlab.evaluation.tasks import Example, data_path, items_and_shot_pool, shot_prompts
from seqlab.registry import EVAL_TASKS
from seqlab_plugins.evals.metrics import bleu_stats, bleu_tokenizer, chrf_pp_stats

# The paper's 12 languages: ISO 639-1 code -> (FLORES-200 file stem, English name for prompts).
LANGUAGES = {
    "ar": ("ara", "Arabic"), "de": ("deu", "German"), "en": ("eng", "English"), "es": ("spa", "Spanish"),
    "fr": ("fra", "French"), "hi": ("hin", "Hindi"), "it": ("ita", "Italian"), "ja": ("jpn", "Japanese"),
    "mr": ("mar", "Marathi"), "pt": ("por", "Portuguese"), "ta": ("tam", "Tamil"), "te": ("tel", "Telugu"),
}
LAYOUT = "FLORES-200: dev/{code}.dev and devtest/{code}.devtest, one sentence per line, with 3-letter codes " \
         "(eng, deu, jpn, ...)"
PAIRS_LAYOUT = ("a .jsonl file (one object per line) or a .tsv file (a header row, or task.columns) with the "
                "source and target fields (task.source_field, task.target_field)")
DATASETS = ("flores", "pairs")


@dataclass
class TranslationConfig(EvalTaskConfig):
    dataset: str = "flores"  # flores | pairs
    path: str = "flores200"  # flores: the folder; pairs: the test file
    source: str = "de"  # ISO 639-1 codes
    target: str = "en"
    target_language: Optional[str] = None  # the target's name in the prompt; None: a known code's English name
    shot_split: str = "dev"  # flores
    test_split: str = "devtest"  # flores
    file_stems: Dict[str, str] = field(default_factory=dict)  # flores: code -> file stem, for other languages
    shot_path: Optional[str] = None  # pairs: where shots come from; None: other items of the test file
    source_field: str = "source"  # pairs
    target_field: str = "target"  # pairs
    id_field: str = "id"  # pairs: an item without it is named by its line number
    columns: Optional[List[str]] = None  # pairs: a headerless TSV's column names
    shot_template: str = "Sentence: {source}; Translation in {target_language}: {target}"
    query_template: str = "Sentence: {source}; Translation in {target_language}:"
    stop: List[str] = field(default_factory=lambda: [";"])  # the separator ends a translation
    max_new_tokens: int = 128
    bleu_tokenize: str | None = None  # None: by target language (ja-mecab for Japanese, 13a otherwise)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.dataset in DATASETS, "task.dataset", self.dataset, f"must be one of {', '.join(DATASETS)}")
        for key in ("source", "target"):
            code = getattr(self, key)
            require(len(code) == 2 and code.isalpha() and code.islower(), f"task.{key}", code,
                    f"must be a two-letter ISO 639-1 code (known: {', '.join(LANGUAGES)})")
            if self.dataset == "flores":
                require(code in LANGUAGES or code in self.file_stems, f"task.{key}", code,
                        f"has no FLORES file stem: add it to task.file_stems, e.g. {{{code}: swh_Latn}}")
        require(self.target in LANGUAGES or self.target_language is not None, "task.target_language", None,
                f"is needed for target {self.target!r}: its name in the prompt")
        require(self.source != self.target, "task.target", self.target, "must differ from task.source")
        require(self.max_new_tokens >= 1, "task.max_new_tokens", self.max_new_tokens, "must be >= 1")
        bleu_tokenizer(self.target, self.bleu_tokenize)  # an unknown tokenizer fails now, not after decoding


def read_lines(folder: Path, split: str, stem: str) -> list[str]:
    path = folder / split / f"{stem}.{split}"
    if not path.is_file():
        raise DataError(f"eval data not found at {path}; expected layout: {LAYOUT}")
    return path.read_text(encoding="utf-8").splitlines()


@EVAL_TASKS.register("translation", config=TranslationConfig)
class Translation:
    """Translate FLORES devtest sentences from `source` to `target`, with k solved dev pairs in the prompt."""

    def __init__(self, cfg: TranslationConfig):
        self.cfg = cfg
        name = "flores" if cfg.dataset == "flores" else Path(cfg.path).stem
        self.label = f"{name}_{cfg.source}_{cfg.target}"
        self.language = cfg.target_language or LANGUAGES[cfg.target][1]
        self.max_new_tokens = cfg.max_new_tokens
        self.stop = list(cfg.stop)

    def _stem(self, code: str) -> str:
        return self.cfg.file_stems.get(code) or LANGUAGES[code][0]

    def _flores(self, folder: Path, split: str) -> list[dict[str, Any]]:
        src = read_lines(folder, split, self._stem(self.cfg.source))
        tgt = read_lines(folder, split, self._stem(self.cfg.target))
        if len(src) != len(tgt):
            raise DataError(f"{folder / split}: {self.cfg.source} has {len(src)} lines and {self.cfg.target} "
                            f"{len(tgt)}; FLORES files of one split must be line-aligned")
        return [{"id": f"{split}:{i}", "source": s, "target": t, "target_language": self.language}
                for i, (s, t) in enumerate(zip(src, tgt))]

    def _file(self, path: Path) -> list[dict[str, Any]]:
        cfg, items = self.cfg, []
        for line, raw in read_records(path, PAIRS_LAYOUT, cfg.columns):
            require_fields(path, line, raw, [cfg.source_field, cfg.target_field],
                           "task.source_field or task.target_field")
            items.append({**raw, "id": str(raw.get(cfg.id_field, line)), "source": str(raw[cfg.source_field]),
                          "target": str(raw[cfg.target_field]), "target_language": self.language})
        return items

    def examples(self, data_root: Path | None) -> list[Example]:
        if self.cfg.dataset == "pairs":
            test, pool, same_pool = items_and_shot_pool(self.cfg, data_root, PAIRS_LAYOUT, self._file)
        else:
            folder = data_path(self.cfg.path, data_root, LAYOUT)
            pool = self._flores(folder, self.cfg.shot_split) if self.cfg.shots else []
            test = self._flores(folder, self.cfg.test_split)
            same_pool = self.cfg.shot_split == self.cfg.test_split  # then an item must not be its own shot
        return [Example(id=item["id"], prompt=prompt, reference=item["target"], fields={"source": item["source"]})
                for item, prompt in zip(test, shot_prompts(self.cfg, test, pool, same_pool))]

    def example_stats(self, examples: Sequence[Example],
                      predictions: Sequence[str]) -> dict[str, tuple[str, list[list[float]]]]:
        predictions, references = list(predictions), [ex.reference for ex in examples]
        tokenize = bleu_tokenizer(self.cfg.target, self.cfg.bleu_tokenize)
        return {"chrf++": (CHRF, chrf_pp_stats(predictions, references)),
                "bleu": (bleu_aggregate(tokenize), bleu_stats(predictions, references, self.cfg.target, tokenize))}


# The paper's directions: every language into and out of English.
for _code in LANGUAGES:
    if _code != "en":
        for _src, _tgt in ((_code, "en"), ("en", _code)):
            EVAL_TASKS.register_preset(f"flores_{_src}_{_tgt}", TranslationConfig(name="translation", source=_src,
                                                                                  target=_tgt),
                                       f"1-shot FLORES-200 devtest, {_src} -> {_tgt}")
