"""The one LightningModule: builds the architecture from the registry, logs the loss per objective and guards
training against divergence."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn

from seqlab.config import RunConfig
from seqlab.data.streams import Stream
from seqlab.freeze import FreezeSchedule
from seqlab.fault import WORLD_SIZE_KEY
from seqlab.guard import DivergenceError, DivergenceGuard
from seqlab.identity import IDENTITY_KEY
from seqlab.interfaces import Batch, LossOutput, StrategySetup
from seqlab.optim import build_optimizer
from seqlab.registry import ARCHITECTURES
from seqlab.warm_start import warm_start

OBJECTIVE_LOSS_RESULTS = "training_step.train/loss_"  # Lightning's result keys of the per-objective means
TRAIN_SUMS_KEY = "train_sums"  # checkpoint entry: (2, K) per-objective loss sum and tokens since the last row


def compile_blocks(model: torch.nn.Module, mode: str | None) -> None:
    """torch.compile each block of `model.blocks` in place (trainer.compile).

    `nn.Module.compile` keeps each block the same object with the same state-dict names (no `_orig_mod.`), so
    checkpoints, warm starts and exports see the uncompiled model's names, and strategies find the blocks by
    identity. It only marks the block: the graph is traced at the block's first call, after materialisation and
    sharding, so it works on the meta device before FSDP2 shards, and FSDP2's hooks, which torch keeps out of
    tracing, run eagerly around each compiled block. Per block, not the whole model: the blocks of a stack run
    the same code, so they share the compiled graphs and compile time does not grow with depth, while the
    embeddings, loss and generation's Python bookkeeping stay eager.

    dynamic=None (torch's automatic dynamic shapes) rather than True: the first batch compiles kernels for its
    exact shapes, and a dimension that then changes (batch widths follow the longest row, e.g. one document per
    CLM row) is recompiled once as symbolic and serves every later width; packed rows of one fixed shape keep
    the faster static kernels, with no recompilation.
    """
    # Dynamo's recompile limit (8) counts the graphs cached per code object, and all blocks share one forward:
    # encoder and decoder blocks x training and no-grad (validation) x static and dynamic already make 8, and
    # generation's cached decoding adds more; past the limit calls fall back to eager. A higher limit still
    # stops runaway recompilation.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    for block in model.blocks:
        block.compile(mode=mode)


class SeqLabModule(pl.LightningModule):
    def __init__(self, run: RunConfig, vocab_size: int, objective_names: Sequence[str],
                 setup: StrategySetup | None = None):
        super().__init__()
        self.run = run
        self.vocab_size = vocab_size
        self.objective_names = tuple(objective_names)
        self._setup = setup
        # The resolved config travels inside every checkpoint, so a checkpoint alone says how to rebuild it.
        self.save_hyperparameters({"config": asdict(run), "vocab_size": vocab_size,
                                   "objective_names": list(self.objective_names)})
        self.model: torch.nn.Module | None = None
        k = len(self.objective_names)
        # Per-objective (loss sum, token count) accumulated between logging points and over a validation pass:
        # a batch of a mixture need not contain every child, so per-step means would be biased or missing.
        self.register_buffer("_train_sums", torch.zeros(2, k, dtype=torch.float64), persistent=False)
        self.register_buffer("_val_sums", torch.zeros(2, k, dtype=torch.float64), persistent=False)
        self.guard = DivergenceGuard(run.trainer.divergence, self.objective_names)
        self._skip_step = False  # a micro-batch of the current optimizer step diverged (action=skip)
        self._freeze = FreezeSchedule(run.trainer.freeze, run.strategy.name)  # trainer.freeze
        self.identity: dict[str, Any] | None = None  # what the checkpoints record as theirs (seqlab/identity.py)

    def configure_model(self) -> None:
        """Build the model here, not in __init__, so sharding strategies can build it where it will live.

        The model is built on the meta device (no memory), then materialised and initialised. A strategy that
        shards meta modules (FSDP2) shards first, so each rank allocates and initialises only its own shards.
        Initialisation is keyed by parameter name and seed, so every layout starts from the same weights.
        With trainer.compile the blocks are compiled right after the build, before any strategy wraps them.
        """
        if self.model is not None:
            return
        with torch.device("meta"):
            model = ARCHITECTURES.build(self.run.architecture, vocab_size=self.vocab_size)
        if self.run.trainer.compile:
            compile_blocks(model, self.run.trainer.compile_mode)
        setup = self._setup
        if setup is not None and setup.parallelize is not None and setup.shards_meta:
            model = setup.parallelize(model, self._device_mesh)
        device = self.trainer.strategy.root_device if self._trainer is not None else torch.device("cpu")
        model.to_empty(device=device)
        model.init_weights(self.run.seed)
        self._freeze.check(model)  # every trainer.freeze prefix names parameters
        warm_start(model, self.run.architecture.init_from)  # architecture.init_from: weights to start from
        if setup is not None and setup.parallelize is not None and not setup.shards_meta:
            model = setup.parallelize(model, self._device_mesh if self._trainer is not None else None)
        self.model = model

    def _accumulate(self, sums: torch.Tensor, out: LossOutput, objective: torch.Tensor) -> None:
        sums[0].index_add_(0, objective, out.loss_sum.detach().double())
        sums[1].index_add_(0, objective, out.tokens.double())

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        # The model's own randomness (dropout) restarts from (seed, step, rank, micro-batch) at every batch, so a
        # run resumed from a checkpoint draws exactly what the uninterrupted run drew, with no generator state
        # to save. Micro-batches of one optimizer step are numbered by batch_idx within the step.
        micro = batch_idx % self.trainer.accumulate_grad_batches
        key = (Stream.MODEL, self.run.seed, self.global_step, self.trainer.global_rank, micro)
        torch.manual_seed(int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0]))
        # Lightning writes a logged key's last value into every later row until it is logged again, so an
        # objective without rows since the last logged row would repeat an older mean (and a resumed run,
        # which has no older mean, would differ). Forgetting the values makes such a cell empty.
        for name, result in (getattr(self.trainer, "_results", None) or {}).items():
            if name.startswith(OBJECTIVE_LOSS_RESULTS):
                result.reset()

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        out = self.model.loss(batch)
        # The loss is the mean over every target token of the global batch. Ranks hold different numbers of
        # target tokens (documents, deletions), and data-parallel backends average gradients over ranks, so
        # each rank scales its sum by world_size / global tokens: then N ranks train exactly like one process
        # with the whole batch.
        totals = torch.stack([out.loss_sum.sum().detach(), out.tokens.sum().to(out.loss_sum.dtype)])
        sums = torch.zeros_like(self._train_sums)  # (2, K) this batch's per-objective loss sum and tokens
        self._accumulate(sums, out, batch["objective"])
        world = self.trainer.world_size
        if world > 1:  # one collective for both: (2,) totals then the (2, K) sums, in float64
            reduced = self.trainer.strategy.reduce(torch.cat([totals.double(), sums.flatten()]), reduce_op="sum")
            totals, sums = reduced[:2].to(totals.dtype), reduced[2:].view_as(sums)
        objective = out.loss_sum.sum() if out.regulariser is None else out.loss_sum.sum() + out.regulariser.sum()
        loss = objective * world / totals[1].clamp_min(1)
        self._check_divergence(sums, batch_idx)
        if not self._skip_step:  # a skipped step's NaN must not spoil the per-objective means of its interval
            self._train_sums += sums
        self.log("train/loss", totals[0] / totals[1].clamp_min(1), prog_bar=True)
        self.log("step", float(self.global_step + 1))  # steps completed once this one is applied
        # Per-objective means cover every batch since the previous write to the logger; the sums are global.
        if self.trainer._logger_connector.should_update_logs:
            self.log_dict(self._means("train", self._train_sums))
            self._train_sums.zero_()
        if self.guard.skipped:
            self.log("train/skipped_steps", float(self.guard.skipped))
        return loss

    def _check_divergence(self, sums: torch.Tensor, batch_idx: int) -> None:
        """Stop (raise) or mark the step skipped when the guard finds a problem in this batch's losses."""
        step = self.global_step + 1
        problems = self.guard.check(step, sums)
        if not problems:
            return
        stream_step = getattr(self.trainer.datamodule, "stream_step", None)
        batch = (f"data stream step {stream_step} of seed {self.run.seed}, " if stream_step is not None else "") \
            + f"batch_idx {batch_idx}"
        message = self.guard.describe(step, problems, batch)
        if self.guard.cfg.action == "skip":
            if not self._skip_step:
                self.guard.skipped += 1
            self._skip_step = True
            rank_zero_warn(f"{message}; skipping this step (trainer.divergence.action=skip)")
            return
        checkpoint = self.trainer.checkpoint_callback
        # Checkpoints are ranked by step, so the best one is the newest (named after its step, unlike last.ckpt).
        kept = (checkpoint.best_model_path or checkpoint.last_model_path) if checkpoint is not None else ""
        raise DivergenceError(f"{message}. The run stopped before this step's update, so no checkpoint holds it; "
                              + (f"the last checkpoint is {kept}" if kept else "no checkpoint was written yet")
                              + ". Resume from it with a lower optim.lr, or set trainer.divergence.action=skip")

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        def closure():
            # The step's forward and backward run as usual (every rank takes part in the same collectives);
            # a skipped step then drops its gradients, and optimizers leave parameters without one untouched:
            # no update, no moment or weight-decay change. The schedule still advances: the step counts.
            loss = optimizer_closure()
            if self._skip_step:
                optimizer.zero_grad(set_to_none=True)
                self._skip_step = False
            # Frozen parameters (trainer.freeze) lose their gradients the same way, before clipping measures them.
            frozen.append(self._freeze.drop_gradients(self.model, self.global_step, optimizer)
                          if self._freeze else 0)
            return loss

        frozen: list[int] = []
        optimizer.step(closure=closure)
        if self._freeze:
            self.log("train/frozen_parameters", float(frozen[-1] if frozen else 0))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Running means decide spikes: a resumed run must judge its next steps like the uninterrupted one.
        checkpoint["divergence_guard"] = self.guard.state_dict()
        # The per-objective sums since the last logged row: the next row of a resumed run covers them too.
        checkpoint[TRAIN_SUMS_KEY] = self._train_sums.detach().cpu().clone()
        checkpoint[WORLD_SIZE_KEY] = self.trainer.world_size if self._trainer is not None else 1
        if self.identity is not None:
            checkpoint[IDENTITY_KEY] = self.identity

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "divergence_guard" in checkpoint:
            self.guard.load_state_dict(checkpoint["divergence_guard"])
        sums = checkpoint.get(TRAIN_SUMS_KEY)
        if isinstance(sums, torch.Tensor) and sums.shape == self._train_sums.shape:
            self._train_sums.copy_(sums)

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
