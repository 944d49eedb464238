"""`fsdp`: Lightning's FSDPStrategy (PyTorch's FSDP1, flat parameters), each block of `model.blocks` wrapped.
GPU only."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from seqlab.config import StrategyConfig
from seqlab.errors import require
from seqlab.interfaces import StrategySetup
from seqlab.registry import STRATEGIES
from seqlab_plugins.strategies.gpu_only import require_cuda

SHARDING = ("FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD")


@dataclass
class FSDPConfig(StrategyConfig):
    sharding_strategy: str = "FULL_SHARD"  # FULL_SHARD (ZeRO-3) | SHARD_GRAD_OP (ZeRO-2) | NO_SHARD | HYBRID_SHARD
    cpu_offload: bool = False
    sharded_checkpoint: bool = True  # state_dict_type "sharded" (one file per rank) or "full" (one file)
    limit_all_gathers: bool = True  # bounds memory: at most two blocks' parameters gathered ahead

    def __post_init__(self) -> None:
        require(self.sharding_strategy in SHARDING, "strategy.sharding_strategy", self.sharding_strategy,
                f"must be one of {', '.join(SHARDING)}")


class BlockPolicy:
    """FSDP1's auto-wrap policy: wrap exactly the modules in `model.blocks`, whatever their class. The blocks
    are known once the model is built; `record` (the setup's parallelize step) tells the policy which."""

    def __init__(self) -> None:
        self.blocks: set[int] = set()

    def record(self, model: nn.Module, mesh: Any = None) -> nn.Module:
        self.blocks = {id(block) for block in model.blocks}
        return model

    def __call__(self, module: nn.Module, recurse: bool, nonwrapped_numel: int) -> bool:
        return recurse or id(module) in self.blocks


@STRATEGIES.register("fsdp", config=FSDPConfig)
def fsdp_strategy(cfg: FSDPConfig) -> StrategySetup:
    """Fully sharded data parallel, FSDP1 via Lightning, auto-wrapping every block; GPU only (use fsdp2 on CPU)."""
    require_cuda("fsdp", "Lightning's FSDPStrategy refuses CPU accelerators")
    from pytorch_lightning.strategies import FSDPStrategy

    policy = BlockPolicy()
    strategy = FSDPStrategy(auto_wrap_policy=policy, sharding_strategy=cfg.sharding_strategy,
                            cpu_offload=cfg.cpu_offload, limit_all_gathers=cfg.limit_all_gathers,
                            state_dict_type="sharded" if cfg.sharded_checkpoint else "full")
    return StrategySetup(strategy, parallelize=policy.record)
