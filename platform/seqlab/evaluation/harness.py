"""Run eval tasks on any `EvalModel`: the same prompts, the same truncation, the same scoring for all models.

Protocol (the paper's): greedy decoding; ranking by the teacher-forced log-likelihood of each candidate;
CLM mode puts `[CLM]` before the prompt, denoising mode gives the prompt to the encoder and forces it again at
the start of the target (the model was trained to reproduce its input there). A model whose vocabulary has
no `[CLM]` (most public models) reads the bare prompt in CLM mode; the scores record it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from tqdm import tqdm

from seqlab.config import EvalTaskConfig
from seqlab.errors import DataError
from seqlab.evaluation.model import EvalModel, TokenRequest
from seqlab.evaluation.tasks import EvalTask, Example, GenerationTask
from seqlab.registry import EVAL_TASKS

CHUNK = 64  # examples per model call: the progress bar's step


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
    prefix = prompt if mode == "denoising" else ()
    return TokenRequest(tuple(mode_ids) + prompt, prefix, tuple(continuation)), truncated


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    ends = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(ends)] if ends else text).strip()


def _chunks(n: int, label: str, progress: bool):
    bar = tqdm(total=n, desc=label, unit="ex", disable=not progress, leave=False)
    for start in range(0, n, CHUNK):
        yield slice(start, min(start + CHUNK, n))
        bar.update(min(CHUNK, n - start))
    bar.close()


def run_generation(model: EvalModel, task: GenerationTask, examples: list[Example], budget: Budget, mode_ids: list[int],
                   progress: bool) -> tuple[list[str], list[dict], int]:
    limit = budget.prompt_limit(task.max_new_tokens)
    prompts = model.encode([ex.prompt for ex in examples])
    built = [build_request(ids, mode_ids, task.cfg.mode, (), limit) for ids in prompts]
    predictions: list[str] = []
    for part in _chunks(len(examples), task.label, progress):
        for tokens in model.generate([r for r, _ in built[part]], task.max_new_tokens):
            predictions.append(cut_at_stop(model.decode(tokens), task.stop))
    records = [{"id": ex.id, "prompt": ex.prompt, "prediction": pred, "reference": ex.reference,
                "truncated": cut, **ex.fields}
               for ex, pred, (_, cut) in zip(examples, predictions, built)]
    return predictions, records, sum(cut for _, cut in built)


def run_ranking(model: EvalModel, task: EvalTask, examples: list[Example], budget: Budget, mode_ids: list[int],
                progress: bool) -> tuple[dict[str, float], list[dict], int]:
    flat = [(i, c) for i, ex in enumerate(examples) for c in ex.candidates]  # one request per candidate
    cont_ids = model.encode([c for _, c in flat])
    prompts = model.encode([ex.prompt for ex in examples])
    # One prompt length per example, set by its longest candidate, so its candidates are scored on equal terms.
    longest = np.zeros(len(examples), dtype=np.int64)
    for (i, _), ids in zip(flat, cont_ids):
        longest[i] = max(longest[i], len(ids))
    built = [build_request(prompts[i], mode_ids, task.cfg.mode, ids, budget.prompt_limit(int(longest[i])))
             for (i, _), ids in zip(flat, cont_ids)]
    scores = np.zeros(len(flat))
    for part in _chunks(len(flat), task.label, progress):
        scores[part] = model.score([r for r, _ in built[part]])
    # Length-normalised: per UTF-8 byte of the candidate, a model-independent length (token counts differ
    # between tokenizers, so per-token normalisation would not compare models on equal terms).
    nbytes = np.array([max(1, len(c.encode("utf-8"))) for _, c in flat], dtype=np.float64)
    owner = np.array([i for i, _ in flat])
    correct = correct_norm = 0
    records = []
    for i, ex in enumerate(examples):
        rows = np.flatnonzero(owner == i)
        choice = int(np.argmax(scores[rows]))
        choice_norm = int(np.argmax(scores[rows] / nbytes[rows]))
        correct += choice == ex.label
        correct_norm += choice_norm == ex.label
        records.append({"id": ex.id, "prompt": ex.prompt, "candidates": list(ex.candidates),
                        "loglikelihoods": scores[rows].round(4).tolist(), "prediction": choice,
                        "prediction_norm": choice_norm, "label": ex.label, "truncated": built[rows[0]][1],
                        **ex.fields})
    n = max(len(examples), 1)
    metrics = {"accuracy": 100.0 * correct / n, "accuracy_norm": 100.0 * correct_norm / n}
    return metrics, records, sum(r["truncated"] for r in records)


def evaluate_task(model: EvalModel, label: str, cfg: EvalTaskConfig, data_root: Path | None,
                  limit: int | None = None, progress: bool = True) -> tuple[dict[str, float], list[dict]]:
    """One task on one model -> (metrics, one record per example)."""
    task: EvalTask = EVAL_TASKS.build(cfg)
    task.label = label
    examples = task.examples(data_root)
    if not examples:  # nothing to score; a ranking task would otherwise be taken for a generation task
        raise DataError(f"eval task {label!r}: no test examples in its data (task.path={cfg.path!r})")
    caps = [c for c in (cfg.limit, limit) if c is not None]
    if caps and min(caps) < len(examples):
        # A fixed random subset, in data order: test files are often sorted by label (SIB-200 is), so the first
        # N would be one class. Seeded by the task, so every model gets the same examples; a prefix of one
        # permutation, so a larger limit keeps every example of a smaller one.
        keep = np.random.default_rng(cfg.seed).permutation(len(examples))[: min(caps)]
        examples = [examples[i] for i in sorted(keep)]
    mode_id = model.special_id("[CLM]") if cfg.mode == "clm" else None
    mode_ids = [mode_id] if mode_id is not None else []
    budget = Budget(model, cfg.mode, len(mode_ids))
    if examples and examples[0].candidates:
        metrics, records, truncated = run_ranking(model, task, examples, budget, mode_ids, progress)
    else:
        predictions, records, truncated = run_generation(model, task, examples, budget, mode_ids, progress)
        metrics = task.metrics(examples, predictions)
    metrics.update(examples=float(len(examples)), truncated=float(truncated))
    return metrics, records


def evaluate(model: EvalModel, tasks: Mapping[str, EvalTaskConfig], out_dir: str | Path | None = None, *,
             data_root: str | Path | None = None, limit: int | None = None,
             progress: bool = True) -> dict[str, dict[str, float]]:
    """Every task on `model` -> {task label: {metric: value}}. With out_dir, writes scores.json and one
    LABEL.predictions.jsonl per task (each example's prompt, prediction and reference or candidate scores)."""
    root = Path(data_root) if data_root is not None else None
    results: dict[str, dict[str, float]] = {}
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    for label, cfg in tasks.items():
        metrics, records = evaluate_task(model, label, cfg, root, limit, progress)
        results[label] = metrics
        if out is not None:
            with open(out / f"{label}.predictions.jsonl", "w", encoding="utf-8") as f:
                for record in records:
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")
    if out is not None:
        mode_token = {label: cfg.mode == "clm" and model.special_id("[CLM]") is not None
                      for label, cfg in tasks.items()}
        (out / "scores.json").write_text(json.dumps({"model": model.name, "scores": results,
                                                     "clm_token_used": mode_token}, indent=2))
    return results


def format_scores(results: Mapping[str, Mapping[str, float]]) -> str:
    """A plain table, one line per task: what `seqlab eval` prints."""
    lines = []
    width = max(map(len, results), default=4)
    for label, metrics in results.items():
        shown = "  ".join(f"{k}={v:.2f}" for k, v in metrics.items() if k not in ("examples", "truncated"))
        lines.append(f"{label:{width}}  {shown}  (n={int(metrics['examples'])}, truncated={int(metrics['truncated'])})")
    return "\n".join(lines)
