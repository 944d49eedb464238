"""`seqlab compare`: a compute-matched study of the model under study against a baseline, over a size ladder.

At every size of `compare.sizes` both models get the same budget (`compare.budget`: training FLOPs by
default, or tokens, or steps): each one's steps are derived from its own cost per step, replayed exactly from
the training stream (see `seqlab.budget`), so a model that is cheaper per step trains for more steps. Both runs
share data, tokenizer, objective mixture, optimiser and seed; only the architecture differs.

Jobs: one job trains one size (`compare.size=I`) or every size in turn (`compare.size=null`), for one seed.
A Hydra multirun (`-m compare.size=0,1,2 seed=0,1,2`) makes every (size, seed) a job, so a cluster launcher
runs them unchanged; every job writes its `results.json`, and the report in the sweep folder is rewritten over
all finished jobs (`seqlab report DIR` does the same without training).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import numpy as np
from hydra.core.config_store import ConfigStore

from seqlab.budget import UNITS, StreamCosts, example_costs
from seqlab.config import RunConfig
from seqlab.errors import ConfigError, require
from seqlab.evaluation.harness import evaluate
from seqlab.evaluation.model import SeqlabModel
from seqlab.evaluation.runs import RESULTS, read_metrics
from seqlab.evaluation.tasks import resolve_tasks
from seqlab.interfaces import capability
from seqlab.registry import ARCHITECTURES, EVAL_TASKS, OBJECTIVES
from seqlab.tokenizer import Tokenizer
from seqlab.train import probe_features, train

COMPARE_CONFIG = "compare"  # experiments/compare.yaml


@dataclass
class SizeConfig:
    """One rung of the size ladder: the model at this size, its baseline, and their shared budget."""

    preset: Optional[str] = None  # the model: an architecture preset; None: `architecture` scaled below
    width: float = 1.0  # d_model multiplier (heads kept; d_model rounded to a multiple of them)
    depth: float = 1.0  # layer-count multiplier
    baseline: Optional[str] = None  # a preset; None: compare.baseline scaled alike, or the model's matched one
    steps: Optional[int] = None  # the model's steps at this size; None: trainer.max_steps
    amount: Optional[float] = None  # the budget in compare.budget units; None: what the model spends in `steps`

    def __post_init__(self) -> None:
        require(self.width > 0, "compare.sizes[].width", self.width, "must be > 0")
        require(self.depth > 0, "compare.sizes[].depth", self.depth, "must be > 0")
        require(self.steps is None or self.steps >= 1, "compare.sizes[].steps", self.steps, "must be >= 1 or null")
        require(self.amount is None or self.amount > 0, "compare.sizes[].amount", self.amount, "must be > 0 or null")


@dataclass
class CompareConfig:
    baseline: Optional[str] = None  # an architecture preset or plugin name; None: the model's matched baseline
    match: str = "parameters"  # parameters | flops: how the derived baseline is sized
    budget: str = "flops"  # flops | tokens | steps: what both models of a size get in equal amounts
    sizes: List[SizeConfig] = field(default_factory=lambda: [SizeConfig()])
    size: Optional[int] = None  # train only this index of `sizes` (a multirun sweeps it); None: every size
    curve_points: int = 8  # validations per run: the points of its loss curve
    probe_rows: int = 512  # objective rows sampled to measure example lengths (baseline matching)
    max_replayed_steps: int = 100_000  # steps replayed to plan a budget; beyond, the spend is extrapolated
    bootstrap: int = 2000  # resamples behind every confidence interval of the report

    def __post_init__(self) -> None:
        require(self.match in ("parameters", "flops"), "compare.match", self.match, "must be parameters or flops")
        require(self.budget in UNITS, "compare.budget", self.budget, f"must be one of {', '.join(UNITS)}")
        require(len(self.sizes) >= 1, "compare.sizes", [], "must list at least one size")
        require(self.size is None or 0 <= self.size < len(self.sizes), "compare.size", self.size,
                f"must index compare.sizes (0..{len(self.sizes) - 1}) or be null")
        require(self.curve_points >= 1, "compare.curve_points", self.curve_points, "must be >= 1")
        require(self.probe_rows >= 1, "compare.probe_rows", self.probe_rows, "must be >= 1")
        require(self.max_replayed_steps >= 1, "compare.max_replayed_steps", self.max_replayed_steps, "must be >= 1")
        require(self.bootstrap >= 100, "compare.bootstrap", self.bootstrap, "must be >= 100")


@dataclass
class CompareRunConfig(RunConfig):
    """A run config (its `architecture` is the model under study) plus how to pick the baseline and budgets."""

    compare: CompareConfig = field(default_factory=CompareConfig)


def register_compare_schema() -> None:
    ConfigStore.instance().store(name="compare_schema", node=CompareRunConfig)


def example_lengths(run: RunConfig, tokenizer: Tokenizer, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Model-neutral (input, target) lengths of `rows` examples the objective makes from full-length text."""
    objective = OBJECTIVES.build(run.objective, tokenizer=tokenizer, seq_len=run.data.seq_len)
    features = probe_features(objective, tokenizer, rows, run.seed)
    return features.input_lengths, features.target_lengths


