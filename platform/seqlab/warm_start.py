"""`architecture.init_from`: a warm start. After the fresh initialisation, the weights under some module prefixes
(AlexaTM 20B: the encoder) are read from a seqlab checkpoint or a Hugging Face model folder.

- A checkpoint is a single file written by `seqlab train` (a Lightning checkpoint whose state_dict names are
  the model's, prefixed `model.`); it is memory-mapped, so only the tensors read are paged in.
- A Hugging Face folder (config.json, and model.safetensors or a sharded model.safetensors.index.json) must
  be of the layout this architecture exports to (its `hf_layout` capability: MBart, GPT-2, ...); its weights
  are mapped to our names by the architecture's `state_from_hf` capability, reading only those needed.

Only what is named is loaded: the rest keeps its fresh initialisation. A tied tensor is one tensor, so loading
it under any of its names sets it everywhere it is used. Shapes are checked before anything is written. Under a
sharded strategy (FSDP2 shards the model on the meta device first), each rank writes only its own part of each
parameter.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import nn

from seqlab.config import InitFromConfig
from seqlab.errors import ConfigError, DataError, SeqlabError
from seqlab.freeze import check_prefixes, under
from seqlab.interfaces import capability

FIELD = "architecture.init_from"
SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"


@dataclass
class WarmStart:
    """What a warm start read: the tensors written (one name per tied tensor) and those absent (strict=false)."""

    source: str  # "checkpoint" or "hugging face"
    loaded: list[str]
    missing: list[str]
    values: int  # parameter values written

    def describe(self, cfg: InitFromConfig) -> str:
        text = (f"{FIELD}: read {len(self.loaded)} tensors ({self.values:,} values) under "
                f"{', '.join(repr(m) for m in cfg.modules)} from the {self.source} {cfg.path}")
        if self.missing:
            text += f"; {len(self.missing)} absent there keep their fresh initialisation (e.g. {self.missing[0]})"
        return text


def warm_start(model: nn.Module, cfg: InitFromConfig | Mapping[str, Any] | None) -> WarmStart | None:
    """Read the weights `cfg` names into the initialised `model` (plain or sharded parameters); None: nothing
    to do (no cfg.path). Raises ConfigError / DataError naming the field, the file and the offending tensor."""
    if isinstance(cfg, Mapping):  # a config restored from a checkpoint's hyper-parameters
        cfg = InitFromConfig(**cfg)
    if cfg is None or cfg.path is None:
        return None
    targets = _targets(model)
    check_prefixes(model, ((f"{FIELD}.modules[{i}]", m) for i, m in enumerate(cfg.modules)), list(targets))
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise ConfigError(f"{FIELD}.path={cfg.path!r}: no such file or folder; give a checkpoint file written by "
                          "`seqlab train` or a Hugging Face model folder (config.json + model.safetensors)")
    if path.is_dir():
        source, kind = _hf_state(model, path, cfg), "Hugging Face folder"
    else:
        source, kind = _checkpoint_state(path), "checkpoint"
    return _load(targets, source, cfg, kind)


def _targets(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a state dict of `model` holds, as the live tensors: every parameter under each of its names (tied
    ones under all), and the persistent buffers."""
    targets = {name: param for name, param in model.named_parameters(remove_duplicate=False)}
    for module_name, module in model.named_modules(remove_duplicate=False):
        for name, buffer in module._buffers.items():
            if buffer is not None and name not in module._non_persistent_buffers_set:
                targets[f"{module_name}.{name}" if module_name else name] = buffer
    return targets


