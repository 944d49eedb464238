"""`fairscale_fsdp`: fairscale's FullyShardedDataParallel (the FSDP that PyTorch's was upstreamed from). GPU only.

Lightning 2 dropped its fairscale integration, so this is a thin DDPStrategy (process group, launcher, reductions)
without the DDP wrapper: `shard` wraps every block of `model.blocks`, then the root, in fairscale's FSDP while the model
is configured. fairscale gathers the root's parameters and hooks the backward only inside the root's forward, and
training calls `model.loss(batch)`, so `loss` is routed through that forward (FSDP2's register_fsdp_forward_method
does the same for `fsdp2`).

Checkpoints hold the full state dict, gathered on rank 0 and copied to CPU (`state_dict_device`: a real GPU -> CPU
copy, not torch FSDP1's `offload_to_cpu`, which segfaults on full state dicts), with the keys of the unwrapped
model. Flat or sharded parameters are 1-D, so the optimizer's rule "decay matrices, not biases or norm gains" cannot
see them: every parameter is then decayed at the configured rate, as fairseq does with FSDP.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from seqlab.config import StrategyConfig
from seqlab.errors import ConfigError, require
from seqlab.interfaces import LossOutput, StrategySetup
from seqlab.registry import STRATEGIES
from seqlab_plugins.strategies.gpu_only import require_cuda

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class FairscaleFSDPConfig(StrategyConfig):
    flatten_parameters: bool = True  # one contiguous tensor per wrapped unit: fewer, larger collectives
    # Parameters are gathered and computed in this dtype, gradients reduce-scattered in fp32; the sharded master
    # copy stays fp32. fp32: no casting by the strategy (trainer.precision=bf16-mixed still autocasts).
    mixed_precision: str = "fp32"  # fp32 | bf16 | fp16
    reshard_after_forward: bool = True  # free each block's gathered parameters after forward (ZeRO-3)
    cpu_offload: bool = False  # keep parameter and gradient shards in CPU memory; the optimizer steps there

    def __post_init__(self) -> None:
        require(self.mixed_precision in PRECISIONS, "strategy.mixed_precision", self.mixed_precision,
                f"must be one of {', '.join(PRECISIONS)}")


class FairscaleFSDPStrategy(DDPStrategy):
    """DDPStrategy's processes and collectives; the model is sharded by `shard`, not wrapped in DDP."""

    def __init__(self, cfg: FairscaleFSDPConfig, **kwargs: Any):
        super().__init__(**kwargs)
        self.cfg = cfg
        self._root: nn.Module | None = None

    def shard(self, model: nn.Module, mesh: Any = None) -> nn.Module:
        """Wrap each block of `model.blocks`, then `model` itself, in fairscale's FSDP; called in configure_model."""
        from fairscale.nn.data_parallel import FullyShardedDataParallel as FSDP

        dtype = PRECISIONS[self.cfg.mixed_precision]
        options = dict(flatten_parameters=self.cfg.flatten_parameters,
                       reshard_after_forward=self.cfg.reshard_after_forward,
                       mixed_precision=dtype is not None, compute_dtype=dtype, fp32_reduce_scatter=dtype is not None,
                       move_params_to_cpu=self.cfg.cpu_offload,
                       state_dict_device=torch.device("cpu"), state_dict_on_rank_0_only=True)
        # Offloaded shards must start in CPU memory; the others are sharded where they compute.
        model.to(torch.device("cpu") if self.cfg.cpu_offload else self.root_device)
        blocks = {id(block) for block in model.blocks}
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if id(child) in blocks:
                    setattr(parent, name, FSDP(child, **options))
        root = FSDP(model, **options)  # the root keeps its parameters gathered after forward (fairscale's default)
        if self.cfg.cpu_offload:
            # Each unit prepares its shards at its first forward, and allocates the CPU gradient buffers offloading
            # needs only in training mode; Lightning's first forward is the sanity check's, in eval mode.
            for unit in root.modules():
                if isinstance(unit, FSDP):
                    unit._lazy_init()  # the root first: it tells the others they are not roots
        route_through_forward(root, model)
        self._root = root
        return root

    def configure_ddp(self) -> None:
        """Nothing to wrap: `shard` did it in configure_model."""

    def model_to_device(self) -> None:
        if not self.cfg.cpu_offload:
            super().model_to_device()
            return
        # Offloaded parameters stay in CPU memory (fairscale copies them to the GPU to compute); buffers move.
        for module in self.lightning_module.modules():
            for name, buffer in module.named_buffers(recurse=False):
                setattr(module, name, buffer.to(self.root_device))

    def setup(self, trainer: Any) -> None:
        super().setup(trainer)
        # Each rank holds gradient shards: clip by the norm over all of them, which only fairscale's root computes.
        self.precision_plugin.clip_grad_by_norm = lambda optimizer, clip_val: self._root.clip_grad_norm_(clip_val)

    def setup_optimizers(self, trainer: Any) -> None:
        super().setup_optimizers(trainer)
        if not (self.cfg.flatten_parameters or self.world_size > 1):
            return  # parameters keep their shapes: the optimizer's groups are right
        for optimizer in self.optimizers:
            rate = max(group.get("weight_decay", 0.0) for group in optimizer.param_groups)
            if rate > 0:
                rank_zero_warn(f"strategy=fairscale_fsdp: flat or sharded parameters are all 1-D, so weight decay "
                               f"{rate} applies to every parameter, biases and norm gains included")
                for group in optimizer.param_groups:
                    group["weight_decay"] = rate

    def load_model_state_dict(self, checkpoint: dict[str, Any], strict: bool = True) -> None:
        """Full state dicts load through the root, which scatters them into the shards (on every rank)."""
        prefix = next(name for name, module in self.lightning_module.named_modules() if module is self._root) + "."
        state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
        self._root.load_state_dict(state, strict=strict)

    def load_optimizer_state_dict(self, checkpoint: dict[str, Any]) -> None:
        if self.world_size > 1:
            raise ConfigError("strategy=fairscale_fsdp: cannot resume on more than one GPU, the checkpoint holds "
                              "only rank 0's optimizer shard; use strategy=fsdp2")
        for optimizer, state in zip(self.optimizers, checkpoint["optimizer_states"], strict=True):
            optimizer.load_state_dict(state)  # moves each state tensor to its parameter's device (CPU if offloaded)


