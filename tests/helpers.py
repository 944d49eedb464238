"""Helpers shared by test modules: `from helpers import ...` (pytest puts tests/ on sys.path, see pyproject.toml).

Fixtures live in conftest.py; plain functions that several modules need live here, once.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from seqlab.evaluation.model import SeqlabModel
from seqlab.interfaces import Features, RowPlan, Rows
from seqlab.registry import ARCHITECTURES
from seqlab.tokenizer import PAD_ID, Tokenizer
from seqlab_plugins.architectures.decoder_only import DecoderOnlyConfig
from seqlab_plugins.architectures.seq2seq import Seq2SeqConfig

# ---------------------------------------------------------------------------------------------------------------
# Files


def write_lines(path: Path, lines) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def write_jsonl(path: Path, rows) -> Path:
    return write_lines(path, [json.dumps(row, ensure_ascii=False) for row in rows])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write_flores(root: Path, splits: dict[str, dict[str, list[str]]]) -> Path:
    """A FLORES-200 layout under root/flores200: {split: {3-letter code: sentences}} -> split/code.split files."""
    for split, langs in splits.items():
        for code, lines in langs.items():
            write_lines(root / "flores200" / split / f"{code}.{split}", lines)
    return root


# ---------------------------------------------------------------------------------------------------------------
# Objectives: raw rows as the sampler cuts them


def text_ids(tok: Tokenizer) -> np.ndarray:
    """Ids that may appear in packed text: every non-special piece, and the [DOC] separator."""
    return np.append(np.setdiff1d(np.arange(tok.vocab_size), tok.special_ids), tok.token_id("[DOC]"))


def planned_rows(tok: Tokenizer, rng: np.random.Generator, plan: RowPlan) -> Rows:
    """Full rows of text ids at each row's planned length, right-padded (document rows as whole documents of
    exactly the planned length)."""
    width = int(plan.length.max()) if len(plan.length) else 0
    tokens = np.where(np.arange(width)[None, :] < plan.length[:, None],
                      rng.choice(text_ids(tok), size=(len(plan.length), width)), tok.pad_id)
    return Rows(tokens, plan.length.copy(), plan)


def packed_rows(tok: Tokenizer, rng: np.random.Generator, batch: int, length: int) -> Rows:
    """`batch` full packed rows of `length` text ids."""
    return planned_rows(tok, rng, RowPlan.uniform(batch, length))


# ---------------------------------------------------------------------------------------------------------------
# Architectures


def features(inputs: list[list[int]], targets: list[list[int]], pad: int = PAD_ID) -> Features:
    """Features from lists of ids, right-padded with `pad`; every row of objective 0."""
    li = np.array([len(x) for x in inputs])
    lt = np.array([len(x) for x in targets])

    def padded(rows, width):
        return np.array([r + [pad] * (width - len(r)) for r in rows], dtype=np.int64).reshape(len(rows), width)

    return Features(padded(inputs, max(li)), li, padded(targets, max(lt)), lt, np.zeros(len(li), dtype=np.int64))


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """init_weights, then noise on everything, in eval mode: init leaves norms at 1, biases at 0 and the seq2seq
    vocabulary matrices equal, so a weight mapping that dropped or swapped any of them would pass by accident.
    Relative position tables get more, so that a wrong bucket or table changes the logits clearly."""
    torch.manual_seed(0)
    model.init_weights()
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied matrices are listed once, so they stay tied
            p.add_(torch.randn_like(p) * (1.0 if "relative" in name else 0.3 if p.ndim == 1 else 0.02))
    return model.eval()


def padded_ids(lengths: list[int], vocab_size: int, width: int,
               first: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random text ids (16 and up: no special ids) right-padded to `width` -> ids (B, width) and the 0/1 attention
    mask (B, width); `first` replaces every row's first id (e.g. BOS)."""
    g = torch.Generator().manual_seed(len(lengths) + sum(lengths))
    ids = torch.randint(16, vocab_size, (len(lengths), width), generator=g)
    if first is not None:
        ids[:, 0] = first
    mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    return ids.masked_fill(~mask, PAD_ID), mask.long()


def tiny_seqlab_model(arch: str, tokenizer: Tokenizer) -> SeqlabModel:
    """A tiny random SeqlabModel (arch: seq2seq | prefix_lm | causal_lm) over the whole vocabulary, so that its
    generations decode to text, its head redrawn large so that scores and greedy choices vary."""
    if arch == "seq2seq":
        cfg = Seq2SeqConfig(name="seq2seq", d_model=32, n_heads=4, encoder_layers=1, decoder_layers=1, d_ff=64,
                            max_positions=128)
    else:
        cfg = DecoderOnlyConfig(name="decoder_only", d_model=32, n_heads=4, n_layers=1, d_ff=64, max_positions=256,
                                tie_embeddings=False, prefix_lm=arch == "prefix_lm")
    torch.manual_seed(0)
    model = ARCHITECTURES.build(cfg, vocab_size=tokenizer.vocab_size)
    model.init_weights()
    with torch.no_grad():
        torch.nn.init.normal_(model.head.weight, std=1.0)
    return SeqlabModel(model.eval(), tokenizer, cfg, name=arch, batch_size=4)


class CharModel:
    """The text side of an EvalModel over characters (one id per code point, no mode tokens): fakes that script
    their scores or replies subclass it."""

    name, encoder_decoder, max_positions = "chars", True, 100_000

    def encode(self, texts):
        return [[ord(c) for c in t] for t in texts]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)

    def special_id(self, token):
        return None