def _checkpoint_state(path: Path) -> Mapping[str, torch.Tensor]:
    where = f"{FIELD}.path={str(path)!r}"
    try:  # weights_only: a checkpoint is data; mmap: only the tensors read are paged in
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a file that is not a checkpoint
        raise DataError(f"{where}: not a loadable checkpoint ({type(err).__name__}: {str(err)[:300]}); give a "
                        "checkpoint file written by `seqlab train` or a Hugging Face model folder") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), Mapping):
        raise DataError(f"{where}: holds no state_dict; it was not written by `seqlab train`")
    state = {name.removeprefix("model."): tensor for name, tensor in ckpt["state_dict"].items()
             if name.startswith("model.")}
    if not state:
        raise DataError(f"{where}: its state_dict has no model.* weights; it was not written by `seqlab train`")
    return state


def _hf_state(model: nn.Module, folder: Path, cfg: InitFromConfig) -> Mapping[str, torch.Tensor]:
    where = f"{FIELD}.path={str(folder)!r}"
    if (folder / ".metadata").is_file():
        raise ConfigError(f"{where}: a sharded (torch distributed) checkpoint folder; a warm start reads a "
                          "single-file checkpoint (train with strategy.sharded_checkpoint=false) or a Hugging "
                          "Face model folder")
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{where}: a folder without config.json; a warm start reads a checkpoint file written "
                          "by `seqlab train` or a Hugging Face model folder (config.json + model.safetensors)")
    try:
        layout = capability(model, "hf_layout", "warm starts from Hugging Face folders")()
        to_ours = capability(model, "state_from_hf", "warm starts from Hugging Face folders")
    except SeqlabError as err:
        raise ConfigError(f"{where}: reading Hugging Face weights needs this model's Hugging Face layout: "
                          f"{err}") from None
    try:
        model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError) as err:
        raise DataError(f"{where}: config.json is not readable JSON ({err})") from None
    expected = getattr(layout.config, "model_type", None)
    if model_type != expected:
        raise ConfigError(f"{where}: a {model_type!r} model, but this architecture maps to {expected!r} "
                          f"({layout.model_class.__name__}); only weights of that layout can be read")
    theirs = SafetensorsFolder(folder, aliases=_tied_aliases(layout, folder))
    try:
        return to_ours(theirs, list(cfg.modules))
    except SeqlabError as err:
        raise ConfigError(f"{where}: {err}") from None


class SafetensorsFolder(Mapping):
    """The tensors of a Hugging Face folder by name, read from its safetensors file(s) only when asked for.

    transformers saves a tied tensor once (e.g. MBart's shared embedding as model.shared.weight only), so a name
    it left out is read through `aliases` (name -> the names of the same tensor in the model class)."""

    def __init__(self, folder: Path, aliases: Mapping[str, list[str]] | None = None):
        from safetensors import safe_open

        self._open = safe_open
        index = folder / SAFETENSORS_INDEX
        if (folder / SAFETENSORS).is_file():
            self.files = {name: folder / SAFETENSORS for name in self._keys(folder / SAFETENSORS)}
        elif index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError) as err:
                raise DataError(f"{FIELD}.path={str(folder)!r}: {SAFETENSORS_INDEX} has no readable weight_map "
                                f"({err})") from None
            self.files = {name: folder / file for name, file in weight_map.items()}
        else:
            raise DataError(f"{FIELD}.path={str(folder)!r}: no {SAFETENSORS} (or {SAFETENSORS_INDEX}); save the "
                            "model with save_pretrained (safetensors, the default)")
        self.folder = folder
        self.source: dict[str, str] = {}  # every name it answers -> the stored name it reads
        for name, names in (aliases or {}).items():
            stored = next((n for n in [name, *names] if n in self.files), None)
            if stored is not None:
                self.source[name] = stored
        self.source.update({name: name for name in self.files})

    def _keys(self, file: Path) -> list[str]:
        try:
            with self._open(str(file), "pt") as f:
                return list(f.keys())
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
            raise DataError(f"{FIELD}.path={str(file.parent)!r}: {file.name} is not a safetensors file "
                            f"({err})") from None

    def __getitem__(self, name: str) -> torch.Tensor:
        stored = self.source[name]
        with self._open(str(self.files[stored]), "pt") as f:
            return f.get_tensor(stored)

    def __iter__(self) -> Iterator[str]:
        return iter(self.source)

    def __len__(self) -> int:
        return len(self.source)


