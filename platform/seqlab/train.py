"""`seqlab train`: build every component from its config and fit."""
from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import pytorch_lightning as pl
import yaml
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only, rank_zero_warn

from seqlab.budget import FlopCounter
from seqlab.callbacks import standard_callbacks
from seqlab.config import RunConfig
from seqlab.data.loader import StreamSpec, open_views
from seqlab.data.store import PreparedCorpus, check_tokenizer
from seqlab.datamodule import SeqLabDataModule
from seqlab.errors import ConfigError, DataError, SeqlabError, WriteError
from seqlab.evaluation.callback import PeriodicEval
from seqlab.fault import (
    CHECKPOINTS, AtomicCheckpointIO, Checkpoint, latest_checkpoint, resolve_resume, write_text_atomically,
)
from seqlab.identity import RESUMES, data_identity, describe_changes, review_resume, run_identity
from seqlab.interfaces import FeatureConverter, Features, Objective, Rows, StrategySetup
from seqlab.metrics_log import ResumableCSVLogger
from seqlab.module import SeqLabModule
from seqlab.preemption import Preempted, requeue
from seqlab.preemption import install as install_preemption
from seqlab.registry import ARCHITECTURES, DATA_SOURCES, OBJECTIVES, STRATEGIES
from seqlab.tokenizer import Tokenizer

RESOLVED_CONFIG = "config.resolved.yaml"
# What gloo and NCCL say in a collective whose peer process is gone.
PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "NCCL communicator was aborted")


@dataclass
class Components:
    """A run's parts, built from its config; tests build them without fitting."""

    tokenizer: Tokenizer
    module: SeqLabModule
    datamodule: SeqLabDataModule
    strategy: StrategySetup
    identity: dict  # what makes a checkpoint this run's (seqlab/identity.py)


def build_components(run: RunConfig) -> Components:
    tokenizer = Tokenizer(run.tokenizer.path)
    objective = OBJECTIVES.build(run.objective, tokenizer=tokenizer, seq_len=run.data.seq_len)
    architecture = ARCHITECTURES.get(run.architecture.name).factory
    converter = architecture.feature_converter(run.architecture, pad_id=tokenizer.pad_id)
    probe_lengths(objective, converter, tokenizer, run.data.seq_len)
    prepared = DATA_SOURCES.build(run.data).prepared_dir(tokenizer, Path(run.cache_dir))
    corpus = PreparedCorpus.open(prepared)
    check_tokenizer(corpus, tokenizer)
    identity = run_identity(run.architecture, tokenizer.vocab_size, tokenizer.sha256(), objective.names,
                            data_identity(corpus.shards, run.data.languages, run.data.val_fraction))
    spec = StreamSpec(prepared_dir=prepared, data=run.data, separator_id=tokenizer.token_id("[DOC]"), seed=run.seed)
    open_views(spec, "train")  # data.languages that match nothing fail here, before any trainer or rank starts
    strategy = STRATEGIES.build(run.strategy)
    module = SeqLabModule(run, vocab_size=tokenizer.vocab_size, objective_names=objective.names,
                          setup=strategy)
    module.identity = identity
    return Components(tokenizer, module, SeqLabDataModule(spec, objective, converter), strategy, identity)


def probe_features(objective: Objective, tokenizer: Tokenizer, rows: int, seed: int = 0) -> Features:
    """The objective's features for `rows` planned rows of ordinary text (lengths do not depend on which token):
    the shapes a run will train on, without reading the corpus."""
    rng = np.random.default_rng(seed)
    plan = objective.plan(rows, rng)
    text_id = int(tokenizer.special_ids.max()) + 1  # special tokens come first in the vocabulary
    tokens = np.full((rows, int(plan.length.max())), text_id, dtype=np.int64)
    return objective(Rows(tokens, plan.length.copy(), plan), rng)


def probe_lengths(objective: Objective, converter: FeatureConverter, tokenizer: Tokenizer, seq_len: int,
                  rows: int = 512) -> None:
    """Run the objective and converter once on the longest rows the objective can plan, so that a model too
    short for them (e.g. a decoder-only position table under a denoising objective, which reads inputs plus
    targets) fails now with the converter's message, not at the first batch of a long run."""
    try:
        converter(probe_features(objective, tokenizer, rows))
    except DataError as err:
        raise ConfigError(f"data.seq_len={seq_len}: the objective's sequences do not fit the architecture: "
                          f"{err}") from None


def build_trainer(run: RunConfig, run_dir: Path, strategy: StrategySetup,
                  extra_callbacks: Sequence[pl.Callback] = (), resume_step: int | None = None) -> pl.Trainer:
    t = run.trainer
    if t.logger == "tensorboard":
        logger = TensorBoardLogger(run_dir, name="tensorboard", version="")
    else:
        logger = ResumableCSVLogger(run_dir, resume_step)
    trainer = pl.Trainer(
        default_root_dir=run_dir,
        max_steps=t.max_steps,
        val_check_interval=t.val_check_interval,
        check_val_every_n_epoch=None,  # the training stream is endless: validate by steps
        log_every_n_steps=t.log_every_n_steps,
        precision=t.precision,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=strategy.strategy,
        gradient_clip_val=t.gradient_clip_val,
        accumulate_grad_batches=t.accumulate_grad_batches,
        logger=logger,
        callbacks=[*standard_callbacks(t, run_dir), *extra_callbacks],
        enable_progress_bar=t.progress_bar,
        enable_model_summary=t.progress_bar,
        deterministic=t.deterministic,
        use_distributed_sampler=False,  # each rank draws its own share of the stream (see the sampler)
        plugins=[AtomicCheckpointIO()],
    )
    install_preemption(trainer, t.preemption)
    return trainer


