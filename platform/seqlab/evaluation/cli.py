"""`seqlab eval`: evaluate a seqlab checkpoint or a local Hugging Face model on eval tasks.

    seqlab eval checkpoint=RUN/checkpoints/last.ckpt tasks=[flores_de_en,sib200_en] data_root=DATA
    seqlab eval hf=path/to/model tasks=[xcopa_it] limit=100
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from seqlab.config import EvalConfig
from seqlab.errors import ConfigError
from seqlab.evaluation.harness import evaluate, format_scores
from seqlab.evaluation.model import EvalModel, SeqlabModel
from seqlab.evaluation.tasks import resolve_tasks
from seqlab.registry import load_plugins

DATA_ROOT_ENV = "SEQLAB_EVAL_DATA"  # the default eval.data_root, so it need not be repeated on every command

EVAL_HELP = f"""\
usage: seqlab eval (checkpoint=PATH | hf=PATH) tasks=[TASK,...] [KEY=VALUE ...]

Evaluate a model on eval tasks with the paper's protocol (greedy decoding, ranking by log-likelihood).
  checkpoint=PATH     a .ckpt written by `seqlab train` (either architecture)
  hf=PATH             a local Hugging Face transformers seq2seq or causal LM folder
  tasks=[...]         task presets (`seqlab plugins` lists them) or mappings, e.g.
                      'tasks=[{{preset: flores_de_en, shots: 0}}, {{name: translation, source: ta, target: te}}]'
  data_root=DIR       where relative task paths point (default: ${DATA_ROOT_ENV})
  limit=N             at most N examples per task
  batch_size=N        requests per model call (default 16)
  device=cpu|cuda     (default cpu)
  threads=N           CPU threads for the model (default: torch's, one per core); on cores shared with other
                      jobs give the number you own: oversubscribed threads wait on each other
  tokenizer=PATH      the checkpoint's tokenizer, if not where its run had it
  allow_causal_export=true   accept hf= exports of prefix-LM models, which attend causally (another model)
  output_dir=DIR      scores.json and TASK.predictions.jsonl (default: RUN/eval/stepN, or evals/NAME for hf)
  plugins_dir=DIR     import extra plugin modules (e.g. your own eval tasks) first
"""


@dataclass
class EvalCommandConfig(EvalConfig):
    checkpoint: Optional[str] = None
    hf: Optional[str] = None
    tokenizer: Optional[str] = None
    allow_causal_export: bool = False
    device: str = "cpu"
    threads: Optional[int] = None  # torch's intra-op threads; None: torch's default (the machine's cores)
    output_dir: Optional[str] = None
    plugins_dir: Optional[str] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.checkpoint is None) == (self.hf is None):
            raise ConfigError(f"give exactly one of checkpoint=PATH or hf=PATH (got checkpoint={self.checkpoint}, "
                              f"hf={self.hf})")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads={self.threads}: must be >= 1 (or left out: one per core)")
        if not self.tasks:
            raise ConfigError("tasks: no eval tasks; e.g. tasks=[flores_de_en,sib200_en] (see `seqlab plugins`)")


def parse(argv: Sequence[str]) -> EvalCommandConfig:
    """KEY=VALUE arguments -> a validated config; an unknown key or a bad value names itself."""
    bad = [arg for arg in argv if "=" not in arg]
    if bad:
        raise ConfigError(f"{bad[0]!r}: arguments are KEY=VALUE (see `seqlab eval --help`)")
    schema = OmegaConf.structured(EvalCommandConfig)  # the class: defaults only, no validation yet
    schema.data_root = os.environ.get(DATA_ROOT_ENV)
    try:
        merged = OmegaConf.merge(schema, OmegaConf.from_dotlist(list(argv)))
        fields = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "argument"
        raise ConfigError(f"{key}: {getattr(err, 'msg', err)}".splitlines()[0]) from None
    return EvalCommandConfig(**fields)


def load_eval_model(cfg: EvalCommandConfig) -> tuple[EvalModel, Path]:
    if cfg.checkpoint is not None:
        model = SeqlabModel.from_checkpoint(cfg.checkpoint, cfg.tokenizer, cfg.batch_size, cfg.device)
        step = model.name.rsplit(":step", 1)[-1]
        default_out = Path(cfg.checkpoint).resolve().parent.parent / "eval" / f"step{step}"
    else:
        from seqlab.evaluation.hf import HFModel

        model = HFModel.from_pretrained(cfg.hf, batch_size=cfg.batch_size, device=cfg.device,
                                        allow_causal_export=cfg.allow_causal_export)
        default_out = Path("evals") / Path(cfg.hf).resolve().name
    return model, Path(cfg.output_dir) if cfg.output_dir else default_out


def eval_command(argv: Sequence[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        print(EVAL_HELP)
        return 0
    cfg = parse(argv)
    load_plugins(cfg.plugins_dir)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    tasks = resolve_tasks(cfg.tasks)
    model, out_dir = load_eval_model(cfg)
    results = evaluate(model, tasks, out_dir, data_root=cfg.data_root, limit=cfg.limit,
                       progress=cfg.progress_bar)
    print(f"{model.name}\n{format_scores(results)}\nscores and per-example predictions: {out_dir}")
    return 0
