"""`seqlab compare`: train the model under study and a matched baseline on equal terms, evaluate both, report.

Both runs share everything but the architecture: data, tokenizer, objective mixture, optimiser, steps, batch
and seed. The baseline is a named preset (`compare.baseline`), or the model's architecture derives it
(`matched_baseline`: for seq2seq, the decoder-only model of the same width whose depth matches its
parameters or its training FLOPs per example). Under a Hydra multirun (`-m seed=0,1,2`) every job writes its
own results, and the report in the sweep folder aggregates all finished jobs (mean and spread).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from hydra.core.config_store import ConfigStore

from seqlab.config import RunConfig
from seqlab.errors import ConfigError, require
from seqlab.evaluation.harness import evaluate
from seqlab.evaluation.model import SeqlabModel
from seqlab.evaluation.report import read_metrics, write_report
from seqlab.evaluation.tasks import resolve_tasks
from seqlab.registry import ARCHITECTURES, EVAL_TASKS, OBJECTIVES
from seqlab.tokenizer import Tokenizer
from seqlab.train import RESOLVED_CONFIG, probe_features, train

RESULTS = "results.json"
COMPARE_CONFIG = "compare"  # experiments/compare.yaml


@dataclass
class CompareConfig:
    baseline: Optional[str] = None  # an architecture preset or plugin name; None: the model's matched baseline
    match: str = "parameters"  # parameters | flops: how the derived baseline is sized
    probe_rows: int = 512  # objective rows sampled to measure example lengths (matching and FLOPs accounting)

    def __post_init__(self) -> None:
        require(self.match in ("parameters", "flops"), "compare.match", self.match, "must be parameters or flops")
        require(self.probe_rows >= 1, "compare.probe_rows", self.probe_rows, "must be >= 1")


@dataclass
class CompareRunConfig(RunConfig):
    """A run config (its `architecture` is the model under study) plus how to pick the baseline."""

    compare: CompareConfig = field(default_factory=CompareConfig)


def register_compare_schema() -> None:
    ConfigStore.instance().store(name="compare_schema", node=CompareRunConfig)


def example_lengths(run: RunConfig, tokenizer: Tokenizer, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Model-neutral (input, target) lengths of `rows` examples the objective makes from full-length text."""
    objective = OBJECTIVES.build(run.objective, tokenizer=tokenizer, seq_len=run.data.seq_len)
    features = probe_features(objective, tokenizer, rows, run.seed)
    return features.input_lengths, features.target_lengths


def baseline_config(run: CompareRunConfig, vocab_size: int, lengths: tuple[np.ndarray, np.ndarray]) -> Any:
    if run.compare.baseline is not None:
        name = run.compare.baseline
        return ARCHITECTURES.preset(name) if name in ARCHITECTURES.presets() else ARCHITECTURES.get(name).config(name=name)
    factory = ARCHITECTURES.get(run.architecture.name).factory
    if not hasattr(factory, "matched_baseline"):
        raise ConfigError(f"architecture {run.architecture.name!r} derives no baseline; set compare.baseline=NAME")
    # Matched at the longest example: position tables must hold it, and under the AlexaTM mixture the
    # denoising rows (80%) all have exactly this shape.
    return factory.matched_baseline(run.architecture, vocab_size, int(lengths[0].max()), int(lengths[1].max()),
                                    run.compare.match)


def accounting(arch: Any, vocab_size: int, lengths: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    factory = ARCHITECTURES.get(arch.name).factory
    params = factory.parameter_count(arch, vocab_size)
    flops = [factory.training_flops(arch, vocab_size, int(i), int(t)).per_example for i, t in zip(*lengths)]
    return {"parameters": params.total, "non_embedding_parameters": params.non_embedding,
            "flops_per_example": float(np.mean(flops))}


def check_eval_data(run: RunConfig) -> dict:
    """Resolve the eval tasks and read their data now, so a missing file fails before hours of training.
    Without eval.data_root, tasks with relative paths are left out (the embedded demo runs anywhere), loudly."""
    tasks = resolve_tasks(run.eval.tasks)
    root = Path(run.eval.data_root) if run.eval.data_root else None
    if root is None:
        skipped = [label for label, cfg in tasks.items() if not Path(cfg.path).is_absolute()]
        if skipped:
            print(f"seqlab compare: eval.data_root is not set (nor SEQLAB_EVAL_DATA): not evaluating "
                  f"{', '.join(skipped)}")
        tasks = {label: cfg for label, cfg in tasks.items() if label not in skipped}
    for cfg in tasks.values():
        EVAL_TASKS.build(cfg).examples(root)
    return tasks


def run_one(run: RunConfig, run_dir: Path, vocab_size: int, lengths: tuple[np.ndarray, np.ndarray],
            tasks: dict) -> dict[str, Any] | None:
    """Train and evaluate one model; its results on global rank 0, None on the other ranks."""
    trainer = train(run, run_dir)
    if not trainer.is_global_zero:
        return None
    cost = accounting(run.architecture, vocab_size, lengths)
    sequences_per_step = run.data.batch_size * trainer.world_size * run.trainer.accumulate_grad_batches
    flops_per_step = sequences_per_step * cost["flops_per_example"]
    metrics = read_metrics(Path(trainer.logger.log_dir) / "metrics.csv", flops_per_step)
    scores = {}
    if tasks:
        model = SeqlabModel.from_checkpoint(trainer.checkpoint_callback.last_model_path, batch_size=run.eval.batch_size)
        scores = evaluate(model, tasks, run_dir / "eval" / "final", data_root=run.eval.data_root,
                          limit=run.eval.limit, progress=run.eval.progress_bar)
    return {"architecture": dataclasses.asdict(run.architecture), "run_dir": str(run_dir),
            "steps": trainer.global_step, **cost, "training_flops": trainer.global_step * flops_per_step,
            **metrics, "eval": scores}


def compare(run: CompareRunConfig, job_dir: Path, sweep_dir: Path | None = None) -> Path:
    """Train and evaluate both models into job_dir; write the report (into sweep_dir for a multirun)."""
    tokenizer = Tokenizer(run.tokenizer.path)
    lengths = example_lengths(run, tokenizer, run.compare.probe_rows)
    baseline = baseline_config(run, tokenizer.vocab_size, lengths)
    tasks = check_eval_data(run)
    base_fields = {f.name: getattr(run, f.name) for f in dataclasses.fields(RunConfig)}
    models: dict[str, Any] = {}
    for role, arch in (("model", run.architecture), ("baseline", baseline)):
        name = arch.name if arch.name not in models else f"{arch.name}_{role}"
        one = RunConfig(**{**base_fields, "architecture": arch})
        result = run_one(one, job_dir / name, tokenizer.vocab_size, lengths, tasks)
        models[name] = None if result is None else {"role": role, **result}
    if None in models.values():  # not global rank 0: rank 0 writes the results and the report
        return job_dir
    results = {"seed": run.seed, "match": run.compare.match if run.compare.baseline is None else "preset",
               "objective": run.objective.name, "tokens_per_example": float(np.mean(lengths[0] + lengths[1])),
               "models": models}
    (job_dir / RESULTS).write_text(json.dumps(results, indent=2))
    jobs = sorted((sweep_dir or job_dir).glob(f"*/{RESULTS}")) if sweep_dir else [job_dir / RESULTS]
    configs = {name: Path(m["run_dir"]) / RESOLVED_CONFIG for name, m in models.items()}
    return write_report([json.loads(p.read_text()) for p in jobs], (sweep_dir or job_dir) / "report", configs)
