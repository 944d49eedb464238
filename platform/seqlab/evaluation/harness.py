"""Run eval tasks on any `EvalModel`: the same prompts, the same truncation, the same scoring for all models.

Protocol (the paper's): greedy decoding; ranking by the teacher-forced log-likelihood of each candidate;
CLM mode puts `[CLM]` before the prompt, denoising mode gives the prompt to the encoder and forces it again at
the start of the target (the model was trained to reproduce its input there). A model whose vocabulary has
no `[CLM]` (most public models) reads the bare prompt in CLM mode; the scores record it.

Every task also reports the likelihood of its gold answer (`seqlab.evaluation.likelihood`), and every metric is
written per example as the statistics its corpus value is computed from, so a study can resample examples.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from seqlab.config import EvalTaskConfig
from seqlab.errors import DataError
from seqlab.evaluation.aggregates import RATIO, corpus_score
from seqlab.evaluation.likelihood import (
    LIKELIHOOD_METRICS, Budget, build_request, chunks, gold_text, likelihood_stats, margins, score_continuations,
    score_gold, utf8_bytes,
)
from seqlab.evaluation.model import EvalModel
from seqlab.evaluation.tasks import EvalTask, Example, GenerationTask
from seqlab.registry import EVAL_TASKS

Stats = dict[str, tuple[str, Any]]  # metric -> (aggregate, per-example statistics (n, k))


@dataclass
class TaskResult:
    metrics: dict[str, float]  # metric -> corpus value, then "examples" and "truncated"
    records: list[dict]  # one per example, as written to LABEL.predictions.jsonl
    aggregates: dict[str, str]  # metric -> how its per-example "stats" combine (seqlab.evaluation.aggregates)


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    ends = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(ends)] if ends else text).strip()


def run_generation(model: EvalModel, task: GenerationTask, examples: list[Example], budget: Budget, mode_ids: list[int],
                   progress: bool) -> tuple[list[str], list[dict], int]:
    limit = budget.prompt_limit(task.max_new_tokens)
    prompts = model.encode([ex.prompt for ex in examples])
    built = [build_request(ids, mode_ids, task.cfg.mode, (), limit) for ids in prompts]
    predictions: list[str] = []
    for part in chunks(len(examples), task.label, progress):
        for tokens in model.generate([r for r, _ in built[part]], task.max_new_tokens, stop=task.stop):
            predictions.append(cut_at_stop(model.decode(tokens), task.stop))
    records = [{"id": ex.id, "prompt": ex.prompt, "prediction": pred, "reference": ex.reference,
                "truncated": cut, **ex.fields}
               for ex, pred, (_, cut) in zip(examples, predictions, built)]
    return predictions, records, sum(cut for _, cut in built)


def run_ranking(model: EvalModel, task: EvalTask, examples: list[Example], budget: Budget, mode_ids: list[int],
                progress: bool) -> tuple[Stats, list[dict], list[np.ndarray], int]:
    """-> (accuracy statistics, records, each example's candidate log-likelihoods (c_i,), truncated prompts)."""
    for ex in examples:
        if len(ex.candidates) < 2:  # nothing to rank against, and no distractor for the margin
            raise DataError(f"eval task {task.label!r} example {ex.id!r}: {len(ex.candidates)} candidate(s); "
                            "ranking needs at least 2")
    for ex in examples:
        if ex.contexts and len(ex.contexts) != len(ex.candidates):
            raise DataError(f"eval task {task.label!r} example {ex.id!r}: {len(ex.contexts)} contexts for "
                            f"{len(ex.candidates)} candidates")
    partial = any(ex.contexts for ex in examples)
    if partial:
        scores, truncated = score_in_contexts(model, task, examples, budget, mode_ids, progress)
    else:
        scores, truncated = score_continuations(model, task.label, task.cfg.mode, [ex.prompt for ex in examples],
                                                [ex.candidates for ex in examples], budget, mode_ids, progress)
    records, correct, correct_norm, correct_bytes = [], [], [], []
    for ex, s, cut in zip(examples, scores, truncated):
        # Length-normalised as lm-evaluation-harness names them: acc_norm per character of the candidate,
        # acc_bytes per UTF-8 byte. Bytes are the model-independent length (token counts differ between
        # tokenizers, and characters weigh scripts differently), so per-byte is the one to compare models by.
        chars = np.array([max(1, len(c)) for c in ex.candidates], dtype=np.float64)
        nbytes = np.array([utf8_bytes(c) for c in ex.candidates], dtype=np.float64)
        choice, choice_norm, choice_bytes = (int(np.argmax(s / n)) for n in (1.0, chars, nbytes))
        correct.append(choice == ex.label)
        correct_norm.append(choice_norm == ex.label)
        correct_bytes.append(choice_bytes == ex.label)
        records.append({"id": ex.id, "prompt": ex.prompt, **({"contexts": list(ex.contexts)} if ex.contexts else {}),
                        "candidates": list(ex.candidates),
                        "loglikelihoods": s.round(4).tolist(), "prediction": choice, "prediction_norm": choice_norm,
                        "prediction_bytes": choice_bytes, "label": ex.label, "truncated": cut, **ex.fields})
    stats = {"accuracy": (RATIO, [[100.0 * c, 1.0] for c in correct])}
    if not partial:  # with one shared continuation, normalising by its length changes nothing
        stats.update(accuracy_norm=(RATIO, [[100.0 * c, 1.0] for c in correct_norm]),
                     accuracy_bytes=(RATIO, [[100.0 * c, 1.0] for c in correct_bytes]))
    return stats, records, scores, sum(truncated)


def score_in_contexts(model: EvalModel, task: EvalTask, examples: list[Example], budget: Budget,
                      mode_ids: list[int], progress: bool) -> tuple[list[np.ndarray], list[bool]]:
    """Each candidate scored after its own context (the example's prompt where it gives none): one request per
    (context, candidate) -> one (c_i,) array per example, and whether any of its contexts was cut."""
    prompts = [c for ex in examples for c in (ex.contexts or (ex.prompt,) * len(ex.candidates))]
    flat, cut = score_continuations(model, task.label, task.cfg.mode, prompts,
                                    [(c,) for ex in examples for c in ex.candidates], budget, mode_ids, progress)
    bounds = np.cumsum([0] + [len(ex.candidates) for ex in examples])
    return ([np.concatenate(flat[a:b]) for a, b in zip(bounds[:-1], bounds[1:])],
            [any(cut[a:b]) for a, b in zip(bounds[:-1], bounds[1:])])


def select_examples(examples: list[Example], cfg: EvalTaskConfig, limit: int | None) -> list[Example]:
    caps = [c for c in (cfg.limit, limit) if c is not None]
    if not caps or min(caps) >= len(examples):
        return examples
    # A fixed random subset, in data order: test files are often sorted by label (SIB-200 is), so the first N
    # would be one class. Seeded by the task, so every model gets the same examples; a prefix of one
    # permutation, so a larger limit keeps every example of a smaller one.
    keep = np.random.default_rng(cfg.seed).permutation(len(examples))[: min(caps)]
    return [examples[i] for i in sorted(keep)]


def zero_shot_examples(cfg: EvalTaskConfig, label: str, data_root: Path | None, limit: int | None,
                       examples: list[Example]) -> list[Example]:
    """The same examples rendered without shots: the baseline of the in-context gain."""
    zero = select_examples(EVAL_TASKS.build(dataclasses.replace(cfg, shots=0)).examples(data_root), cfg, limit)
    if [ex.id for ex in zero] != [ex.id for ex in examples]:
        raise DataError(f"eval task {label!r}: with task.shots=0 the data gives other examples (ids "
                        f"{[ex.id for ex in zero][:3]}...) than with task.shots={cfg.shots} (ids "
                        f"{[ex.id for ex in examples][:3]}...); the in-context gain needs the same examples")
    return zero


def evaluate_task(model: EvalModel, label: str, cfg: EvalTaskConfig, data_root: Path | None,
                  limit: int | None = None, progress: bool = True) -> TaskResult:
    """One task on one model -> its metrics, one record per example and how each metric's statistics combine."""
    task: EvalTask = EVAL_TASKS.build(cfg)
    task.label = label
    examples = task.examples(data_root)
    if not examples:  # nothing to score; a ranking task would otherwise be taken for a generation task
        raise DataError(f"eval task {label!r}: no test examples in its data (task.path={cfg.path!r})")
    examples = select_examples(examples, cfg, limit)
    mode_id = model.special_id("[CLM]") if cfg.mode == "clm" else None
    mode_ids = [mode_id] if mode_id is not None else []
    budget = Budget(model, cfg.mode, len(mode_ids))
    golds = [gold_text(ex) for ex in examples]
    margin = None
    if examples[0].candidates:
        stats, records, scores, truncated = run_ranking(model, task, examples, budget, mode_ids, progress)
        gold = np.array([s[ex.label] for s, ex in zip(scores, examples)], dtype=np.float64)  # (n,)
        margin = margins(scores, [ex.label for ex in examples])
    else:
        predictions, records, truncated = run_generation(model, task, examples, budget, mode_ids, progress)
        stats = task.example_stats(examples, predictions)
        if hasattr(task, "prediction_fields"):  # what the task read from each prediction (an extracted answer)
            for record, extra in zip(records, task.prediction_fields(examples, predictions)):
                record.update(extra)
        gold = score_gold(model, f"{label} gold", cfg.mode, [ex.prompt for ex in examples], golds, budget, mode_ids,
                          progress)
    zero_shot = None
    if cfg.shots >= 1:
        zero = zero_shot_examples(cfg, label, data_root, limit, examples)
        zero_shot = score_gold(model, f"{label} 0-shot", cfg.mode, [ex.prompt for ex in zero], golds, budget,
                               mode_ids, progress)
    nbytes = np.array([utf8_bytes(g) for g in golds], dtype=np.float64)  # (n,)
    stats = {**stats, **likelihood_stats(gold, nbytes, margin, zero_shot)}
    add_likelihoods(records, stats, gold, nbytes, margin, zero_shot)
    # Every reported value comes from the statistics written beside the predictions, so they always agree.
    metrics = {name: corpus_score(aggregate, np.asarray(values, dtype=np.float64))
               for name, (aggregate, values) in stats.items()}
    metrics.update(examples=float(len(examples)), truncated=float(truncated))
    return TaskResult(metrics, records, {name: aggregate for name, (aggregate, _) in stats.items()})


def add_likelihoods(records: list[dict], stats: Stats, gold: np.ndarray, nbytes: np.ndarray,
                    margin: np.ndarray | None, zero_shot: np.ndarray | None) -> None:
    """Each record gains its gold's log-likelihoods (each (n,) over the records) and every metric's statistics."""
    for i, record in enumerate(records):
        record.update(gold_logprob=float(gold[i]), gold_bytes=int(nbytes[i]))
        if margin is not None:
            record["margin"] = float(margin[i])
        if zero_shot is not None:
            record["zero_shot_gold_logprob"] = float(zero_shot[i])
        record["stats"] = {name: np.asarray(values[i]).tolist() for name, (_, values) in stats.items()}


def evaluate(model: EvalModel, tasks: Mapping[str, EvalTaskConfig], out_dir: str | Path | None = None, *,
             data_root: str | Path | None = None, limit: int | None = None,
             progress: bool = True) -> dict[str, dict[str, float]]:
    """Every task on `model` -> {task label: {metric: value}}. With out_dir, writes scores.json and one
    LABEL.predictions.jsonl per task (each example's prompt, prediction and reference or candidate scores, the
    gold's log-likelihoods and every metric's per-example statistics)."""
    root = Path(data_root) if data_root is not None else None
    results: dict[str, dict[str, float]] = {}
    aggregates: dict[str, dict[str, str]] = {}
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    for label, cfg in tasks.items():
        result = evaluate_task(model, label, cfg, root, limit, progress)
        results[label], aggregates[label] = result.metrics, result.aggregates
        if out is not None:
            with open(out / f"{label}.predictions.jsonl", "w", encoding="utf-8") as f:
                for record in result.records:
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")
    if out is not None:
        mode_token = {label: cfg.mode == "clm" and model.special_id("[CLM]") is not None
                      for label, cfg in tasks.items()}
        # Every metric reported is a score or a log-likelihood of the right answer: higher is better.
        higher = {label: {name: True for name in names} for label, names in aggregates.items()}
        (out / "scores.json").write_text(json.dumps({"model": model.name, "scores": results,
                                                     "clm_token_used": mode_token, "aggregates": aggregates,
                                                     "higher_is_better": higher}, indent=2))
    return results


def format_scores(results: Mapping[str, Mapping[str, float]]) -> str:
    """A plain table, one line per task: what `seqlab eval` prints."""
    lines = []
    width = max(map(len, results), default=4)
    for label, metrics in results.items():
        # Likelihoods are nats (per byte): small numbers that two decimals would flatten.
        shown = "  ".join(f"{k}={v:.4f}" if k in LIKELIHOOD_METRICS else f"{k}={v:.2f}"
                          for k, v in metrics.items() if k not in ("examples", "truncated"))
        lines.append(f"{label:{width}}  {shown}  (n={int(metrics['examples'])}, truncated={int(metrics['truncated'])})")
    return "\n".join(lines)
