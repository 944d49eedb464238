"""`fsdp2`: PyTorch's per-parameter FSDP (`fully_shard`) through Lightning's ModelParallelStrategy.

Every repeated block is sharded on its own, then the root (embeddings, final norm, head), so at most one block's
full parameters are gathered at a time. The model is sharded while still on the meta device: each rank then
allocates and initialises only its own shards, so a model larger than one device's memory can start. It runs
wherever torch.distributed does, CPU (gloo) included, which makes it the default sharding strategy; the
GPU-only ones (`fsdp`, `fairscale_fsdp`) point here.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from pytorch_lightning.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import (
    CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard, register_fsdp_forward_method,
)

from seqlab.config import StrategyConfig
from seqlab.errors import WriteError, require
from seqlab.sharded import partial_folder, seal_sharded, storage_error
from seqlab.interfaces import StrategySetup
from seqlab.registry import STRATEGIES

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class FSDP2Config(StrategyConfig):
    # Parameters are gathered in this dtype for compute; gradients are reduced in fp32 (reduce_dtype) so that
    # summing many ranks' gradients loses no precision. fp32 keeps everything in full precision.
    mixed_precision: str = "fp32"  # fp32 | bf16 | fp16
    reshard_after_forward: bool = True  # free gathered parameters after forward (ZeRO-3); False keeps them (ZeRO-2)
    cpu_offload: bool = False  # keep sharded parameters, gradients and optimizer state in CPU memory
    sharded_checkpoint: bool = True  # each rank writes its shard (torch distributed checkpoint); False: one file
    backend: Optional[str] = None  # None: nccl with CUDA, else gloo

    def __post_init__(self) -> None:
        require(self.mixed_precision in PRECISIONS, "strategy.mixed_precision", self.mixed_precision,
                f"must be one of {', '.join(PRECISIONS)}")
        require(self.backend in (None, "gloo", "nccl"), "strategy.backend", self.backend, "must be gloo, nccl or null")


def shard_model(cfg: FSDP2Config, model: nn.Module, mesh: DeviceMesh) -> nn.Module:
    """fully_shard each block of `model.blocks` over the data-parallel mesh, then the root."""
    dtype = PRECISIONS[cfg.mixed_precision]
    policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32) if dtype else MixedPrecisionPolicy()
    options = dict(mesh=mesh["data_parallel"], mp_policy=policy,
                   offload_policy=CPUOffloadPolicy() if cfg.cpu_offload else OffloadPolicy())
    for block in model.blocks:
        fully_shard(block, reshard_after_forward=cfg.reshard_after_forward, **options)
    # The root's parameters are needed again right at the start of backward (the head): keep them gathered.
    fully_shard(model, reshard_after_forward=False, **options)
    # Training calls model.loss(batch), not forward: FSDP must gather the root's parameters around it too.
    register_fsdp_forward_method(model, "loss")
    return model


class DataParallelFSDP2(ModelParallelStrategy):
    """ModelParallelStrategy with every rank in the data-parallel dimension (no tensor parallelism).

    Lightning's "auto" sizes assume data parallel across nodes and tensor parallel within one; the world size
    is known once the launcher is configured, before the device mesh is built.
    """

    def _configure_launcher(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes
        super()._configure_launcher()

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any = None) -> None:
        """A sharded checkpoint is written whole or not at all: every rank writes its shard into a hidden
        `.NAME.partial` folder; once all have, rank 0 records each file's size in a completion marker and
        renames the folder to NAME (seqlab.fault.seal_sharded). A kill mid-save leaves the previous checkpoints
        untouched and only a hidden folder, which the next `resume=auto` removes."""
        if not self._save_distributed_checkpoint or storage_options is not None:
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        path = Path(self.broadcast(str(filepath)))
        temp = partial_folder(path)
        if self.global_rank == 0 and temp.exists():
            shutil.rmtree(temp)  # left by an earlier save of this name that was cut short
        self.barrier("seqlab.sharded_save.start")
        try:
            super().save_checkpoint(checkpoint, temp)
        except BaseException as err:  # CheckpointException is a BaseException
            cause = storage_error(err, path.parent)
            if cause is None:
                raise
            if self.global_rank == 0:
                shutil.rmtree(temp, ignore_errors=True)
            failure = WriteError(path, cause)
            failure.agreed = True  # torch raised it on every rank: rank 0 alone says so
            raise failure from None
        self.barrier("seqlab.sharded_save.written")
        if self.global_rank == 0:
            seal_sharded(temp, path, self.world_size)
        self.barrier("seqlab.sharded_save.sealed")


@STRATEGIES.register("fsdp2", config=FSDP2Config)
def fsdp2_strategy(cfg: FSDP2Config) -> StrategySetup:
    """Fully sharded data parallel, FSDP2 (per-parameter sharding), each block then the root; CPU and GPU."""
    # torch's CPUOffloadPolicy moves shards between CPU and an accelerator; without one there is nothing to do.
    require(not cfg.cpu_offload or torch.cuda.is_available(), "strategy.cpu_offload", cfg.cpu_offload,
            "offloads GPU memory to the CPU, and this machine has no GPU: the model already lives in CPU memory")
    backend = cfg.backend or ("nccl" if torch.cuda.is_available() else "gloo")
    strategy = DataParallelFSDP2(data_parallel_size="auto", tensor_parallel_size=1,
                                     save_distributed_checkpoint=cfg.sharded_checkpoint,
                                     process_group_backend=backend)
    return StrategySetup(strategy, parallelize=lambda model, mesh: shard_model(cfg, model, mesh), shards_meta=True)
