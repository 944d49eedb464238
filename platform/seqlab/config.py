"""Typed config schemas of the core. Plugin configs subclass the bases defined here.

Hydra composes YAML from `experiments/` over these dataclasses; the CLI converts the result to dataclass
instances once (`OmegaConf.to_object`), which runs every `__post_init__` check, and each component receives its
own config object from then on.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from seqlab.config_fault import DivergenceConfig, PreemptionConfig
from seqlab.errors import require

# What Lightning's Trainer(precision=...) accepts (its strings; numbers arrive as strings here).
PRECISIONS = ("32-true", "32", "16-mixed", "16-true", "16", "bf16-mixed", "bf16-true", "bf16", "64-true", "64",
              "transformer-engine", "transformer-engine-float16")


@dataclass
class PluginConfig:
    """Base of every plugin config; `name` selects the plugin in its registry."""

    name: str = ""


@dataclass
class ObjectiveConfig(PluginConfig):
    pass


@dataclass
class InitFromConfig:
    """A warm start (`architecture.init_from`): after the fresh initialisation, the weights under `modules` are
    read from `path` (AlexaTM 20B: the encoder from a pre-trained one). See seqlab/warm_start.py."""

    # A single-file checkpoint written by `seqlab train`, or a Hugging Face model folder (config.json and
    # model.safetensors) of the layout this architecture exports to. None: no warm start.
    path: Optional[str] = None
    # State-dict prefixes: a module (encoder, decoder.blocks.0) or one tensor; "" is the whole model.
    modules: List[str] = field(default_factory=lambda: ["encoder"])
    # Every tensor under `modules` must be in `path` (and, from a checkpoint, nothing else under them);
    # false: read what is there and keep the fresh initialisation of the rest. Shapes must match either way.
    strict: bool = True

    def __post_init__(self) -> None:
        require(self.path is None or (isinstance(self.path, str) and self.path.strip() != ""),
                "architecture.init_from.path", self.path,
                "must name a checkpoint file written by `seqlab train` or a Hugging Face model folder (null: none)")
        require(len(self.modules) >= 1, "architecture.init_from.modules", list(self.modules),
                'must list at least one module prefix (e.g. [encoder]; "" is the whole model)')
        for i, prefix in enumerate(self.modules):
            require(isinstance(prefix, str) and (prefix == "" or valid_prefix(prefix)),
                    f"architecture.init_from.modules[{i}]", prefix,
                    'must be a dotted module name such as encoder or decoder.blocks.0, or "" for the whole model')
        require(len(set(self.modules)) == len(self.modules), "architecture.init_from.modules", list(self.modules),
                "lists a prefix twice")


def valid_prefix(prefix: str) -> bool:
    """A dotted state-dict prefix: encoder, decoder.blocks.0, head.weight (no empty parts)."""
    return all(part and not part.isspace() for part in prefix.split("."))


@dataclass
class ArchitectureConfig(PluginConfig):
    # Weights to read into the freshly initialised model (a warm start); path null: the fresh initialisation only.
    # A config node rather than Optional: Hydra cannot merge an override like init_from={path: ...} into a null.
    init_from: InitFromConfig = field(default_factory=InitFromConfig)


@dataclass
class StrategyConfig(PluginConfig):
    pass


@dataclass
class EvalTaskConfig(PluginConfig):
    """Base of every eval-task plugin config: the protocol knobs every task shares."""

    label: Optional[str] = None  # the task's name in scores and reports; None: the preset's or plugin's default
    path: str = MISSING  # the task's data: absolute, or relative to eval.data_root
    shots: int = 1  # solved examples before the query (the paper: 1-shot)
    mode: str = "clm"  # clm: [CLM] + prompt -> continuation; denoising: prompt -> prompt + continuation
    separator: str = "; "  # between shots and the query (newlines are not in the vocabulary)
    seed: int = 0  # which shots each example gets
    limit: Optional[int] = None  # evaluate a fixed random subset of this many examples (by seed); None: all

    def __post_init__(self) -> None:
        require(self.shots >= 0, "task.shots", self.shots, "must be >= 0")
        require(self.mode in ("clm", "denoising"), "task.mode", self.mode, "must be clm or denoising")
        require(self.seed >= 0, "task.seed", self.seed, "must be >= 0")
        require(self.limit is None or self.limit >= 1, "task.limit", self.limit, "must be >= 1 or null")


@dataclass
class DataConfig(PluginConfig):
    """Loader settings shared by every data source plugin (a source adds where its text comes from)."""

    seq_len: int = 128  # model sequence length; objectives ask the sampler for the raw length they need
    batch_size: int = 16  # sequences per device per step
    alpha: float = 0.5  # language sampling exponent: q_i proportional to p_i ** alpha (XLM-R, AlexaTM)
    weights: Dict[str, float] = field(default_factory=dict)  # per-source multipliers of token counts
    languages: Optional[List[str]] = None  # keep only these languages; None keeps all
    val_fraction: float = 0.02  # documents of each shard held out for validation
    val_batches: int = 4
    num_workers: int = 0

    def __post_init__(self) -> None:
        require(self.seq_len >= 8, "data.seq_len", self.seq_len, "must be >= 8")
        require(self.batch_size >= 1, "data.batch_size", self.batch_size, "must be >= 1")
        require(0.0 < self.alpha <= 1.0, "data.alpha", self.alpha, "must be in (0, 1]")
        for source, weight in self.weights.items():
            require(weight >= 0.0, f"data.weights.{source}", weight, "must be >= 0")
        require(0.0 <= self.val_fraction < 0.5, "data.val_fraction", self.val_fraction, "must be in [0, 0.5)")
        require(self.val_batches >= 0, "data.val_batches", self.val_batches, "must be >= 0")
        require(self.num_workers >= 0, "data.num_workers", self.num_workers, "must be >= 0")


@dataclass
class FreezeConfig:
    """`trainer.freeze` entry: the parameters under `module` get no update during the first `until_step`
    optimizer steps (AlexaTM 20B: the warm-started encoder for the first ~100k). See seqlab/freeze.py."""

    module: str = MISSING  # a state-dict prefix: encoder, decoder.blocks.0, head.weight
    until_step: int = MISSING  # frozen while global_step < until_step: updated from step until_step + 1 on


@dataclass
class TrainerConfig:
    max_steps: int = 200
    val_check_interval: int = 50  # optimizer steps between validations
    log_every_n_steps: int = 10
    precision: str = "32-true"
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    gradient_clip_val: Optional[float] = 1.0
    accumulate_grad_batches: int = 1
    logger: str = "csv"  # csv | tensorboard
    checkpoint_every_n_steps: int = 100
    keep_last_checkpoints: int = 2
    progress_bar: bool = True
    deterministic: bool = False
    divergence: DivergenceConfig = field(default_factory=DivergenceConfig)
    preemption: PreemptionConfig = field(default_factory=PreemptionConfig)  # SIGTERM: checkpoint, then exit
    freeze: List[FreezeConfig] = field(default_factory=list)  # parameters held fixed for the first steps
    compile: bool = False  # torch.compile each block of model.blocks (before sharding); see SeqLabModule
    compile_mode: Optional[str] = None  # torch.compile's mode (max-autotune, reduce-overhead, ...); null: default
    # Peak FLOP/s of one device for train/mfu; null: the datasheet peak of a known GPU at trainer.precision
    # (seqlab/throughput.py), and no train/mfu on other devices (CPUs have no fixed peak).
    peak_flops: Optional[float] = None

    def __post_init__(self) -> None:
        self.freeze = [FreezeConfig(**entry) if isinstance(entry, dict) else entry for entry in self.freeze]
        for i, entry in enumerate(self.freeze):
            require(isinstance(entry.module, str) and valid_prefix(entry.module), f"trainer.freeze[{i}].module",
                    entry.module, "must be a dotted module name such as encoder or decoder.blocks.0")
            require(isinstance(entry.until_step, int) and entry.until_step >= 1, f"trainer.freeze[{i}].until_step",
                    entry.until_step, "must be >= 1: the parameters stay frozen while global_step < until_step")
        require(self.max_steps >= 1, "trainer.max_steps", self.max_steps, "must be >= 1")
        require(self.precision in PRECISIONS, "trainer.precision", self.precision,
                f"must be one of {', '.join(PRECISIONS)}")
        require(self.val_check_interval >= 1, "trainer.val_check_interval", self.val_check_interval, "must be >= 1")
        require(self.log_every_n_steps >= 1, "trainer.log_every_n_steps", self.log_every_n_steps, "must be >= 1")
        require(self.logger in ("csv", "tensorboard"), "trainer.logger", self.logger, "must be csv or tensorboard")
        require(self.num_nodes >= 1, "trainer.num_nodes", self.num_nodes, "must be >= 1")
        require(_valid_devices(self.devices), "trainer.devices", self.devices,
                "must be a count >= 1, -1 (all), 'auto', or device indices such as [0, 1] or '0,1'")
        require(self.accumulate_grad_batches >= 1, "trainer.accumulate_grad_batches",
                self.accumulate_grad_batches, "must be >= 1")
        require(self.gradient_clip_val is None or 0 < self.gradient_clip_val < math.inf, "trainer.gradient_clip_val",
                self.gradient_clip_val, "must be a finite number > 0, or null")
        require(self.checkpoint_every_n_steps >= 1, "trainer.checkpoint_every_n_steps",
                self.checkpoint_every_n_steps, "must be >= 1")
        require(self.keep_last_checkpoints >= 1, "trainer.keep_last_checkpoints", self.keep_last_checkpoints,
                "must be >= 1")
        if self.compile_mode is not None:
            # A mode without compile would be ignored silently: say so instead.
            require(self.compile, "trainer.compile_mode", self.compile_mode, "needs trainer.compile=true")
            from torch._inductor import list_mode_options  # torch's own list, imported only when a mode is set

            modes = list(list_mode_options())
            require(self.compile_mode in modes, "trainer.compile_mode", self.compile_mode,
                    f"must be one of {', '.join(modes)} or null")
        require(self.peak_flops is None or 0 < self.peak_flops < math.inf, "trainer.peak_flops", self.peak_flops,
                "must be > 0 (FLOP/s of one device) or null")
        # A skipped step leaves no gradients, and fp16's gradient scaler refuses a step without any.
        require(self.divergence.action != "skip" or self.precision not in ("16", "16-mixed"),
                "trainer.divergence.action", self.divergence.action,
                f"skip does not work with trainer.precision={self.precision}; use stop, or bf16-mixed")


def _valid_devices(devices: Any) -> bool:
    """What Lightning's Trainer(devices=...) accepts, checked here so a typo fails at configuration."""
    if isinstance(devices, bool):
        return False
    if isinstance(devices, int):
        return devices >= 1 or devices == -1
    if isinstance(devices, str):
        return devices == "auto" or re.fullmatch(r"-1|\d+|\d+(,\d+)*,?", devices.replace(" ", "")) is not None
    return isinstance(devices, (list, tuple)) and len(devices) > 0 and all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices)


