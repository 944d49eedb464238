"""Export to (and import from) Hugging Face transformers layouts, for any architecture with `hf_layout()`.

An architecture's package says which transformers model its config maps to and how each of its weights maps
to that model's (`HFLayout`, a list of `WeightMap`s that run both ways). Export writes every target weight
with strict loading, so a layout change in transformers fails loudly; import (warm starts) reads the same
mapping backwards. The tokenizer is written by `hf_tokenizer.to_hf_tokenizer`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from seqlab.checkpoints import load_model
from seqlab.errors import ConfigError, SeqlabError
from seqlab.interfaces import capability
from seqlab.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer
from seqlab_plugins.architectures.hf_tokenizer import to_hf_tokenizer

try:
    from transformers import PretrainedConfig, PreTrainedModel
except ModuleNotFoundError as err:
    raise SeqlabError("exporting to Hugging Face layouts needs the transformers package: "
                      "pip install 'transformers==5.24.0'") from err

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class WeightMap:
    """One of our tensors (or none: a constant of the target) <-> one or more of the target's."""

    ours: str | None
    theirs: tuple[str, ...]
    to_hf: Callable[[torch.Tensor | None], list[torch.Tensor]]
    from_hf: Callable[[list[torch.Tensor]], torch.Tensor] | None = None  # None: nothing to import (constants)


def same(ours: str, *theirs: str) -> WeightMap:
    """Identical tensors; several target names take copies (e.g. a shared embedding stored twice)."""
    return WeightMap(ours, theirs, lambda t: [t] * len(theirs), lambda parts: parts[0])


def transposed(ours: str, theirs: str) -> WeightMap:
    """GPT-2's Conv1D stores (in, out): the transpose of nn.Linear's (out, in)."""
    return WeightMap(ours, (theirs,), lambda t: [t.t()], lambda parts: parts[0].t())


def split(ours: str, sizes: list[int], *theirs: str, transpose: bool = False, scales: tuple[float, ...] = ()) \
        -> WeightMap:
    """A stacked projection (outputs [a | b | ...] along dim 0) <-> one tensor per part, each optionally
    transposed (Conv1D) or multiplied by a scale (an attention scale folded into a projection)."""
    factors = scales or (1.0,) * len(theirs)

    def to_hf(t: torch.Tensor | None) -> list[torch.Tensor]:
        parts = [p * f if f != 1 else p for p, f in zip(t.split(sizes), factors)]
        return [p.t() for p in parts] if transpose else parts

    def from_hf(parts: list[torch.Tensor]) -> torch.Tensor:
        parts = [p.t() for p in parts] if transpose else parts
        return torch.cat([p / f if f != 1 else p for p, f in zip(parts, factors)])

    return WeightMap(ours, theirs, to_hf, from_hf)


def constant(theirs: str, value: torch.Tensor) -> WeightMap:
    """A target weight with no counterpart here (e.g. MBart's final_logits_bias, always zero)."""
    return WeightMap(None, (theirs,), lambda _: [value])


@dataclass(frozen=True)
class Needs:
    """One component a target layout hard-codes: a config field and the values of it the target can express."""

    field: str
    allowed: tuple[Any, ...]
    wants: str = ""  # how messages say it; default: field=allowed[0]

    def met(self, cfg: Any) -> bool:
        return getattr(cfg, self.field) in self.allowed

    def __str__(self) -> str:
        return self.wants or f"{self.field}={self.allowed[0]!r}"


def select_layout(cfg: Any, what: str, candidates: dict[str, tuple[Needs, ...]]) -> str:
    """The first candidate (a target's name) whose needs `cfg` meets; otherwise a ConfigError naming a field the
    closest candidate cannot express, and what every candidate needs."""
    missed = {name: [n for n in needs if not n.met(cfg)] for name, needs in candidates.items()}
    for name, misses in missed.items():
        if not misses:
            return name
    closest = min(missed, key=lambda name: len(missed[name]))
    first = missed[closest][0]
    options = "; ".join(f"{name} needs {', '.join(map(str, needs))}" for name, needs in candidates.items())
    raise ConfigError(f"architecture.{first.field}={getattr(cfg, first.field)!r}: no Hugging Face layout of the "
                      f"{what} takes these components (the closest, {closest}, needs {first}). {options}")


@dataclass
class HFLayout:
    """The transformers model an architecture's config maps to, and the mapping of every weight."""

    model_class: type
    config: PretrainedConfig
    weights: list[WeightMap]
    auto_class: str  # what the README tells users to load it with, e.g. AutoModelForCausalLM
    notes: list[str] = field(default_factory=list)  # README lines: what the export does and does not keep
    # Target parameters its class ties to another whatever the config says (T5's lm_head in transformers 5.24)
    # but this layout holds separately: the export gives each its own tensor, so both are saved.
    untied: tuple[str, ...] = ()


def layout_of(model: nn.Module) -> HFLayout:
    return capability(model, "hf_layout", "export to Hugging Face layouts")()