def route_through_forward(root: nn.Module, model: nn.Module) -> None:
    """Make `root.loss(batch)` run `model.loss(batch)` inside the root's forward (as Lightning's forward
    redirection does for training_step). The outputs leave forward as tensors, so the root hooks their backward."""
    loss = model.loss

    def forward(batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        out = loss(batch)
        return out.loss_sum, out.tokens, out.regulariser

    def sharded_loss(batch: Any) -> LossOutput:
        model.forward = forward
        try:
            return LossOutput(*root(batch))
        finally:
            del model.forward

    root.loss = sharded_loss


@STRATEGIES.register("fairscale_fsdp", config=FairscaleFSDPConfig)
def fairscale_fsdp_strategy(cfg: FairscaleFSDPConfig) -> StrategySetup:
    """Fully sharded data parallel with fairscale's FSDP, each block then the root; GPU only (use fsdp2 on CPU)."""
    require_cuda("fairscale_fsdp",
                 "fairscale's FullyShardedDataParallel needs CUDA streams (KeyError: 'all_gather' on CPU)")
    try:
        import fairscale  # noqa: F401 - fail while configuring, not at the first step
    except ImportError:
        raise ConfigError("strategy=fairscale_fsdp: needs fairscale, which is not installed: "
                          "pip install 'seqlab[gpu]'") from None

    strategy = FairscaleFSDPStrategy(cfg, process_group_backend="nccl")
    return StrategySetup(strategy, parallelize=strategy.shard)
