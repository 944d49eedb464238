"""`translation`: k-shot machine translation on FLORES-200 (the paper's 1-shot MT benchmark), chrF++ and BLEU.

Shots come from the dev split and test sentences from devtest, so no test sentence is ever a shot. FLORES is
sentence-aligned: line i of every language's file is the same sentence.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Sequence

from seqlab.config import EvalTaskConfig
from seqlab.errors import DataError, require
from seqlab.evaluation.aggregates import CHRF, bleu_aggregate
from seqlab.evaluation.tasks import Example, data_path, shot_prompts
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


@dataclass
class TranslationConfig(EvalTaskConfig):
    path: str = "flores200"
    source: str = "de"
    target: str = "en"
    shot_split: str = "dev"
    test_split: str = "devtest"
    shot_template: str = "Sentence: {source}; Translation in {target_language}: {target}"
    query_template: str = "Sentence: {source}; Translation in {target_language}:"
    stop: List[str] = field(default_factory=lambda: [";"])  # the separator ends a translation
    max_new_tokens: int = 128
    bleu_tokenize: str | None = None  # None: by target language (ja-mecab for Japanese, 13a otherwise)

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("source", "target"):
            require(getattr(self, key) in LANGUAGES, f"task.{key}", getattr(self, key),
                    f"must be one of {', '.join(LANGUAGES)}")
        require(self.source != self.target, "task.target", self.target, "must differ from task.source")
        require(self.max_new_tokens >= 1, "task.max_new_tokens", self.max_new_tokens, "must be >= 1")
        bleu_tokenizer(self.target, self.bleu_tokenize)  # an unknown tokenizer fails now, not after decoding


def read_lines(folder: Path, split: str, lang: str) -> list[str]:
    path = folder / split / f"{LANGUAGES[lang][0]}.{split}"
    if not path.is_file():
        raise DataError(f"eval data not found at {path}; expected layout: {LAYOUT}")
    return path.read_text(encoding="utf-8").splitlines()


@EVAL_TASKS.register("translation", config=TranslationConfig)
class Translation:
    """Translate FLORES devtest sentences from `source` to `target`, with k solved dev pairs in the prompt."""

    def __init__(self, cfg: TranslationConfig):
        self.cfg = cfg
        self.label = f"flores_{cfg.source}_{cfg.target}"
        self.max_new_tokens = cfg.max_new_tokens
        self.stop = list(cfg.stop)

    def _pairs(self, folder: Path, split: str) -> list[dict[str, str]]:
        src = read_lines(folder, split, self.cfg.source)
        tgt = read_lines(folder, split, self.cfg.target)
        if len(src) != len(tgt):
            raise DataError(f"{folder / split}: {self.cfg.source} has {len(src)} lines and {self.cfg.target} "
                            f"{len(tgt)}; FLORES files of one split must be line-aligned")
        name = LANGUAGES[self.cfg.target][1]
        return [{"source": s, "target": t, "target_language": name} for s, t in zip(src, tgt)]

    def examples(self, data_root: Path | None) -> list[Example]:
        folder = data_path(self.cfg.path, data_root, LAYOUT)
        pool = self._pairs(folder, self.cfg.shot_split) if self.cfg.shots else []
        test = self._pairs(folder, self.cfg.test_split)
        same_split = self.cfg.shot_split == self.cfg.test_split  # then an item must not be its own shot
        return [Example(id=f"{self.cfg.test_split}:{i}", prompt=prompt, reference=item["target"],
                        fields={"source": item["source"]})
                for i, (item, prompt) in enumerate(zip(test, shot_prompts(self.cfg, test, pool, same_split)))]

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
