"""Scoring continuations of prompts, and the likelihood metrics every eval task reports.

Accuracy, chrF++ or ROUGE of a small model sit near chance or zero and barely move; the log-likelihood the
model gives the gold answer moves from the first steps. So every task, ranking or generation, reports:

- `gold_ll_per_byte`: log p(gold | k-shot prompt) in nats per UTF-8 byte of the gold, micro-averaged;
- `margin` (ranking): log p(gold) - the largest log p(distractor), nats, averaged over examples;
- `icl_gain_per_byte` (tasks with shots): log p(gold | k-shot prompt) - log p(gold | 0-shot prompt), per byte of
  the gold, micro-averaged: what the shots are worth to the model.

Bytes, not tokens, normalise: token counts differ between tokenizers, bytes of the gold text do not, so the
numbers compare models on equal terms. Every metric is kept per example as the statistics its corpus value is
computed from (see seqlab.evaluation.aggregates).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from seqlab.errors import DataError
from seqlab.evaluation.aggregates import RATIO
from seqlab.evaluation.model import EvalModel, TokenRequest
from seqlab.evaluation.tasks import Example
from seqlab.tokenizer import EOS_ID

CHUNK = 64  # requests per model call: the progress bar's step
GOLD_LL = "gold_ll_per_byte"
MARGIN = "margin"
ICL_GAIN = "icl_gain_per_byte"
LIKELIHOOD_METRICS = (GOLD_LL, MARGIN, ICL_GAIN)  # in nats: small numbers, printed with more decimals


@dataclass
class Budget:
    """How many prompt tokens fit, given what else the model must hold (mode token, targets, new tokens)."""

    model: EvalModel
    mode: str
    mode_tokens: int

    def prompt_limit(self, target_tokens: int) -> int:
        P = self.model.max_positions
        if self.model.encoder_decoder:
            limit = P - self.mode_tokens
            if self.mode == "denoising":  # the prompt is the decoder's forced prefix too
                limit = min(limit, P - target_tokens)
            return limit
        # One sequence: inputs + (prompt again, in denoising mode) + targets, the last token never fed back.
        copies = 2 if self.mode == "denoising" else 1
        return (P + 1 - self.mode_tokens - target_tokens) // copies


def build_request(prompt_ids: list[int], mode_ids: list[int], mode: str, continuation: Sequence[int],
                  limit: int) -> tuple[TokenRequest, bool]:
    """The request for one prompt, its start cut off when too long (shots go first, so the query survives)."""
    truncated = len(prompt_ids) > limit
    prompt = tuple(prompt_ids[len(prompt_ids) - max(limit, 1):] if truncated else prompt_ids)
    if not prompt and not mode_ids:
        # Nothing to condition on: the first continuation token would have no position predicting it and go
        # unscored. EOS, the end of a previous text, stands in as the context (lm-evaluation-harness does the
        # same with its end-of-text token).
        prompt = (EOS_ID,)
    prefix = prompt if mode == "denoising" else ()
    return TokenRequest(tuple(mode_ids) + prompt, prefix, tuple(continuation)), truncated


def chunks(n: int, label: str, progress: bool) -> Iterator[slice]:
    bar = tqdm(total=n, desc=label, unit="ex", disable=not progress, leave=False)
    for start in range(0, n, CHUNK):
        yield slice(start, min(start + CHUNK, n))
        bar.update(min(CHUNK, n - start))
    bar.close()


def utf8_bytes(text: str) -> int:
    """The length normaliser of a continuation; at least 1, so an empty one divides safely (its score is 0)."""
    return max(1, len(text.encode("utf-8")))


def gold_text(example: Example) -> str:
    """What the model should say: the right candidate of a ranking example, the reference of a generation one."""
    return example.candidates[example.label] if example.candidates else example.reference


def score_continuations(model: EvalModel, label: str, mode: str, prompts: Sequence[str],
                        continuations: Sequence[Sequence[str]], budget: Budget, mode_ids: list[int],
                        progress: bool) -> tuple[list[np.ndarray], list[bool]]:
    """Sum of log p(continuation | prompt), teacher-forced, for each example's continuations ->
    (one (c_i,) float64 array per example, whether each example's prompt was cut).

    One prompt length per example, set by its longest continuation, so its continuations are scored on equal terms.
    """
    flat = [(i, c) for i, options in enumerate(continuations) for c in options]  # one request per continuation
    cont_ids = model.encode([c for _, c in flat])
    for (i, text), ids in zip(flat, cont_ids):
        if not ids:  # it would score log p = 0, above every real candidate, and win
            raise DataError(f"task {label}: example {i} has a continuation that encodes to no tokens ({text!r}); "
                            "check the task's choices, choice_template and reference field")
    prompt_ids = model.encode(list(prompts))
    longest = np.zeros(len(prompts), dtype=np.int64)  # (n,)
    for (i, _), ids in zip(flat, cont_ids):
        longest[i] = max(longest[i], len(ids))
    limits = [budget.prompt_limit(int(n)) for n in longest]
    built = [build_request(prompt_ids[i], mode_ids, mode, ids, limits[i]) for (i, _), ids in zip(flat, cont_ids)]
    scores = np.zeros(len(flat), dtype=np.float64)  # (sum c_i,)
    for part in chunks(len(flat), label, progress):
        scores[part] = model.score([r for r, _ in built[part]])
    bounds = np.cumsum([0] + [len(options) for options in continuations])
    per_example = [scores[bounds[i]: bounds[i + 1]] for i in range(len(prompts))]
    truncated = [len(ids) > limit for ids, limit in zip(prompt_ids, limits)]
    return per_example, truncated


def score_gold(model: EvalModel, label: str, mode: str, prompts: Sequence[str], golds: Sequence[str],
               budget: Budget, mode_ids: list[int], progress: bool) -> np.ndarray:
    """(n,) log p(gold | prompt) of each example, scored as a one-candidate ranking."""
    scores, _ = score_continuations(model, label, mode, prompts, [(g,) for g in golds], budget, mode_ids, progress)
    return np.array([s[0] for s in scores], dtype=np.float64)


def margins(scores: Sequence[np.ndarray], labels: Sequence[int]) -> np.ndarray:
    """(n,) log p(gold) - max log p(distractor) of each ranking example (candidates (c_i,) with c_i >= 2)."""
    return np.array([s[y] - np.delete(s, y).max() for s, y in zip(scores, labels)], dtype=np.float64)


def likelihood_stats(gold_logprob: np.ndarray, gold_bytes: np.ndarray, margin: np.ndarray | None,
                     zero_shot_logprob: np.ndarray | None) -> dict[str, tuple[str, np.ndarray]]:
    """metric -> (aggregate, (n, 2) statistics) of the likelihood metrics: margin only for ranking tasks, the
    in-context gain only for tasks with shots (given the gold's log-likelihood under the 0-shot prompt)."""
    ones = np.ones_like(gold_logprob)
    stats = {GOLD_LL: (RATIO, np.stack([gold_logprob, gold_bytes], axis=1))}
    if margin is not None:
        stats[MARGIN] = (RATIO, np.stack([margin, ones], axis=1))
    if zero_shot_logprob is not None:
        stats[ICL_GAIN] = (RATIO, np.stack([gold_logprob - zero_shot_logprob, gold_bytes], axis=1))
    return stats