@dataclass
class OptimConfig:
    """AdamW with linear warmup then linear decay to `min_lr` (the paper: 1e-4 -> 5e-6, weight decay 0.1)."""

    lr: float = 1e-4
    min_lr: float = 5e-6
    warmup_steps: int = 1000
    weight_decay: float = 0.1  # not applied to biases and norm weights
    betas: List[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-8

    def __post_init__(self) -> None:
        # inf passes a plain `> 0` and NaN fails every comparison: an infinite rate would diverge at step 2.
        require(0 < self.lr < math.inf, "optim.lr", self.lr, "must be a finite number > 0")
        require(0 <= self.min_lr <= self.lr, "optim.min_lr", self.min_lr, f"must be in [0, optim.lr={self.lr}]")
        require(self.warmup_steps >= 0, "optim.warmup_steps", self.warmup_steps, "must be >= 0")
        require(0 <= self.weight_decay < math.inf, "optim.weight_decay", self.weight_decay,
                "must be a finite number >= 0")
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "optim.betas", list(self.betas),
                "must be two numbers in [0, 1)")
        require(0 < self.eps < math.inf, "optim.eps", self.eps, "must be a finite number > 0")


@dataclass
class TokenizerConfig:
    path: str = MISSING  # a SentencePiece .model made by `seqlab tokenizer train`


