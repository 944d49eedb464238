"""The one LightningModule: builds the architecture from the registry and logs the loss per objective."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable, Sequence

import pytorch_lightning as pl
import torch

from seqlab.config import RunConfig
from seqlab.interfaces import Batch, LossOutput
from seqlab.optim import build_optimizer
from seqlab.registry import ARCHITECTURES


class SeqLabModule(pl.LightningModule):
    def __init__(self, run: RunConfig, vocab_size: int, objective_names: Sequence[str],
                 parallelize: Callable[[torch.nn.Module, Any], torch.nn.Module] | None = None):
        super().__init__()
        self.run = run
        self.vocab_size = vocab_size
        self.objective_names = tuple(objective_names)
        self._parallelize = parallelize
        # The resolved config travels inside every checkpoint, so a checkpoint alone says how to rebuild it.
        self.save_hyperparameters({"config": asdict(run), "vocab_size": vocab_size,
                                   "objective_names": list(self.objective_names)})
        self.model: torch.nn.Module | None = None
        k = len(self.objective_names)
        # Per-objective (loss sum, token count) accumulated between logging points and over a validation pass:
        # a batch of a mixture need not contain every child, so per-step means would be biased or missing.
        self.register_buffer("_train_sums", torch.zeros(2, k, dtype=torch.float64), persistent=False)
        self.register_buffer("_val_sums", torch.zeros(2, k, dtype=torch.float64), persistent=False)

    def configure_model(self) -> None:
        """Build the model here, not in __init__, so sharding strategies can build it where it will live."""
        if self.model is not None:
            return
        model = ARCHITECTURES.build(self.run.architecture, vocab_size=self.vocab_size)
        model.init_weights()
        # Every rank builds and initialises the full model from the same seed before sharding, so a sharded run
        # starts from exactly the weights of a single-process run.
        mesh = self._device_mesh if self._parallelize else None
        self.model = self._parallelize(model, mesh) if self._parallelize else model

    def _accumulate(self, sums: torch.Tensor, out: LossOutput, objective: torch.Tensor) -> None:
        sums[0].index_add_(0, objective, out.loss_sum.detach().double())
        sums[1].index_add_(0, objective, out.tokens.double())

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        out = self.model.loss(batch)
        # The loss is the mean over every target token of the global batch. Ranks hold different numbers of
        # target tokens (documents, deletions), and data-parallel backends average gradients over ranks, so
        # each rank scales its sum by world_size / global tokens: then N ranks train exactly like one process
        # with the whole batch.
        totals = torch.stack([out.loss_sum.sum().detach(), out.tokens.sum().to(out.loss_sum.dtype)])
        world = self.trainer.world_size
        if world > 1:
            totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
        loss = out.loss_sum.sum() * world / totals[1].clamp_min(1)
        self._accumulate(self._train_sums, out, batch["objective"])
        self.log("train/loss", totals[0] / totals[1].clamp_min(1), prog_bar=True)
        self.log("step", float(self.global_step + 1))  # steps completed once this one is applied
        # Per-objective means cover every batch since the previous write to the logger.
        # Every rank reaches the same logging steps, so the all-reduce here is safe: the means are global.
        if self.trainer._logger_connector.should_update_logs:
            sums = self._train_sums.clone()
            if world > 1:
                sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
            self.log_dict(self._means("train", sums))
            self._train_sums.zero_()
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._accumulate(self._val_sums, self.model.loss(batch), batch["objective"])

    def on_validation_epoch_end(self) -> None:
        totals = self.trainer.strategy.reduce(self._val_sums.clone(), reduce_op="sum")
        metrics = self._means("val", totals)
        if totals[1].sum() > 0:
            metrics["val/loss"] = float(totals[0].sum() / totals[1].sum())
        # Already summed over ranks, so every rank holds the same values and the mean sync_dist takes is a no-op.
        self.log_dict(metrics, sync_dist=True)
        self._val_sums.zero_()

    def _means(self, split: str, sums: torch.Tensor) -> dict[str, float]:
        """{"split/loss_NAME": mean token loss} for every objective that had tokens."""
        values = sums.tolist()
        return {f"{split}/loss_{name}": values[0][k] / values[1][k]
                for k, name in enumerate(self.objective_names) if values[1][k] > 0}

    def configure_optimizers(self):
        optimizer, scheduler = build_optimizer(self.model, self.run.optim, self.run.trainer.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
