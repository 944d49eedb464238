"""`ddp`: distributed data parallel; gloo on CPU, NCCL on GPU unless the config says otherwise."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from pytorch_lightning.strategies import DDPStrategy

from seqlab.config import StrategyConfig
from seqlab.errors import require
from seqlab.interfaces import StrategySetup
from seqlab.registry import STRATEGIES


@dataclass
class DDPConfig(StrategyConfig):
    backend: Optional[str] = None  # None: nccl when CUDA is available, else gloo
    find_unused_parameters: bool = False
    gradient_as_bucket_view: bool = True  # gradients alias the all-reduce buckets: one copy less per step
    static_graph: bool = False

    def __post_init__(self) -> None:
        require(self.backend in (None, "gloo", "nccl", "mpi"), "strategy.backend", self.backend,
                "must be gloo, nccl, mpi or null")


@STRATEGIES.register("ddp", config=DDPConfig)
def ddp_strategy(cfg: DDPConfig) -> StrategySetup:
    """Distributed data parallel (torch DDP): one full replica per device."""
    backend = cfg.backend or ("nccl" if torch.cuda.is_available() else "gloo")
    return StrategySetup(DDPStrategy(process_group_backend=backend,
                                     find_unused_parameters=cfg.find_unused_parameters,
                                     gradient_as_bucket_view=cfg.gradient_as_bucket_view,
                                     static_graph=cfg.static_graph))
