"""Evaluation inside training: every `eval.every_n_steps` optimizer steps, logged like the losses.

Every rank runs the same evaluation on the same examples: a sharded model (FSDP2) needs all ranks in each
forward, and greedy decoding is deterministic, so the ranks agree. Under DDP the work is repeated per rank,
the price of one code path for every strategy. Rank 0 logs `eval/TASK/METRIC` and writes the predictions to
RUN/eval/stepN/.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from seqlab.config import EvalConfig
from seqlab.evaluation.harness import evaluate
from seqlab.evaluation.model import SeqlabModel
from seqlab.evaluation.tasks import resolve_tasks
from seqlab.tokenizer import Tokenizer


class PeriodicEval(pl.Callback):
    def __init__(self, cfg: EvalConfig, tokenizer: Tokenizer, architecture: Any, run_dir: Path):
        self.cfg = cfg
        self.tasks = resolve_tasks(cfg.tasks)  # bad task configs fail before training starts
        self.tokenizer = tokenizer
        self.architecture = architecture
        self.run_dir = run_dir
        self._last_step = -1

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        # global_step counts optimizer steps; with gradient accumulation it stays put for several batches.
        if step == 0 or step % self.cfg.every_n_steps or step == self._last_step:
            return
        self._last_step = step
        model = SeqlabModel(pl_module.model, self.tokenizer, self.architecture, f"{self.architecture.name}:step{step}",
                            self.cfg.batch_size)
        out_dir = self.run_dir / "eval" / f"step{step}" if trainer.is_global_zero else None
        results = evaluate(model, self.tasks, out_dir, data_root=self.cfg.data_root, limit=self.cfg.limit,
                           progress=self.cfg.progress_bar and trainer.is_global_zero)
        if trainer.is_global_zero and trainer.logger is not None:
            trainer.logger.log_metrics({f"eval/{task}/{name}": value for task, metrics in results.items()
                                        for name, value in metrics.items() if name not in ("examples", "truncated")},
                                       step=step)
