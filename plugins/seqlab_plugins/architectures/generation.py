"""Text generation for every architecture: greedy decoding or sampling (temperature, top-k, top-p), batched
over prompts of different lengths, with a key/value cache.

The loop here is generic: a model provides `decode_steps(...)`, a `DecodeSteps` that turns the last step's
tokens into the next logits (each architecture's package holds its own, with its cache layout).

Every row generates in lockstep, one token per step; rows whose forced target prefix is longer than the
batch's shortest are fed the rest of it first, one token per step. A row that emits EOS, or that a `stop`
check declares done, keeps that token and is padded from then on; the batch stops when every row is done or
after max_new_tokens. `use_cache=False` recomputes the whole sequence every step through the models' training-path
forward: the reference the cached path must match.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from seqlab.errors import ConfigError, require
from seqlab.tokenizer import EOS_ID, PAD_ID


@dataclass
class GenerationConfig:
    max_new_tokens: int = 64
    do_sample: bool = False  # False: greedy, the paper's decoding in every few-shot evaluation
    # Sampling only. Temperature 0 is refused rather than read as greedy: greedy is do_sample=false, one
    # spelling for one behaviour.
    temperature: float = 1.0
    top_k: Optional[int] = None  # sample among the k likeliest tokens; None: no limit
    top_p: float = 1.0  # nucleus: the smallest set of likeliest tokens whose probability mass is >= top_p
    seed: Optional[int] = None  # seeds a generator when generate() is given none; None: torch's global RNG
    eos_id: Optional[int] = EOS_ID  # None: never stop early (fixed-length generation)
    pad_id: int = PAD_ID  # fills a row after its EOS
    use_cache: bool = True  # False: recompute the whole sequence every step (the reference path)

    def __post_init__(self) -> None:
        require(self.max_new_tokens >= 1, "generation.max_new_tokens", self.max_new_tokens, "must be >= 1")
        require(self.temperature > 0, "generation.temperature", self.temperature,
                "must be > 0 (for temperature-0 decoding use generation.do_sample=false: greedy)")
        require(self.top_k is None or self.top_k >= 1, "generation.top_k", self.top_k, "must be >= 1 or null")
        require(0 < self.top_p <= 1, "generation.top_p", self.top_p, "must be in (0, 1]")
        if not self.do_sample:
            # A sampling knob under greedy decoding would be silently ignored; say so instead.
            for key, off in (("temperature", 1.0), ("top_k", None), ("top_p", 1.0)):
                require(getattr(self, key) == off, f"generation.{key}", getattr(self, key),
                        "applies only to sampling: set generation.do_sample=true")
        require(self.eos_id is None or self.eos_id >= 0, "generation.eos_id", self.eos_id, "must be >= 0 or null")
        require(self.pad_id >= 0 and self.pad_id != self.eos_id, "generation.pad_id", self.pad_id,
                f"must be >= 0 and differ from generation.eos_id={self.eos_id}")


class Generated(NamedTuple):
    tokens: torch.Tensor  # (B, N) int64 new tokens, N <= max_new_tokens; a row's EOS is kept, pad after it
    lengths: torch.Tensor  # (B,) int64: tokens each row generated, its EOS (or the token that stopped it) included


# Rows' new tokens so far (B, n) -> (B,) bool: which rows are done (e.g. their text reached a stop string).
StopCheck = Callable[[torch.Tensor], torch.Tensor]


class DecodeSteps(Protocol):
    """What `model.decode_steps(input_ids, input_lengths, max_new_tokens, use_cache, target_prefix)` returns:
    the prompts are encoded (or prefilled) at construction; each call feeds one token per row."""

    def __call__(self, new: torch.Tensor | None) -> torch.Tensor:
        """The last step's tokens (B,), None on the first call -> next-token logits (B, V)."""


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """(B, V) -> (B, V) with -inf outside each row's k largest logits (exactly k, whatever the ties)."""
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, logits.topk(k, dim=-1).indices, True)
    return logits.masked_fill(~keep, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """(B, V) -> (B, V) with -inf outside each row's nucleus: the smallest set of likeliest tokens whose
    probability mass is >= p. A token stays if the tokens strictly likelier than it hold less than p."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # 2x (B, V)
    probs = sorted_logits.softmax(dim=-1)
    before = F.pad(probs.cumsum(dim=-1)[:, :-1], (1, 0))  # (B, V): mass of the likelier tokens
    drop = torch.empty_like(before, dtype=torch.bool).scatter_(-1, order, before >= p)  # vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def choose(logits: torch.Tensor, cfg: GenerationConfig, generator: torch.Generator | None) -> torch.Tensor:
    """Next-token logits (B, V) -> tokens (B,): the argmax, or a sample from the filtered distribution."""
    if not cfg.do_sample:
        return logits.argmax(dim=-1)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) / cfg.temperature  # bf16 is too coarse
    if cfg.top_k is not None:
        logits = top_k_filter(logits, min(cfg.top_k, logits.shape[-1]))
    if cfg.top_p < 1:  # p = 1 keeps everything; filtering would only risk dropping the tail to rounding
        logits = top_p_filter(logits, cfg.top_p)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)


def no_prefix(input_ids: torch.Tensor) -> torch.Tensor:
    return input_ids.new_zeros((input_ids.shape[0], 0))


def append_rows(ids: torch.Tensor, lengths: torch.Tensor, suffix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded rows ids (B, W) of `lengths` tokens, each followed by its suffix (B, P) -> (B, W + P), (B,)."""
    B, W = ids.shape
    P = suffix.shape[1]
    out = torch.cat([ids, ids.new_full((B, P), PAD_ID)], dim=1)
    out.scatter_(1, lengths[:, None] + torch.arange(P, device=ids.device), suffix)
    return out, lengths + P


@torch.inference_mode()
def generate(model: nn.Module, input_ids: torch.Tensor, input_lengths: torch.Tensor, cfg: GenerationConfig,
             generator: torch.Generator | None = None, target_prefix: torch.Tensor | None = None,
             stop: StopCheck | None = None, prefix_lengths: torch.Tensor | None = None) -> Generated:
    """Continue right-padded prompts input_ids (B, W) of input_lengths (B,) tokens each.

    seq2seq: the prompts are the encoder input. decoder-only: the prompts are the prefix. target_prefix (B, P),
    right-padded to prefix_lengths (B,) tokens (None: all P), is forced at the start of the output and not
    returned: the decoder (or, for a decoder-only model, the causal part) starts from it, e.g. the prompt again
    in AlexaTM's denoising mode. Prefixes of different lengths batch together: the shortest is fed at once and
    every longer row is fed the rest of its own prefix one token per step (forced decoding) while the others
    generate, so each row sees exactly its own tokens at its own positions.
    `stop`, when given, is called after every step with the new tokens so far (B, n), padding after done rows;
    a row it returns True for is done like a row that emitted EOS, the token just generated kept. The model
    runs in eval mode (dropout would make cached and uncached decoding differ) and is put back as it was.
    """
    if input_ids.dim() != 2 or input_lengths.shape != input_ids.shape[:1]:
        raise ValueError(f"input_ids must be (B, W) and input_lengths (B,); got {tuple(input_ids.shape)} "
                         f"and {tuple(input_lengths.shape)}")
    if not bool(((input_lengths >= 1) & (input_lengths <= input_ids.shape[1])).all()):
        raise ValueError(f"input_lengths must be in [1, {input_ids.shape[1]}]; got {input_lengths.tolist()}")
    input_ids = input_ids[:, : int(input_lengths.max())]  # all-padding columns would only cost positions
    B = input_ids.shape[0]
    target_prefix = no_prefix(input_ids) if target_prefix is None else target_prefix
    if target_prefix.dim() != 2 or target_prefix.shape[0] != B:
        raise ValueError(f"target_prefix must be (B, P) with B={B}; got {tuple(target_prefix.shape)}")
    P = target_prefix.shape[1]
    if prefix_lengths is None:
        prefix_lengths = torch.full_like(input_lengths, P)
    if prefix_lengths.shape != (B,) or not bool(((prefix_lengths >= 0) & (prefix_lengths <= P)).all()):
        raise ValueError(f"prefix_lengths must be (B,) in [0, {P}]; got {prefix_lengths.tolist()}")
    if cfg.do_sample and generator is None and cfg.seed is not None:
        generator = torch.Generator(device=input_ids.device).manual_seed(cfg.seed)
    shortest = int(prefix_lengths.min()) if B else 0
    forced = prefix_lengths - shortest  # (B,): prefix tokens each row is fed step by step
    extra = P - shortest if B else 0  # the steps the longest prefix adds
    was_training = model.training
    model.eval()
    try:
        if not hasattr(model, "decode_steps"):
            raise ConfigError(f"{type(model).__name__} cannot generate: it provides no decode_steps method")
        steps: DecodeSteps = model.decode_steps(input_ids, input_lengths, cfg.max_new_tokens + extra, cfg.use_cache,
                                                target_prefix[:, :shortest])
        rows = torch.arange(B, device=input_ids.device)
        out = input_ids.new_full((B, cfg.max_new_tokens), cfg.pad_id)  # (B, N)
        done = torch.zeros_like(input_lengths, dtype=torch.bool)  # (B,)
        lengths = torch.zeros_like(input_lengths)
        new = None
        for step in range(cfg.max_new_tokens + extra):
            # A finished row still runs (the batch moves in lockstep) on its own choices, which are always in
            # the vocabulary, unlike pad_id may be; only the output gets the padding.
            chosen = choose(steps(new), cfg, generator)  # (B,)
            feeding = step < forced  # (B,): still reading its prefix, so this step's choice is discarded
            if extra:
                new = torch.where(feeding, target_prefix[:, min(shortest + step, P - 1)], chosen)
            else:
                new = chosen
            writing = ~feeding & ~done
            col = lengths.clamp_max(cfg.max_new_tokens - 1)
            out[rows, col] = torch.where(writing, chosen, out[rows, col])
            lengths += writing
            if cfg.eos_id is not None:
                done |= writing & (chosen == cfg.eos_id)
            done |= lengths >= cfg.max_new_tokens
            if stop is not None:
                done |= stop(out[:, : int(lengths.max())]).to(done.device) & ~feeding
            # Without EOS, stop check or ragged prefixes no row ends early: no need to wait for the device.
            if (cfg.eos_id is not None or stop is not None or extra) and bool(done.all()):
                break
        return Generated(out[:, : int(lengths.max()) if B else 0], lengths)
    finally:
        model.train(was_training)


def greedy(model: nn.Module, input_ids: torch.Tensor, input_lengths: torch.Tensor, max_new_tokens: int,
           target_prefix: torch.Tensor | None = None, stop: StopCheck | None = None,
           prefix_lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The architectures' `generate`: greedy decoding, the paper's in every few-shot evaluation."""
    out = generate(model, input_ids, input_lengths, GenerationConfig(max_new_tokens=max_new_tokens),
                   target_prefix=target_prefix, stop=stop, prefix_lengths=prefix_lengths)
    return out.tokens, out.lengths
