"""The eval-task contract, prompt rendering, and resolving `eval.tasks` entries into task configs.

A task plugin turns its data into `Example`s whose prompts are complete text (shots included); the harness
does everything model-specific (tokenising, mode tokens, truncation, batching). Two kinds of example:
generation (a reference to compare with) and ranking (candidates, one of them right). A ranking example may
give each candidate its own prompt (`contexts`): Winograd-style partial scoring, where the options differ in the
context and the shared continuation is what is scored.
"""
from __future__ import annotations

import dataclasses
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from seqlab.config import EvalTaskConfig
from seqlab.errors import ConfigError, DataError
from seqlab.evaluation.records import label_key
from seqlab.registry import EVAL_TASKS


LABEL = re.compile(r"[\w.-]+")  # labels name prediction files


@dataclass
class Example:
    id: str
    prompt: str  # everything the model reads, shots included, without the mode token
    reference: str | None = None  # generation: what the prediction is scored against
    candidates: tuple[str, ...] = ()  # ranking: the continuations to score
    label: int | None = None  # ranking: index of the right candidate
    contexts: tuple[str, ...] = ()  # ranking: candidate i is scored after contexts[i] (then prompt = the gold's)
    fields: dict[str, Any] = field(default_factory=dict)  # the raw item, written next to the prediction


class EvalTask(Protocol):
    """Built by `EVAL_TASKS.build(cfg)`. Ranking tasks need only `examples`: the harness scores candidates and
    computes accuracy. Generation tasks also give `max_new_tokens`, `stop` and `example_stats`. The harness adds
    the likelihood metrics of the gold answer (per byte, and its gain from the shots) to every task."""

    cfg: EvalTaskConfig
    label: str  # default name in scores (a preset's name wins)

    def examples(self, data_root: Path | None) -> list[Example]:
        """The test examples, prompts rendered with this config's templates and shots."""


class GenerationTask(EvalTask, Protocol):
    max_new_tokens: int  # the most tokens a prediction may have
    stop: Sequence[str]  # a prediction ends before the first of these strings

    def example_stats(self, examples: Sequence[Example],
                      predictions: Sequence[str]) -> dict[str, tuple[str, list[list[float]]]]:
        """metric -> (aggregate, one row of sufficient statistics per example): how the corpus metric of the
        predictions, one per reference, is computed from the rows' sum (see seqlab.evaluation.aggregates).
        A task may also give `prediction_fields(examples, predictions)`: one dict per prediction (e.g. the answer
        it extracted), added to the prediction's record."""


def render(template: str, values: Mapping[str, Any], key: str) -> str:
    """`template` with {field} filled from values; a field the data lacks names the config key and the fields."""
    try:
        return template.format_map(values)
    except KeyError as err:
        raise ConfigError(f"{key}={template!r}: no field {err} in the data; available: "
                          f"{', '.join('{' + k + '}' for k in sorted(values))}") from None
    except (ValueError, IndexError) as err:
        raise ConfigError(f"{key}={template!r}: not a valid template ({err})") from None


def template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def few_shot_prompt(shot_template: str, query_template: str, separator: str, shots: Sequence[Mapping[str, Any]],
                    query: Mapping[str, Any]) -> str:
    """Solved shots then the query, joined by the separator: the paper's
    `Sentence: {src}; Translation in English: {tgt}; Sentence: {test_src}; Translation in English:`."""
    parts = [render(shot_template, shot, "task.shot_template") for shot in shots]
    parts.append(render(query_template, query, "task.query_template"))
    return separator.join(parts)


def shot_prompts(cfg: Any, test: Sequence[Mapping[str, Any]], pool: Sequence[Mapping[str, Any]],
                 same_pool: bool) -> list[str]:
    """The k-shot prompt of every test item, its shots drawn from `pool`; when the pool is the test set itself
    (`same_pool`), never the item itself. cfg: an EvalTaskConfig with shot_template and query_template."""
    return [few_shot_prompt(cfg.shot_template, cfg.query_template, cfg.separator,
                            [pool[j] for j in pick_shots(len(pool), cfg.shots, cfg.seed, i,
                                                         exclude=i if same_pool else None)], item)
            for i, item in enumerate(test)]


def pick_shots(pool_size: int, shots: int, seed: int, item: int, exclude: int | None = None) -> list[int]:
    """Indices of `shots` distinct pool items for test item `item`: random, but fixed by (seed, item), so every
    model sees the same prompts and adding examples does not change earlier ones."""
    if shots == 0:
        return []
    candidates = np.arange(pool_size)
    if exclude is not None:
        candidates = candidates[candidates != exclude]
    if len(candidates) < shots:
        raise DataError(f"task.shots={shots}: only {len(candidates)} examples to draw shots from")
    rng = np.random.default_rng([seed, item])
    return rng.choice(candidates, size=shots, replace=False).tolist()