@rank_zero_only
def save_resolved_config(run: RunConfig, run_dir: Path) -> Path:
    return write_text_atomically(run_dir / RESOLVED_CONFIG,
                                 yaml.safe_dump(dataclasses.asdict(run), sort_keys=False, allow_unicode=True))


@rank_zero_only
def record_resume(run_dir: Path, resume: Checkpoint, record: dict) -> None:
    """Say what a resumed run changed, and append it to RUN_DIR/resumes.jsonl."""
    if record["allowed"]:
        rank_zero_warn(f"resuming from {resume.path} with changes allowed by resume_allow: "
                       + describe_changes({k: tuple(v) for k, v in record["allowed"].items()}))
    entry = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "checkpoint": str(resume.path),
             "step": resume.step, **record}
    write_text_atomically(run_dir / RESUMES, json.dumps(entry, default=str) + "\n", append=True)


def train(run: RunConfig, run_dir: Path) -> pl.Trainer | None:
    """Fit one run into `run_dir` (config, checkpoints, metrics); returns the finished trainer, or None when
    `resume` found the run already finished (nothing is trained or written then).

    Raises Preempted (after the checkpoint is written) when a preemption signal stopped the run, and WriteError
    naming the last intact checkpoint when a file could not be written."""
    # Lightning's own pytree helper trips a torch deprecation on every batch transfer; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    pl.seed_everything(run.seed, workers=True, verbose=False)
    parts = build_components(run)
    resume = resolve_resume(run.resume, run_dir, parts.identity)
    if resume is not None and resume.step >= run.trainer.max_steps:
        if rank_zero_only.rank == 0:
            print(f"run already finished: {resume.path} is at step {resume.step}, and trainer.max_steps="
                  f"{run.trainer.max_steps}; nothing to train. Raise trainer.max_steps to train on.")
        return None
    callbacks: list[pl.Callback] = []
    if hasattr(ARCHITECTURES.get(run.architecture.name).factory, "training_flops"):
        callbacks.append(FlopCounter(run.architecture, parts.tokenizer.vocab_size))
    if run.eval.every_n_steps is not None and run.eval.tasks:
        callbacks.append(PeriodicEval(run.eval, parts.tokenizer, run.architecture, run_dir))
    trainer = build_trainer(run, run_dir, parts.strategy, callbacks, resume_step=resume.step if resume else None)
    if resume is not None:
        record = review_resume(resume.config, resume.world_size, run, trainer.world_size, f"checkpoint {resume.path}")
        record_resume(run_dir, resume, record)
    save_resolved_config(run, run_dir)
    try:
        # weights_only: a checkpoint is data; loading it must not run code from the file.
        trainer.fit(parts.module, datamodule=parts.datamodule, ckpt_path=str(resume.path) if resume else None,
                    weights_only=True)
    except Preempted as stop:
        requeued = requeue(run.trainer.preemption) if trainer.is_global_zero else None
        raise Preempted(f"{stop}" + (f"; {requeued}" if requeued else "") + ". Run the same command with "
                        "resume=auto to continue", stop.exit_code) from None
    except RuntimeError as err:
        # A rank whose peer stopped (its own error, printed by it) fails in the next collective: say so in one
        # line rather than with a traceback from inside the communication library.
        sign = next((sign for sign in PEER_LOST if sign in str(err)), None)
        if trainer.world_size > 1 and sign is not None:
            raise SeqlabError(f"stopped: another rank ended ({sign} in a collective); its message says why") \
                from None
        raise
    except WriteError as err:
        intact = latest_checkpoint(run_dir / CHECKPOINTS, parts.identity) if (run_dir / CHECKPOINTS).is_dir() \
            else None
        failure = WriteError(err.path, f"{err.cause}. Every file written before is intact; the last intact "
                             f"checkpoint is {intact.path} (step {intact.step})" if intact else f"{err.cause}. No "
                             "checkpoint of this run was written yet")
        failure.agreed = err.agreed
        raise failure from None
    if trainer.is_global_zero:
        print(summary(trainer, run_dir))
    return trainer


def summary(trainer: pl.Trainer, run_dir: Path) -> str:
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/loss", "val/loss"))}
    checkpoint = trainer.checkpoint_callback
    log_dir = Path(trainer.logger.log_dir)
    metrics_path = log_dir / "metrics.csv" if isinstance(trainer.logger, CSVLogger) else log_dir
    lines = [f"run finished after {trainer.global_step} steps: {run_dir}",
             f"  config:      {run_dir / RESOLVED_CONFIG}",
             f"  checkpoints: {Path(checkpoint.dirpath) if checkpoint else '-'} (last: {checkpoint.last_model_path})",
             f"  metrics:     {metrics_path}"]
    width = max(map(len, metrics), default=0)
    lines += [f"  {name:{width}}  {value:.4f}" for name, value in sorted(metrics.items())]
    return "\n".join(lines)
