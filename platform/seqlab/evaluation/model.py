"""What evaluation talks to: a model that scores and continues token sequences, whichever library built it.

Every eval task renders text prompts, tokenises them with the model's own tokenizer and sends `TokenRequest`s
to an `EvalModel`. A seqlab checkpoint (`SeqlabModel`) and a Hugging Face transformers model (`HFModel`, in
`seqlab.evaluation.hf`) implement the same three calls, so both go through one harness with identical prompts.

A request is model-neutral, like the training features: `inputs` is what the model reads (the encoder input,
or a decoder-only model's prefix), then the target side is `target_prefix` (forced, not scored: the prompt
again in AlexaTM's denoising mode) followed by `continuation` (scored, when ranking candidates).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
import torch

from seqlab.interfaces import Features
from seqlab.tokenizer import EOS_ID, Tokenizer


@dataclass(frozen=True)
class TokenRequest:
    inputs: tuple[int, ...]  # encoder input / decoder-only prefix, mode token included
    target_prefix: tuple[int, ...] = ()  # forced at the start of the target side, not scored
    continuation: tuple[int, ...] = ()  # scored tokens (ranking); empty for generation


class EvalModel(Protocol):
    name: str  # how reports and prediction files name the model
    encoder_decoder: bool
    max_positions: int  # per stack for an encoder-decoder; the whole sequence for a decoder-only model

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, no special tokens added."""

    def decode(self, ids: Sequence[int]) -> str: ...

    def special_id(self, token: str) -> int | None:
        """The id of a mode token such as "[CLM]", or None when the vocabulary has none."""

    def score(self, requests: Sequence[TokenRequest]) -> np.ndarray:
        """(n,) float64: sum of log p(continuation | inputs, target_prefix), teacher-forced."""

    def generate(self, requests: Sequence[TokenRequest], max_new_tokens: int,
                 stop: Sequence[str] = ()) -> list[list[int]]:
        """Greedy continuation of each request's target prefix, EOS and what follows dropped. A row also ends
        with the token after which its decoded text contains one of the `stop` strings (that token kept)."""


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Ragged rows -> (n, W) int64 right-padded with pad_id (W >= 1) and their lengths (n,)."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    out = np.full((len(rows), max(1, int(lengths.max(initial=0)))), pad_id, dtype=np.int64)
    if lengths.sum():
        out[np.arange(out.shape[1])[None, :] < lengths[:, None]] = np.concatenate([np.asarray(r, np.int64)
                                                                                   for r in rows])
    return out, lengths


def batches_by_length(requests: Sequence[TokenRequest], batch_size: int, key) -> list[list[int]]:
    """Indices of requests in batches of similar `key` (less padding), each batch in the original order."""
    order = sorted(range(len(requests)), key=lambda i: key(requests[i]))
    return [sorted(order[i: i + batch_size]) for i in range(0, len(order), batch_size)]


def strip_eos(tokens: np.ndarray, lengths: np.ndarray, eos_id: int) -> list[list[int]]:
    """Generated rows (B, N) of `lengths` tokens -> lists without the EOS that ended them."""
    out = []
    for row, n in zip(tokens.tolist(), lengths.tolist()):
        row = row[:n]
        out.append(row[:-1] if row and row[-1] == eos_id else row)
    return out


class StopStrings:
    """Which rows of a generating batch are done: their new tokens contain an EOS id, or their decoded text
    contains a stop string. Called after every step with the new tokens so far (B, n); decodes only the rows
    not yet done (those after EOS or a stop string have nothing more to say)."""

    def __init__(self, decode: Callable[[Sequence[int]], str], stop: Sequence[str], rows: int,
                 eos_ids: Sequence[int]):
        self.decode = decode
        self.stop = [s for s in stop if s]  # "" would be in every text
        self.eos_ids = set(eos_ids)
        self.done = np.zeros(rows, dtype=bool)  # (B,)
        self.lengths = np.full(rows, -1, dtype=np.int64)  # (B,) tokens up to the stop string; -1: none found

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        rows = tokens.tolist()  # (B, n)
        for b in np.flatnonzero(~self.done):
            row = rows[b]
            if self.eos_ids.intersection(row):  # ended by EOS: the generation loop already knows
                self.done[b] = True
            elif any(s in self.decode(row) for s in self.stop):
                self.done[b] = True
                self.lengths[b] = len(row)
        return torch.from_numpy(self.done.copy()).to(tokens.device)