def data_path(path: str, data_root: Path | None, layout: str) -> Path:
    """A task's data path, relative to eval.data_root unless absolute; missing data names the path and layout."""
    resolved = Path(path).expanduser()
    if not resolved.is_absolute():
        if data_root is None:
            raise ConfigError(f"task.path={path!r} is relative and eval.data_root is not set; set eval.data_root "
                              f"(or the SEQLAB_EVAL_DATA environment variable) to the folder holding it")
        resolved = Path(data_root).expanduser() / resolved
    if not resolved.exists():
        raise DataError(f"eval data not found at {resolved}; expected layout: {layout}")
    return resolved


def items_and_shot_pool(cfg: Any, data_root: Path | None, layout: str,
                  read: Callable[[Path], list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
    """(test items of cfg.path, the pool shots come from, whether that pool is the test set itself): the pool is
    cfg.shot_path's items, or with no shot_path the other test items. A 0-shot run reads no shot file."""
    test = read(data_path(cfg.path, data_root, layout))
    if cfg.shot_path is None or not cfg.shots:
        return test, test, True
    return test, read(data_path(cfg.shot_path, data_root, layout)), False


def typed_fields(config: type, fields: dict[str, Any], where: str) -> dict[str, Any]:
    """`fields` converted to the types `config` declares ("0" -> 0, as on the command line); a value that does not
    convert is a ConfigError naming its key, not a TypeError from inside the config's checks. A mapping (label
    verbalisers) replaces the default's, so a two-label set does not inherit a third label."""
    # Mapping keys as label values are written in data ({0: True} on the command line is the label "0").
    fields = {k: {label_key(a): b for a, b in v.items()} if isinstance(v, Mapping) else v for k, v in fields.items()}
    for key, value in fields.items():
        flag = next((a for a, b in value.items() if isinstance(b, bool)), None) if isinstance(value, Mapping) else None
        if flag is not None:  # it would become the words "True"/"False", not what was typed
            raise ConfigError(f"{where}.{key}.{flag}={value[flag]}: a boolean where words are expected (YAML reads "
                              f"yes/no/on/off as booleans); quote them, e.g. {{{flag}: \"yes\"}}")
    try:
        base = OmegaConf.structured(config)
        for key, value in fields.items():
            if isinstance(value, Mapping) and key in base:  # a mapping replaces the default, it does not extend it
                base[key] = {}
        merged = OmegaConf.merge(base, fields)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{where}.{err.full_key}: {err.msg}".splitlines()[0]) from None
    return {k: v for k, v in OmegaConf.to_container(merged).items() if k in fields}


def resolve_tasks(entries: Sequence[Any]) -> dict[str, EvalTaskConfig]:
    """`eval.tasks` entries -> label -> validated task config. An entry is a preset name, or a mapping with
    `preset: NAME` or `name: PLUGIN` plus fields to override."""
    out: dict[str, EvalTaskConfig] = {}
    for i, entry in enumerate(entries):
        if isinstance(entry, (DictConfig, ListConfig)):
            entry = OmegaConf.to_container(entry, resolve=True)
        where = f"eval.tasks[{i}]"
        if isinstance(entry, str):
            cfg, default_label = EVAL_TASKS.preset(entry), entry
        elif isinstance(entry, Mapping):
            fields = dict(entry)
            if "preset" in fields:
                name = fields.pop("preset")
                base, default_label = EVAL_TASKS.preset(name), name
                fields = {**dataclasses.asdict(base), **fields}
            elif "name" in fields:
                default_label = None
            else:
                raise ConfigError(f"{where}={entry!r}: a task mapping needs `preset: NAME` or `name: PLUGIN`")
            plugin = EVAL_TASKS.get(fields["name"])
            unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(plugin.config)})
            if unknown:
                raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)} for eval task {fields['name']!r}")
            cfg = plugin.config(**typed_fields(plugin.config, fields, where))
        else:
            raise ConfigError(f"{where}={entry!r}: must be a preset name or a mapping")
        own_label = EVAL_TASKS.build(cfg).label
        if isinstance(entry, Mapping) and "preset" in entry and own_label != EVAL_TASKS.build(base).label:
            default_label = own_label  # the overrides changed what the task is ({preset: flores_de_en, source: fr})
        label = cfg.label or default_label or own_label
        if not LABEL.fullmatch(label):
            raise ConfigError(f"{where}: label {label!r} names files; use letters, digits, '_', '-' and '.'")
        if label in out:
            raise ConfigError(f"{where}: two tasks are named {label!r}; give one a different `label`")
        out[label] = cfg
    return out