def hf_state(model: nn.Module, layout: HFLayout) -> Tensors:
    """Our weights under the target's names."""
    ours = model.state_dict()
    state: Tensors = {}
    for entry in layout.weights:
        parts = entry.to_hf(ours[entry.ours].detach().cpu() if entry.ours is not None else None)
        state.update(zip(entry.theirs, parts))
    return state


def state_from_hf(layout: HFLayout, theirs: Mapping[str, torch.Tensor],
                  modules: Sequence[str] = ("",)) -> Tensors:
    """The target's weights (e.g. a Hugging Face checkpoint's) under our names: the mapping run backwards, for
    our tensors under the `modules` prefixes only ("": all), so `theirs` (which may read lazily) is asked only
    for those."""
    wanted = [w for w in layout.weights if w.ours is not None and any(
        not m or w.ours == m or w.ours.startswith(m + ".") for m in modules)]
    layout = replace(layout, weights=wanted)
    missing = sorted({name for e in layout.weights if e.from_hf for name in e.theirs} - theirs.keys())
    if missing:
        raise ConfigError(f"the {layout.model_class.__name__} weights lack {len(missing)} tensors this model maps "
                          f"from, e.g. {', '.join(missing[:3])}: they were saved by another layout")
    return {e.ours: e.from_hf([theirs[name] for name in e.theirs]) for e in layout.weights
            if e.ours is not None and e.from_hf is not None}


def to_hf_model(model: nn.Module) -> PreTrainedModel:
    """Our model -> the equivalent transformers model (on CPU, in eval mode), weights copied."""
    layout = layout_of(model)
    hf = layout.model_class(layout.config)
    for name in layout.untied:
        parent, attr = name.rsplit(".", 1)
        module = hf.get_submodule(parent)
        setattr(module, attr, nn.Parameter(getattr(module, attr).detach().clone()))
        hf.all_tied_weights_keys.pop(name, None)  # else save_pretrained and tie_weights would tie it back
    # strict: every parameter of the target is written, so a layout change in transformers fails loudly here
    with torch.no_grad():
        hf.load_state_dict(hf_state(model, layout), strict=True)
    return hf.eval()


def export_model(model: nn.Module, tokenizer: Tokenizer, out_dir: str | Path,
                 source: str = "an in-memory model") -> Path:
    """Write model (safetensors), config, tokenizer and a README to `out_dir`; returns `out_dir`."""
    out_dir = Path(out_dir)
    layout = layout_of(model)
    hf = to_hf_model(model)
    if tokenizer.vocab_size != hf.config.vocab_size:
        raise ConfigError(f"tokenizer.path={tokenizer.path}: vocab_size {tokenizer.vocab_size} differs from the "
                          f"model's {hf.config.vocab_size}; export with the tokenizer the model was trained with")
    out_dir.mkdir(parents=True, exist_ok=True)
    # A prefix LM's bidirectional prefix has no causal-LM equivalent: say so in config.json, where loaders that
    # would score the export as if it were the model (seqlab eval hf=) can read it.
    hf.config.seqlab_prefix_lm = bool(getattr(model.cfg, "prefix_lm", False))
    hf.save_pretrained(out_dir)
    to_hf_tokenizer(tokenizer, model.max_positions).save_pretrained(out_dir)
    (out_dir / "README.md").write_text(_readme(hf, layout, model.cfg.name, tokenizer, source), encoding="utf-8")
    return out_dir


def export_checkpoint(checkpoint_path: str | Path, out_dir: str | Path,
                      tokenizer_path: str | Path | None = None) -> Path:
    """Export a checkpoint written by `seqlab train`; the tokenizer is the run's unless given."""
    loaded = load_model(checkpoint_path, tokenizer_path)
    return export_model(loaded.model, loaded.tokenizer, out_dir,
                        source=f"checkpoint {Path(checkpoint_path).resolve()} (step {loaded.step})")


def _readme(hf: PreTrainedModel, layout: HFLayout, name: str, tokenizer: Tokenizer, source: str) -> str:
    lines = [
        f"# seqlab {name} exported as {type(hf).__name__}",
        "",
        f"Exported by seqlab from {source}. Weights are in `model.safetensors`, the model in `config.json`,",
        "the tokenizer in `tokenizer.json` (from the SentencePiece model "
        f"`{tokenizer.path.name}`, sha256 {tokenizer.sha256()}).",
        "",
        "```python",
        f"from transformers import AutoTokenizer, {layout.auto_class}",
        "tokenizer = AutoTokenizer.from_pretrained(PATH)",
        f"model = {layout.auto_class}.from_pretrained(PATH)",
        "```",
        "",
        "The tokenizer adds no special tokens: write the mode token the model was trained with (e.g. `[S2S]`,",
        "`[CLM]`) and sentinels `[SENT_i]` into the text; they are special tokens with their original ids.",
        f"Ids: pad {PAD_ID}, eos {EOS_ID}, bos {BOS_ID}, unk {UNK_ID}.",
        *layout.notes,
    ]
    return "\n".join(lines) + "\n"
