"""The one LightningDataModule: a resumable packed stream per rank, validation on held-out documents."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader

from seqlab.data.loader import PackedBatches, StreamSpec, open_views
from seqlab.data.sampler import sampling_table
from seqlab.interfaces import FeatureConverter, Objective


class SeqLabDataModule(pl.LightningDataModule):
    def __init__(self, spec: StreamSpec, objective: Objective, converter: FeatureConverter):
        super().__init__()
        self.spec = spec
        self.objective = objective
        self.converter = converter
        self._resume_state: dict | None = None
        self._consumed_state: dict | None = None
        self._has_val = False

    def setup(self, stage: str) -> None:
        if self.trainer is not None:
            self.spec = replace(self.spec, rank=self.trainer.global_rank, num_replicas=self.trainer.world_size)
        self._has_val = bool(open_views(self.spec, "val")) and self.spec.data.val_batches > 0
        rank_zero_info(self.describe())

    def describe(self) -> str:
        """A table of what the run samples: per language p, q, documents and tokens, long documents."""
        views = open_views(self.spec, "train")
        table = sampling_table(views, self.spec.data.alpha, self.spec.data.weights)
        lines = [f"training data: {self.spec.prepared_dir} (alpha={self.spec.data.alpha})",
                 f"  {'lang':6} {'docs':>9} {'tokens':>12} {'p':>7} {'q':>7} {'docs > seq_len':>15}"]
        for i, lang in enumerate(table.languages):
            lengths = np.concatenate([v.lengths for v in views if v.shard.lang == lang])
            long_docs = int((lengths > self.spec.data.seq_len).sum())
            lines.append(f"  {lang:6} {len(lengths):9d} {int(lengths.sum()):12d} {table.p[i]:7.3f} "
                         f"{table.q[i]:7.3f} {long_docs:15d}")
        lines.append("  documents longer than seq_len continue in the next sequence of the same stream")
        return "\n".join(lines)

    def train_dataloader(self) -> DataLoader:
        dataset = PackedBatches(self.spec, "train", self.objective, self.converter, state=self._resume_state)
        return self._loader(dataset)

    def val_dataloader(self) -> DataLoader | list:
        if not self._has_val:
            return []
        dataset = PackedBatches(self.spec, "val", self.objective, self.converter,
                                num_batches=self.spec.data.val_batches)
        return self._loader(dataset)

    def _loader(self, dataset: PackedBatches) -> DataLoader:
        # Batches are collated by the dataset itself (vectorised over the batch), hence batch_size=None.
        workers = self.spec.data.num_workers
        return DataLoader(dataset, batch_size=None, num_workers=workers,
                          prefetch_factor=4 if workers else None, persistent_workers=False)

    def on_before_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        state = batch.pop("sampler_state")
        if self.trainer is not None and self.trainer.training:
            # The batch is about to be trained on: a checkpoint taken after this step resumes after it.
            self._consumed_state = state
        return batch

    @property
    def stream_step(self) -> int | None:
        """The data stream step of the batch being trained on (what a divergence message names)."""
        return None if self._consumed_state is None else int(self._consumed_state["step"]) - 1

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self._consumed_state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume_state = state_dict.get("sampler")
        self._consumed_state = self._resume_state
