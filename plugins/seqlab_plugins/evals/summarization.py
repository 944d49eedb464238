"""`summarization`: k-shot abstractive summarisation (the paper's MLSum/XSum protocol), ROUGE-1/2/L.

Users bring the data: JSONL or TSV files with a document and a summary per item. ROUGE is computed over the pieces
of one fixed SentencePiece model (the shipped one unless configured), not over whitespace words: ROUGE's usual
tokenizer keeps only Latin letters and digits, so Hindi or Japanese summaries would all score 0; and one fixed
model keeps the scores of models with different tokenizers comparable.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import List, Optional, Sequence

from omegaconf import MISSING

from seqlab.config import EvalTaskConfig
from seqlab.errors import require
from seqlab.evaluation.aggregates import RATIO
from seqlab.evaluation.records import read_records, require_fields
from seqlab.evaluation.tasks import Example, items_and_shot_pool, shot_prompts
from seqlab.registry import EVAL_TASKS
from seqlab.tokenizer import Tokenizer
from seqlab_plugins.evals.metrics import rouge_f1s

LAYOUT = "a .jsonl file (one object per line) or a .tsv file with a header row, holding the document and " \
         "summary fields (task.document_field, task.summary_field)"


@dataclass
class SummarizationConfig(EvalTaskConfig):
    path: str = MISSING  # the test set: a JSONL file (users bring their own)
    shot_path: Optional[str] = None  # where shots come from; None: other items of the test file
    document_field: str = "document"
    summary_field: str = "summary"
    # The paper's prompt: `[CLM] {article} ==> Short summary: {summary} <br><br><br> Article: {test_article}
    # ==> Short summary:` (newlines are not in the vocabulary).
    shot_template: str = "{document} ==> Short summary: {summary}"
    query_template: str = "{document} ==> Short summary:"
    separator: str = " <br><br><br> Article: "
    stop: List[str] = field(default_factory=lambda: ["<br>"])
    max_new_tokens: int = 64
    rouge_tokenizer: Optional[str] = None  # a SentencePiece .model; None: the one shipped with seqlab

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.path not in ("", MISSING), "task.path", self.path, f"must name a file: {LAYOUT}")
        require(self.max_new_tokens >= 1, "task.max_new_tokens", self.max_new_tokens, "must be >= 1")


def read_pairs(path: Path, document_field: str, summary_field: str) -> list[dict[str, str]]:
    items = []
    for line, raw in read_records(path, LAYOUT, None):
        require_fields(path, line, raw, [document_field, summary_field], "task.document_field or task.summary_field")
        items.append({"document": str(raw[document_field]), "summary": str(raw[summary_field]),
                      "id": str(raw.get("id", line))})
    return items


@EVAL_TASKS.register("summarization", config=SummarizationConfig, example={"path": "summaries.jsonl"})
class Summarization:
    """Summarise each test document after k solved (document, summary) pairs."""

    def __init__(self, cfg: SummarizationConfig):
        self.cfg = cfg
        self.label = f"summarization_{Path(cfg.path).stem}"
        self.max_new_tokens = cfg.max_new_tokens
        self.stop = list(cfg.stop)
        model = cfg.rouge_tokenizer or resources.files("seqlab") / "resources" / "tokenizer" / "embedded.model"
        self.pieces = Tokenizer(str(model))
        try:  # the bare word-boundary piece, which starts words that begin with an unmerged character
            self.boundary: int | None = self.pieces.token_id("\u2581")
        except KeyError:
            self.boundary = None

    def examples(self, data_root: Path | None) -> list[Example]:
        test, pool, own_pool = items_and_shot_pool(
            self.cfg, data_root, LAYOUT, lambda path: read_pairs(path, self.cfg.document_field, self.cfg.summary_field))
        return [Example(id=item["id"], prompt=prompt, reference=item["summary"])
                for item, prompt in zip(test, shot_prompts(self.cfg, test, pool, same_pool=own_pool))]

    def units(self, texts: list[str]) -> list[list[int]]:
        """The pieces ROUGE compares, without the bare word boundary: it marks where a word starts, not what
        the word is, so "xyz" (boundary, x, y, z) and "18" (boundary, 1, 8) would share a unigram."""
        return [[i for i in ids if i != self.boundary] for ids in self.pieces.encode(texts)]

    def example_stats(self, examples: Sequence[Example],
                      predictions: Sequence[str]) -> dict[str, tuple[str, list[list[float]]]]:
        f1s = rouge_f1s(self.units(list(predictions)), self.units([ex.reference for ex in examples]))
        return {name: (RATIO, [[100.0 * f1, 1.0] for f1 in values]) for name, values in f1s.items()}


# XSum (Narayan et al. 2018) and MLSum (Scialom et al. 2020), the paper's 1-shot summarisation sets, as the
# Hugging Face `xsum` and `mlsum` rows in JSON lines; shots come from the validation split (train is large).
EVAL_TASKS.register_preset(
    "xsum", SummarizationConfig(name="summarization", path="xsum/test.jsonl", shot_path="xsum/validation.jsonl"),
    "1-shot XSum, ROUGE-1/2/L; xsum/{test,validation}.jsonl (document, summary, id)")
for _lang in ("de", "es", "fr"):
    EVAL_TASKS.register_preset(
        f"mlsum_{_lang}", SummarizationConfig(name="summarization", path=f"mlsum/{_lang}/test.jsonl",
                                              shot_path=f"mlsum/{_lang}/validation.jsonl", document_field="text"),
        f"1-shot MLSum ({_lang}), ROUGE-1/2/L; mlsum/{_lang}/{{test,validation}}.jsonl (text, summary)")
