"""`mixture`: child objectives chosen per sequence with fixed rates (seqio's Mixture; AlexaTM's 80/20)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from seqlab.config import ObjectiveConfig
from seqlab.errors import ConfigError, PluginError, omegaconf_error, require
from seqlab.interfaces import Features, Objective, RowPlan, Rows
from seqlab.registry import OBJECTIVES
from seqlab.tokenizer import PAD_ID, Tokenizer


def objective_config(node: Any, where: str) -> ObjectiveConfig:
    """A child's config node ({name: ..., field: value}) -> its plugin's validated config dataclass."""
    if isinstance(node, ObjectiveConfig):
        return node
    if not isinstance(node, (dict, DictConfig)) or "name" not in node:
        raise ConfigError(f"{where}={node!r}: must be a mapping with a `name` (an objective plugin)")
    try:
        plugin = OBJECTIVES.get(str(node["name"]))
    except PluginError as err:
        raise ConfigError(f"{where}.name={node['name']!r}: {err}") from None
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(plugin.config), node))
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    except OmegaConfBaseException as err:  # a wrong type: OmegaConf names the key within the child only
        raise omegaconf_error(err, prefix=where) from None


@dataclass
class MixtureChild:
    objective: Any = None  # the child's config, e.g. {name: alexatm_denoising, noise_density: 0.15}
    rate: float = 1.0  # relative; rates are normalised over the children
    label: Optional[str] = None  # loss name of the child; default: its plugin name


@dataclass
class MixtureConfig(ObjectiveConfig):
    children: List[MixtureChild] = field(default_factory=list)

    def __post_init__(self) -> None:
        require(len(self.children) > 0, "objective.children", [], "must list at least one child objective")
        rates = [child.rate for child in self.children]
        for i, rate in enumerate(rates):
            require(rate >= 0, f"objective.children[{i}].rate", rate, "must be >= 0")
        require(sum(rates) > 0, "objective.children[*].rate", rates, "must not all be 0")
        for i, child in enumerate(self.children):
            child.objective = objective_config(child.objective, f"objective.children[{i}].objective")
        labels = [child.label or child.objective.name for child in self.children]
        require(len(set(labels)) == len(labels), "objective.children[*].label", labels,
                "must be unique (set `label` on children that share a plugin)")


class Mixture:
    """Per sequence, child k with probability rates[k]; each child noises its own rows, vectorised.

    The choice is part of the step's plan, drawn from the step's seeded generator before any token is read:
    so it is reproducible, identical on every rank and data-loader worker, and resumes with the sampler.
    Child losses are logged under `label` (or `label/child` for a nested mixture).
    """

    def __init__(self, children: Sequence[tuple[str, Objective]], rates: Sequence[float]):
        self.children = [objective for _, objective in children]
        self.rates = np.asarray(rates, dtype=np.float64) / float(np.sum(rates))
        names, offsets = [], []
        for label, objective in children:
            offsets.append(len(names))
            names += [label] if len(objective.names) == 1 else [f"{label}/{n}" for n in objective.names]
        self.names = tuple(names)
        self.offsets = np.asarray(offsets + [len(names)], dtype=np.int64)  # (K+1,) task range of each child
        # Children whose rows all have the same widths (full denoising rows) set the batch's widths; children
        # that pack examples fill their rows to them instead of to seq_len, so no column is mostly padding.
        fixed = [c.widths for c in self.children if getattr(c, "widths", None) is not None]
        if fixed:
            self.widths = (max(w[0] for w in fixed), max(w[1] for w in fixed))
            for child in self.children:
                if getattr(child, "widths", None) is None and hasattr(child, "fit"):
                    child.fit(*self.widths)

    def plan(self, n: int, rng: np.random.Generator) -> RowPlan:
        choice = rng.choice(len(self.children), size=n, p=self.rates)
        plan = RowPlan(np.zeros(n), np.zeros(n), np.zeros(n))
        for k, child in enumerate(self.children):
            rows = np.flatnonzero(choice == k)
            sub = child.plan(len(rows), rng)
            plan.length[rows], plan.document[rows] = sub.length, sub.document
            plan.task[rows] = sub.task + self.offsets[k]
        return plan

    def __call__(self, rows: Rows, rng: np.random.Generator) -> Features:
        child_of = np.searchsorted(self.offsets, rows.plan.task, side="right") - 1  # (B,)
        parts = []
        for k, child in enumerate(self.children):
            selected = np.flatnonzero(child_of == k)
            if len(selected):
                sub = rows.select(selected)
                sub.plan.task -= self.offsets[k]
                features = child(sub, rng)
                features.objective = features.objective + self.offsets[k]
                parts.append((selected, features))
        return merge_features(len(child_of), parts)


def merge_features(batch: int, parts: list[tuple[np.ndarray, Features]], pad_id: int = PAD_ID) -> Features:
    """Scatter the children's Features back into batch order, padding to the widest child. When a child packs
    examples, every row gets segment ids: an unpacked row is one example, segment 1."""
    width_in = max(f.inputs.shape[1] for _, f in parts)
    width_out = max(f.targets.shape[1] for _, f in parts)
    merged = Features(np.full((batch, width_in), pad_id, dtype=np.int64), np.zeros(batch, dtype=np.int64),
                      np.full((batch, width_out), pad_id, dtype=np.int64), np.zeros(batch, dtype=np.int64),
                      np.zeros(batch, dtype=np.int64))
    packed = any(f.packed for _, f in parts)
    if packed:
        merged.input_segments = np.zeros((batch, width_in), dtype=np.int64)
        merged.target_segments = np.zeros((batch, width_out), dtype=np.int64)
    for rows, f in parts:
        merged.inputs[rows, : f.inputs.shape[1]] = f.inputs
        merged.targets[rows, : f.targets.shape[1]] = f.targets
        merged.input_lengths[rows] = f.input_lengths
        merged.target_lengths[rows] = f.target_lengths
        merged.objective[rows] = f.objective
        if packed:
            merged.input_segments[rows, : f.inputs.shape[1]] = segments_of(f, "input")
            merged.target_segments[rows, : f.targets.shape[1]] = segments_of(f, "target")
    return merged


def segments_of(f: Features, side: str) -> np.ndarray:
    """(B, L) segment ids of f's inputs or targets: its own, or 1 on each row's real positions."""
    own = f.input_segments if side == "input" else f.target_segments
    if own is not None:
        return own
    ids, lengths = (f.inputs, f.input_lengths) if side == "input" else (f.targets, f.target_lengths)
    return (np.arange(ids.shape[1])[None, :] < lengths[:, None]).astype(np.int64)


@OBJECTIVES.register("mixture", config=MixtureConfig, example={"children": [
    {"objective": {"name": "alexatm_denoising"}, "rate": 0.8}, {"objective": {"name": "clm"}, "rate": 0.2}]})
def build_mixture(cfg: MixtureConfig, *, tokenizer: Tokenizer, seq_len: int) -> Mixture:
    """Child objectives drawn per sequence at fixed, normalised rates (mixtures of mixtures work)."""
    children = [(child.label or child.objective.name, OBJECTIVES.build(child.objective, tokenizer=tokenizer,
                                                                        seq_len=seq_len))
                for child in cfg.children]
    return Mixture(children, [child.rate for child in cfg.children])