def _tied_aliases(layout: Any, folder: Path) -> dict[str, list[str]]:
    """{name: the other names of its tensor} for the tensors the Hugging Face model (as the folder's config
    builds it, on the meta device) ties together."""
    try:
        config = type(layout.config).from_pretrained(str(folder))
        with torch.device("meta"):
            hf = layout.model_class(config)
    except Exception:  # noqa: BLE001 - without the model class, no aliases: stored names only
        return {}
    groups: dict[int, list[str]] = {}
    for name, param in hf.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    return {name: [other for other in names if other != name] for names in groups.values() if len(names) > 1
            for name in names}


def _load(targets: dict[str, torch.Tensor], source: Mapping[str, torch.Tensor], cfg: InitFromConfig,
          kind: str) -> WarmStart:
    where = f"{FIELD}.path={cfg.path!r}"
    wanted = {name: t for name, t in targets.items() if any(under(name, m) for m in cfg.modules)}
    offered = [name for name in source if any(under(name, m) for m in cfg.modules)]
    if cfg.strict:
        unexpected = [name for name in offered if name not in targets]
        if unexpected:
            raise ConfigError(f"{where}: holds {len(unexpected)} tensors under {cfg.modules} that this model lacks, "
                              f"e.g. {', '.join(unexpected[:3])} (another architecture or depth?); set "
                              f"{FIELD}.strict=false to ignore them")
    # One entry per tensor: tied names share it, and it is loaded from the first name the source holds.
    groups: dict[int, list[str]] = {}
    for name, tensor in wanted.items():
        groups.setdefault(id(tensor), []).append(name)
    plan: list[tuple[torch.Tensor, str, list[str]]] = []
    missing: list[str] = []
    for names in groups.values():
        present = [name for name in names if name in source]
        if not present:
            missing.append(names[0])
            continue
        plan.append((wanted[names[0]], present[0], present))
    if missing and cfg.strict:
        raise ConfigError(f"{where}: lacks {len(missing)} of the {len(groups)} tensors under {cfg.modules}, e.g. "
                          f"{', '.join(missing[:3])}; set {FIELD}.strict=false to keep their fresh initialisation")
    values: dict[str, torch.Tensor] = {}
    for target, name, present in plan:
        value = source[name]
        if tuple(value.shape) != tuple(target.shape):
            raise ConfigError(f"{where}: {name} has shape {tuple(value.shape)} there but {tuple(target.shape)} in "
                              "this model; the architecture (or vocabulary) must match in what is loaded")
        for other in present[1:]:  # tied here, separate there: only one value can be kept
            if not torch.equal(source[other], value):
                raise ConfigError(f"{where}: {name} and {other} are one tied tensor in this model but differ "
                                  f"there; load only one of them ({FIELD}.modules)")
        values[name] = value
    written = 0
    with torch.no_grad():
        for target, name, _ in plan:
            _write(target, values[name])
            written += target.numel()
    result = WarmStart(kind, [name for _, name, _ in plan], missing, written)
    rank_zero_info(result.describe(cfg))
    return result


def _write(target: torch.Tensor, value: torch.Tensor) -> None:
    """Copy the full tensor `value` into `target`: a plain tensor, or this rank's part of a DTensor."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch without distributed support holds no DTensors
        DTensor = ()  # noqa: N806
    if isinstance(target, DTensor):
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        shape, offset = compute_local_shape_and_global_offset(target.shape, target.device_mesh, target.placements)
        local = target.to_local()
        part = value[tuple(slice(o, o + s) for o, s in zip(offset, shape))] if value.dim() else value
        local.data.copy_(part)
    else:
        target.data.copy_(value)