@dataclass
class EvalConfig:
    """Which eval tasks run, on what data; inside training every `every_n_steps`, and in `seqlab eval`/`compare`."""

    # Each entry: a task preset name (`seqlab plugins` lists them), or a mapping with either `preset: NAME` or
    # `name: PLUGIN`, plus fields to override (e.g. {preset: flores_de_en, shots: 0}).
    tasks: List[Any] = field(default_factory=list)
    data_root: Optional[str] = None  # where relative task paths point: a folder with flores200/, sib200/, xcopa/
    every_n_steps: Optional[int] = None  # during training; None: only at the end of `seqlab compare`
    limit: Optional[int] = None  # at most this many examples per task, a fixed random subset (task's own may be lower)
    batch_size: int = 16
    progress_bar: bool = True

    def __post_init__(self) -> None:
        require(self.every_n_steps is None or self.every_n_steps >= 1, "eval.every_n_steps", self.every_n_steps,
                "must be >= 1 or null")
        require(self.limit is None or self.limit >= 1, "eval.limit", self.limit, "must be >= 1 or null")
        require(self.batch_size >= 1, "eval.batch_size", self.batch_size, "must be >= 1")


@dataclass
class RunConfig:
    """The whole run. Plugin nodes are typed by the schema their registry stored for the chosen name."""

    objective: Any = MISSING
    architecture: Any = MISSING
    strategy: Any = MISSING
    data: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    plugins_dir: Optional[str] = None  # a folder of extra plugin modules, imported before composition
    cache_dir: str = "outputs/.cache"  # prepared corpora, keyed by their inputs and tokenizer
    # A checkpoint path to continue from, or auto: the latest valid checkpoint in this run's folder, if any.
    resume: Optional[str] = None
    # Config keys (or prefixes: optim) a resumed run may change from its checkpoint's, e.g. [optim.lr]; the
    # changes are recorded in RUN_DIR/resumes.jsonl. See seqlab/identity.py for the keys that are always free.
    resume_allow: List[str] = field(default_factory=list)
    experiment: Optional[str] = None

    def __post_init__(self) -> None:
        require(self.seed >= 0, "seed", self.seed, "must be >= 0")
        for group, base in (("objective", ObjectiveConfig), ("architecture", ArchitectureConfig),
                            ("strategy", StrategyConfig), ("data", DataConfig)):
            value = getattr(self, group)
            require(isinstance(value, base), group, type(value).__name__,
                    f"must be a {base.__name__}; choose one with {group}=NAME (see `seqlab plugins`)")
        from seqlab.identity import check_allow_list  # it flattens configs: imported here to avoid a cycle

        for i, entry in enumerate(self.resume_allow):
            require(check_allow_list(self, entry), f"resume_allow[{i}]", entry, "names no field of the config")


def register_core_schemas() -> None:
    """Store the core schemas so YAML in experiments/ can extend them (`defaults: [base_trainer, _self_]`)."""
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(group="trainer", name="base_trainer", node=TrainerConfig)