def _named(name: str) -> Any:
    return ARCHITECTURES.preset(name) if name in ARCHITECTURES.presets() else ARCHITECTURES.get(name).config(name=name)


def _scaled(cfg: Any, width: float, depth: float, where: str) -> Any:
    if width == 1 and depth == 1:
        return cfg
    scaled = capability(ARCHITECTURES.get(cfg.name).factory, "scaled",
                        f"scaling by width and depth ({where}: give this size a preset)")
    return scaled(cfg, width, depth)


def size_architectures(run: CompareRunConfig, size: SizeConfig, vocab_size: int,
                       lengths: tuple[np.ndarray, np.ndarray]) -> tuple[Any, Any]:
    """(model, baseline) architecture configs of one size."""
    model = _named(size.preset) if size.preset else _scaled(run.architecture, size.width, size.depth,
                                                            "compare.sizes")
    if size.baseline is not None:
        return model, _named(size.baseline)
    if run.compare.baseline is not None:
        return model, _scaled(_named(run.compare.baseline), size.width, size.depth, "compare.baseline")
    matched_baseline = capability(ARCHITECTURES.get(model.name).factory, "matched_baseline",
                                  "deriving a matched baseline (set compare.baseline=NAME)")
    # Matched at the longest example: position tables must hold it, and under the AlexaTM mixture the
    # denoising rows (80%) all have exactly this shape.
    return model, matched_baseline(model, vocab_size, int(lengths[0].max()), int(lengths[1].max()),
                                           run.compare.match)