class SeqlabModel:
    """A seqlab model (either architecture) behind the EvalModel calls.

    Scoring runs the architecture's own feature converter on Features {inputs, targets = prefix +
    continuation}: exactly the tensors training builds, so a model is scored the way it was trained.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Tokenizer, architecture: Any, name: str,
                 batch_size: int = 16):
        """`model` stays where it is (inside training: on its device, possibly sharded); each call runs it in
        eval mode (no dropout) and puts it back as it was."""
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size
        self.converter = type(model).feature_converter(architecture, pad_id=tokenizer.pad_id)
        self.encoder_decoder = bool(model.encoder_decoder)
        self.max_positions = int(model.max_positions)

    @classmethod
    def from_checkpoint(cls, path: str | Path, tokenizer: str | Path | None = None, batch_size: int = 16,
                        device: str = "cpu") -> "SeqlabModel":
        from seqlab.checkpoints import load_model

        loaded = load_model(path, tokenizer)
        name = f"{loaded.architecture.name}@{Path(path).parent.parent.name}:step{loaded.step}"
        return cls(loaded.model.to(device), loaded.tokenizer, loaded.architecture, name, batch_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer.encode(list(texts))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def special_id(self, token: str) -> int | None:
        try:
            return self.tokenizer.token_id(token)
        except KeyError:  # absence is an answer here (a tokenizer without mode tokens), not an error
            return None

    @torch.inference_mode()
    def score(self, requests: Sequence[TokenRequest]) -> np.ndarray:
        with eval_mode(self.model):
            return self._score(requests)

    @torch.inference_mode()
    def score_greedy(self, requests: Sequence[TokenRequest]) -> tuple[np.ndarray, np.ndarray]:
        """score, and (n,) bool: whether greedy decoding would produce each continuation (every token the
        argmax given the ones before)."""
        with eval_mode(self.model):
            return self._score(requests, greedy=True)

    def _score(self, requests: Sequence[TokenRequest], greedy: bool = False):
        out = np.zeros(len(requests), dtype=np.float64)
        is_greedy = np.ones(len(requests), dtype=bool)
        pad = self.tokenizer.pad_id
        for idx in batches_by_length(requests, self.batch_size,
                                     key=lambda r: len(r.inputs) + len(r.target_prefix) + len(r.continuation)):
            reqs = [requests[i] for i in idx]
            inputs, input_lengths = pad_rows([r.inputs for r in reqs], pad)
            targets, target_lengths = pad_rows([r.target_prefix + r.continuation for r in reqs], pad)
            features = Features(inputs, input_lengths, targets, target_lengths, np.zeros(len(reqs), np.int64))
            batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in self.converter(features).items()}
            if greedy:
                logprobs, top = (t.cpu().numpy() for t in self.model.target_scores(batch))  # (B, Lt) each
            else:
                logprobs = self.model.target_logprobs(batch).cpu().numpy()  # (B, Lt)
            cols = np.arange(logprobs.shape[1])[None, :]
            prefix = np.array([len(r.target_prefix) for r in reqs])[:, None]
            scored = (cols >= prefix) & (cols < target_lengths[:, None])
            out[idx] = np.where(scored, logprobs.astype(np.float64), 0.0).sum(axis=1)
            if greedy:
                is_greedy[idx] = (top | ~scored).all(axis=1)
        return (out, is_greedy) if greedy else out

    @torch.inference_mode()
    def generate(self, requests: Sequence[TokenRequest], max_new_tokens: int,
                 stop: Sequence[str] = ()) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in requests]
        pad = self.tokenizer.pad_id
        device = self.device
        # Rows of similar prefix length together: a longer forced prefix costs the batch one step per token.
        for idx in batches_by_length(requests, self.batch_size, key=lambda r: (len(r.target_prefix), len(r.inputs))):
            inputs, lengths = pad_rows([requests[i].inputs for i in idx], pad)
            prefix, prefix_lengths = pad_rows([requests[i].target_prefix for i in idx], pad)
            if not prefix_lengths.any():  # pad_rows keeps one column; no prefix is (B, 0)
                prefix = prefix[:, :0]
            # Asked only when they are needed: an architecture need not know the keywords otherwise.
            extra = {"stop": StopStrings(self.decode, stop, len(idx), [EOS_ID])} if any(stop) else {}
            if prefix_lengths.min() != prefix_lengths.max():
                extra["prefix_lengths"] = torch.from_numpy(prefix_lengths).to(device)
            tokens, counts = self.model.generate(torch.from_numpy(inputs).to(device),
                                                 torch.from_numpy(lengths).to(device), max_new_tokens,
                                                 torch.from_numpy(prefix).to(device), **extra)
            for i, row in zip(idx, strip_eos(tokens.cpu().numpy(), counts.cpu().numpy(), EOS_ID)):
                out[i] = row
        return out


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def group_by(indices: list[int], key) -> list[list[int]]:
    """indices split into groups of equal key(i), in order of first appearance."""
    groups: dict[Any, list[int]] = {}
    for i in indices:
        groups.setdefault(key(i), []).append(i)
    return list(groups.values())
