"""Loading a model back from a checkpoint written by `seqlab train` (for export, evaluation, generation)."""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seqlab.errors import DataError
from seqlab.registry import ARCHITECTURES, load_plugins
from seqlab.tokenizer import Tokenizer


@dataclass
class LoadedModel:
    model: torch.nn.Module  # in eval mode, on the CPU
    architecture: Any  # the architecture's config dataclass
    tokenizer: Tokenizer
    run: dict  # the run's resolved config, as saved in the checkpoint
    step: int


def load_model(checkpoint_path: str | Path, tokenizer_path: str | Path | None = None) -> LoadedModel:
    """Rebuild the model of a single-file Lightning checkpoint; the tokenizer is the run's unless given."""
    path = Path(checkpoint_path)
    if not path.is_file():
        raise DataError(f"checkpoint {path}: not a file; `seqlab train` writes single-file checkpoints under "
                        "RUN_DIR/checkpoints/")
    # weights_only: a checkpoint is data, and loading it must not run code from the file.
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError) as err:
        raise DataError(f"checkpoint {path}: not a loadable Lightning checkpoint ({err})") from None
    hparams = ckpt.get("hyper_parameters", {})
    if "config" not in hparams or "vocab_size" not in hparams:
        raise DataError(f"checkpoint {path}: no hyper_parameters.config; it was not written by `seqlab train`")
    run = hparams["config"]
    load_plugins()
    arch = dict(run["architecture"])
    plugin = ARCHITECTURES.get(arch["name"])
    try:
        cfg = plugin.config(**arch)
    except TypeError as err:
        raise DataError(f"checkpoint {path}: its architecture config does not fit this seqlab's "
                        f"{plugin.config.__name__} ({err})") from None
    model = ARCHITECTURES.build(cfg, vocab_size=hparams["vocab_size"])
    state = {name.removeprefix("model."): t for name, t in ckpt["state_dict"].items() if name.startswith("model.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise DataError(f"checkpoint {path}: weights do not match architecture {arch['name']}: {err}") from None
    tokenizer = Tokenizer(tokenizer_path if tokenizer_path is not None else run["tokenizer"]["path"])
    return LoadedModel(model.eval(), cfg, tokenizer, run, int(ckpt.get("global_step", 0)))