def schedule(cum: np.ndarray, target: float, points: int, tolerance: float = 0.005) -> tuple[int, int]:
    """(steps, validation interval): the steps whose spend is closest to target, moved by at most `tolerance`
    of the budget when that lets the interval divide the steps (the last validation then lands on the last
    step) with between points/2 and 2 x points validations. When no step count in that window allows it (few,
    costly steps), the closest one is kept with an interval of steps / points, and the last validation comes
    up to one interval before the end (the report reads losses and FLOPs at the last validation)."""
    best = int(np.argmin(np.abs(cum - target))) + 1
    window = (np.flatnonzero(np.abs(cum - target) <= tolerance * target) + 1).tolist() or [best]

    def divisor_interval(steps: int) -> int:
        small = [d for d in range(1, math.isqrt(steps) + 1) if steps % d == 0]
        return min(small + [steps // d for d in small], key=lambda d: abs(math.log(steps / d) - math.log(points)))

    def fits(steps: int) -> bool:
        return max(1, points / 2) <= steps / divisor_interval(steps) <= 2 * points

    good = [k for k in window if fits(k)]
    if not good:
        return best, max(1, round(best / points))
    steps = min(good, key=lambda k: (abs(math.log(k / divisor_interval(k)) - math.log(points)), abs(cum[k - 1] - target)))
    return steps, divisor_interval(steps)


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


def run_one(run: RunConfig, run_dir: Path, vocab_size: int, tasks: dict,
            lengths: tuple[np.ndarray, np.ndarray]) -> dict[str, Any] | None:
    """Train and evaluate one model; its results on global rank 0, None on the other ranks."""
    trainer = train(run, run_dir)
    if trainer is None:
        raise ConfigError(f"{run_dir}: this job is already trained to trainer.max_steps={run.trainer.max_steps}; "
                          "`seqlab report` renders the report again from finished jobs")
    if not trainer.is_global_zero:
        return None
    parameter_count = capability(ARCHITECTURES.get(run.architecture.name).factory, "parameter_count",
                                 "parameter accounting")
    params = parameter_count(run.architecture, vocab_size)
    metrics = read_metrics(Path(trainer.logger.log_dir) / "metrics.csv")
    scores, eval_dir = {}, run_dir / "eval" / "final"
    if tasks:
        model = SeqlabModel.from_checkpoint(trainer.checkpoint_callback.last_model_path, batch_size=run.eval.batch_size)
        scores = evaluate(model, tasks, eval_dir, data_root=run.eval.data_root, limit=run.eval.limit,
                          progress=run.eval.progress_bar)
    flops = example_costs(run.architecture, vocab_size, *lengths)[0]
    return {"architecture": dataclasses.asdict(run.architecture), "run_dir": str(run_dir),
            "eval_dir": str(eval_dir) if tasks else None, "steps": trainer.global_step,
            "parameters": params.total, "non_embedding_parameters": params.non_embedding,
            "flops_per_example": float(flops.mean()), **metrics, "eval": scores}


def _run_config(run: CompareRunConfig, arch: Any, steps: int, interval: int, role: str) -> RunConfig:
    """One run of the study. trainer.freeze belongs to the model's recipe (e.g. the paper's frozen warm-started
    encoder, which a decoder-only baseline does not have): the baseline trains every parameter from the start."""
    base = {f.name: getattr(run, f.name) for f in dataclasses.fields(RunConfig)}
    t = run.trainer
    # Training rows must land on every validation step and on the last step: their tokens and FLOPs seen are
    # what the curves and the realised budget are read from.
    period = math.gcd(interval, steps)
    log_every = max(d for d in range(1, min(t.log_every_n_steps, period) + 1) if period % d == 0)
    trainer = dataclasses.replace(t, max_steps=steps, val_check_interval=interval, log_every_n_steps=log_every,
                                  checkpoint_every_n_steps=min(t.checkpoint_every_n_steps, steps),
                                  freeze=t.freeze if role == "model" else [])
    return RunConfig(**{**base, "architecture": arch, "trainer": trainer})


def compare_size(run: CompareRunConfig, index: int, costs: StreamCosts, vocab_size: int, tasks: dict,
                 lengths: tuple[np.ndarray, np.ndarray], job_dir: Path) -> dict[str, Any] | None:
    """Both models of one size trained to the same budget and evaluated; None on ranks other than 0."""
    size, cmp = run.compare.sizes[index], run.compare
    model, baseline = size_architectures(run, size, vocab_size, lengths)
    unit, model_steps = cmp.budget, size.steps or run.trainer.max_steps
    target = size.amount or float(costs.cumulative(model, vocab_size, unit, model_steps)[-1])
    out: dict[str, Any] = {"index": index, "size": dataclasses.asdict(size), "unit": unit, "target": target,
                           "runs": {}}
    for role, arch in (("model", model), ("baseline", baseline)):
        steps, planned = costs.steps_for(arch, vocab_size, unit, target, cmp.max_replayed_steps)
        if steps <= cmp.max_replayed_steps:
            cum = costs.cumulative(arch, vocab_size, unit, min(cmp.max_replayed_steps, int(steps * 1.01) + 1))
            steps, interval = schedule(cum, target, cmp.curve_points)
            planned = float(cum[steps - 1])
        else:
            interval = max(1, steps // cmp.curve_points)
        name = arch.name if arch.name not in out["runs"] else f"{arch.name}_{role}"
        result = run_one(_run_config(run, arch, steps, interval, role), job_dir / f"size{index}" / name, vocab_size,
                         tasks, lengths)
        if result is None:
            return None
        out["runs"][name] = {"role": role, "planned": planned, **result}
    return out


def compare(run: CompareRunConfig, job_dir: Path, sweep_dir: Path | None = None) -> Path:
    """Train and evaluate the selected sizes into job_dir; write the report (into sweep_dir for a multirun)."""
    from seqlab.evaluation.report import write_report  # matplotlib only when a report is written

    tokenizer = Tokenizer(run.tokenizer.path)
    lengths = example_lengths(run, tokenizer, run.compare.probe_rows)
    tasks = check_eval_data(run)
    costs = StreamCosts(run, tokenizer)
    indices = range(len(run.compare.sizes)) if run.compare.size is None else [run.compare.size]
    sizes = []
    for index in indices:
        result = compare_size(run, index, costs, tokenizer.vocab_size, tasks, lengths, job_dir)
        if result is None:  # not global rank 0: rank 0 writes the results and the report
            return job_dir
        sizes.append(result)
    results = {"seed": run.seed, "budget": run.compare.budget,
               "match": run.compare.match if run.compare.baseline is None else "preset",
               "objective": run.objective.name, "bootstrap": run.compare.bootstrap, "sizes": sizes}
    (job_dir / RESULTS).write_text(json.dumps(results, indent=2))
    return write_report(sweep_dir or job_dir, run.compare.bootstrap)
