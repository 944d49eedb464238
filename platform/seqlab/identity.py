"""Which checkpoints a run may continue from: the checkpoint's identity, and the config changes since.

A checkpoint's identity is what its weights and state only make sense with: the architecture, the vocabulary
(the tokenizer file's checksum), the objectives' names (the per-objective sums and guard means are indexed by
them) and the prepared data (the sampler's position counts into its shards). A checkpoint of another identity
is another run's: `resume=auto` skips it and `resume=PATH` refuses it, naming the fields that differ.

The rest of the config may differ only where the change is named in `resume_allow` (e.g. a new optim.lr), or
is one of FREE_KEYS: how long to train, on how many devices, how often to log, save and evaluate, where files
live. Every change a resumed run makes is printed and appended to RUN_DIR/resumes.jsonl.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Mapping, Sequence

from seqlab.errors import ConfigError

IDENTITY_KEY = "seqlab_identity"  # the checkpoint entry this module writes (SeqLabModule.on_save_checkpoint)
RESUMES = "resumes.jsonl"  # RUN_DIR's record of every resume: checkpoint, step, config changes
# Dotted prefixes of the config keys a resumed run may change freely. data.batch_size and the device counts
# are free as long as the global batch (their product) stays the same: see `global_batch_change`.
FREE_KEYS = (
    "trainer.max_steps", "trainer.devices", "trainer.num_nodes", "trainer.accelerator", "trainer.progress_bar",
    "trainer.log_every_n_steps", "trainer.val_check_interval", "trainer.checkpoint_every_n_steps",
    "trainer.keep_last_checkpoints", "trainer.preemption", "trainer.compile", "trainer.compile_mode",
    "trainer.peak_flops", "trainer.logger", "trainer.divergence", "data.num_workers", "data.val_batches",
    "data.batch_size", "eval", "strategy", "resume", "resume_allow", "cache_dir", "plugins_dir", "experiment",
    "tokenizer.path",
    # Part of the identity, or ignored on resume (a warm start's weights are replaced by the checkpoint's).
    "architecture",
)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"optim.lr": 0.002, "trainer.freeze": [...], ...}: every leaf of a config (dataclasses, mappings);
    lists stay whole."""
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        tree = dataclasses.asdict(tree)
    if not isinstance(tree, Mapping):
        return {prefix: tree}
    if not tree and prefix:
        return {prefix: {}}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def covers(prefix: str, key: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def check_allow_list(config: Any, entry: Any) -> bool:
    """Whether a `resume_allow` entry names a field of `config`, or a group of fields (a prefix)."""
    return isinstance(entry, str) and any(covers(entry, key) for key in flatten(config))


def data_identity(shards: Sequence[Any], languages: Sequence[str] | None, val_fraction: float) -> dict[str, Any]:
    """The data a sampler position refers to: the shards kept (by language) and how they are split."""
    kept = [(s.source, s.lang, s.n_docs, s.n_tokens) for s in shards if languages is None or s.lang in languages]
    digest = hashlib.sha256(json.dumps([kept, val_fraction]).encode()).hexdigest()[:16]
    return {"fingerprint": digest, "shards": len(kept), "documents": sum(k[2] for k in kept),
            "tokens": sum(k[3] for k in kept)}


def run_identity(architecture: Any, vocab_size: int, tokenizer_sha256: str, objective_names: Sequence[str],
                 data: Mapping[str, Any]) -> dict[str, Any]:
    arch = dataclasses.asdict(architecture)
    arch.pop("init_from", None)
    return {"architecture": arch, "vocab_size": int(vocab_size), "tokenizer_sha256": tokenizer_sha256,
            "objectives": list(objective_names), "data": dict(data)}


def saved_identity(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's identity; for one written before identities were saved, what its hyperparameters tell."""
    if isinstance(checkpoint.get(IDENTITY_KEY), Mapping):
        return dict(checkpoint[IDENTITY_KEY])
    hparams = checkpoint.get("hyper_parameters") or {}
    out: dict[str, Any] = {}
    if isinstance(hparams.get("config"), Mapping) and isinstance(hparams["config"].get("architecture"), Mapping):
        out["architecture"] = {k: v for k, v in hparams["config"]["architecture"].items() if k != "init_from"}
    if "vocab_size" in hparams:
        out["vocab_size"] = hparams["vocab_size"]
    if "objective_names" in hparams:
        out["objectives"] = list(hparams["objective_names"])
    return out


def identity_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """"field: X in the checkpoint, Y in this run" for each identity field that differs; fields the checkpoint
    does not record are not compared."""
    old, new = flatten(dict(saved)), flatten(dict(current))
    return [f"{key}: {_short(old[key])} in the checkpoint, {_short(new.get(key))} in this run"
            for key in sorted(old) if key in new and old[key] != new[key]]


def config_changes(saved: Mapping[str, Any], current: Any) -> dict[str, tuple[Any, Any]]:
    """{key: (checkpoint's value, this run's)} for every config leaf that differs."""
    old, new = flatten(dict(saved)), flatten(current)
    return {key: (old.get(key), new.get(key)) for key in sorted(old.keys() | new.keys())
            if old.get(key) != new.get(key)}


def split_changes(changes: Mapping[str, tuple[Any, Any]], allow: Sequence[str]) -> tuple[dict, dict, dict]:
    """(free, allowed, refused) changes: free by FREE_KEYS, allowed by `resume_allow`, refused otherwise."""
    free, allowed, refused = {}, {}, {}
    for key, change in changes.items():
        if any(covers(prefix, key) for prefix in FREE_KEYS):
            free[key] = change
        elif any(covers(prefix, key) for prefix in allow):
            allowed[key] = change
        else:
            refused[key] = change
    return free, allowed, refused


def describe_changes(changes: Mapping[str, tuple[Any, Any]]) -> str:
    return "; ".join(f"{key}: {_short(old)} -> {_short(new)}" for key, (old, new) in changes.items())


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def review_resume(checkpoint_config: Mapping[str, Any] | None, checkpoint_world: int | None, run: Any,
                  world_size: int, where: str) -> dict[str, Any]:
    """Check the config changes between a checkpoint (`where` names it) and the run resuming from it; ConfigError
    naming each refused change. Returns the record of the resume: {"free": ..., "allowed": ...}."""
    allow = list(run.resume_allow)
    changes = config_changes(checkpoint_config or {}, run) if checkpoint_config is not None else {}
    free, allowed, refused = split_changes(changes, allow)
    if checkpoint_world is not None and checkpoint_config is not None:
        # Every rank replays the same global draws, and the data stream continues exactly when each sampler
        # step draws the same rows: ranks x data.batch_size must stay the same.
        before = checkpoint_world * int(checkpoint_config["data"]["batch_size"])
        after = world_size * run.data.batch_size
        if before != after and not any(covers(prefix, "data.batch_size") for prefix in allow):
            refused["global batch (ranks x data.batch_size)"] = (
                f"{before} = {checkpoint_world} x {before // checkpoint_world}",
                f"{after} = {world_size} x {run.data.batch_size}")
    if refused:
        keys = ",".join(key for key in refused if not key.startswith("global batch")) or "data.batch_size"
        raise ConfigError(f"{where} was written with another config: {describe_changes(refused)}. To continue "
                          f"with these changes, add resume_allow=[{keys}]; to start afresh, use another "
                          "hydra.run.dir")
    return {"free": {k: list(v) for k, v in free.items()}, "allowed": {k: list(v) for k, v in allowed.items()}}
