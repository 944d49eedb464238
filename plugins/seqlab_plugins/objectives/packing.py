"""Packing several causal-LM examples into one row (seqio's packed feature converters are the idea).

A packed slice of the stream holds several documents separated by `[DOC]`. Each document piece becomes its
own example: `[CLM]` + its first 20-80% as inputs, the rest (+ EOS when the piece reaches its document's end)
as targets. The examples' inputs are laid end to end in the input row and their targets in the target row,
and segment ids (1, 2, ...) say which example every position belongs to, so the architectures keep attention
and positions within an example. Everything is vectorised over (row, token): no Python loop per example.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PackSpec:
    min_prefix: float
    max_prefix: float
    input_width: int  # capacity of the input row
    target_width: int  # capacity of the target row
    mode_id: int | None  # [CLM] before each example's inputs; None: no mode token
    eos_id: int | None  # EOS after a continuation that reaches its document's end; None: no EOS
    separator_id: int
    pad_id: int


@dataclass
class Packed:
    inputs: np.ndarray  # (B, Wi) int64, right-padded
    input_lengths: np.ndarray  # (B,)
    input_segments: np.ndarray  # (B, Wi): example number (1, 2, ...), 0 on padding
    targets: np.ndarray  # (B, Wt)
    target_lengths: np.ndarray  # (B,)
    target_segments: np.ndarray  # (B, Wt)
    read_tokens: int  # non-separator tokens of the rows
    used_tokens: int  # of those, the ones placed in an example (the rest did not fit)


def _scatter(shape: tuple[int, int], fill: int, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A (B, W) array of `fill` with values written at (rows, cols), where cols < W."""
    out = np.full(shape, fill, dtype=np.int64)
    keep = cols < shape[1]
    out[rows[keep], cols[keep]] = values[keep]
    return out


def pack_clm(tokens: np.ndarray, spec: PackSpec, rng: np.random.Generator) -> Packed:
    """tokens (B, R): full packed slices -> CLM examples packed into (B, input_width) and (B, target_width).

    Examples are placed in stream order while the input and target rows can take them; the first example that
    overflows the target row is cut there (its continuation goes on, so it gets no EOS), and the pieces after
    it are not used. A piece of a single token cannot be split into a prefix and a continuation and is not
    used either.
    """
    B, R = tokens.shape
    P = R + 1  # piece slots per row: at most one more than separators
    is_sep = tokens == spec.separator_id  # (B, R)
    piece = np.cumsum(is_sep, axis=1) - is_sep  # (B, R): the piece each token belongs to (a separator ends its)
    real = ~is_sep
    flat = (np.arange(B)[:, None] * P + piece)[real]  # (N,) global piece slot of each real token
    n_read = np.bincount(flat, minlength=B * P).reshape(B, P)  # (B, P) tokens per piece
    first = np.cumsum(n_read, axis=1) - n_read  # (B, P) rank of each piece's first token among the row's tokens
    rank = (np.cumsum(real, axis=1) - 1)[real]  # (N,) rank of each real token in its row
    rows = np.repeat(np.arange(B), real.sum(axis=1))  # (N,)
    j = rank - first.reshape(-1)[flat]  # (N,) index of the token within its piece

    fraction = rng.uniform(spec.min_prefix, spec.max_prefix, size=(B, P))
    mode = int(spec.mode_id is not None)
    ends_doc = np.arange(P)[None, :] < is_sep.sum(axis=1)[:, None]  # (B, P): separator i follows piece i
    Wi, Wt = spec.input_width, spec.target_width

    def longest(room_in: np.ndarray | int, room_out: np.ndarray | int) -> np.ndarray:
        """(B, P) the most tokens of a piece whose prefix and continuation, at its split fraction, fit the rooms."""
        with np.errstate(divide="ignore"):
            return np.floor(np.minimum((room_in - mode) / fraction, room_out / (1 - fraction))).astype(np.int64)

    def lay_out(n: np.ndarray):
        complete = ends_doc & (n == n_read)  # reaches its document's end, not cut
        split = np.clip(np.floor(fraction * n).astype(np.int64), 1, np.maximum(n - 1, 1))  # (B, P)
        split = np.minimum(split, Wi - mode)
        eos = complete & (spec.eos_id is not None)
        valid = n >= 2
        in_len = np.where(valid, mode + split, 0)  # (B, P)
        out_len = np.where(valid, n - split + eos, 0)
        in_end, out_end = np.cumsum(in_len, axis=1), np.cumsum(out_len, axis=1)
        # Kept: the whole input fits and at least one target position is left; both ends only grow along the
        # row, so the kept pieces are the row's first ones.
        kept = valid & (in_end <= Wi) & (out_end - out_len < Wt)  # (B, P)
        return split, eos, in_len, out_len, in_end, out_end, kept

    # A long piece keeps its beginning, as much as lets it fill both rows at its split fraction (an unpacked
    # row cuts at seq_len and leaves both rows half empty).
    n = np.minimum(n_read, longest(Wi, Wt))  # (B, P)
    split, eos, in_len, out_len, in_end, out_end, kept = lay_out(n)
    # The first piece that overflows is cut to the room left, like a document cut at a row's end.
    pending = (n >= 2) & ~kept
    first_out = np.argmax(pending, axis=1)  # (B,)
    has = pending[np.arange(B), first_out]
    used_in, used_out = (in_len * kept).sum(axis=1), (out_len * kept).sum(axis=1)  # (B,)
    room = longest((Wi - used_in)[:, None], (Wt - used_out)[:, None])[np.arange(B), first_out]
    cut_b = np.flatnonzero(has)
    n[cut_b, first_out[cut_b]] = np.minimum(n[cut_b, first_out[cut_b]], np.maximum(room[cut_b], 0))
    split, eos, in_len, out_len, in_end, out_end, kept = lay_out(n)
    in_off, out_off = in_end - in_len, out_end - out_len
    segment = np.cumsum(kept, axis=1) * kept  # (B, P): 1, 2, ... on kept pieces

    tok, p_flat = tokens[real], flat  # (N,) each
    use = kept.reshape(-1)[p_flat] & (j < n.reshape(-1)[p_flat])  # (N,) token placed in an example
    s = split.reshape(-1)[p_flat]
    seg = segment.reshape(-1)[p_flat]
    to_input = use & (j < s)
    to_target = use & (j >= s)
    in_cols = in_off.reshape(-1)[p_flat] + mode + j
    out_cols = out_off.reshape(-1)[p_flat] + j - s
    Wi, Wt = spec.input_width, spec.target_width
    inputs = _scatter((B, Wi), spec.pad_id, rows[to_input], in_cols[to_input], tok[to_input])
    input_segments = _scatter((B, Wi), 0, rows[to_input], in_cols[to_input], seg[to_input])
    targets = _scatter((B, Wt), spec.pad_id, rows[to_target], out_cols[to_target], tok[to_target])
    target_segments = _scatter((B, Wt), 0, rows[to_target], out_cols[to_target], seg[to_target])
    kb, kp = np.nonzero(kept)  # (K,) each: the kept examples
    if mode:
        inputs[kb, in_off[kb, kp]] = spec.mode_id
        input_segments[kb, in_off[kb, kp]] = segment[kb, kp]
    if spec.eos_id is not None:
        eb, ep = kb[eos[kb, kp]], kp[eos[kb, kp]]  # kept examples that end with EOS
        cols = out_end[eb, ep] - 1
        fits = cols < Wt  # the EOS of an example cut at the row's end is not written
        targets[eb[fits], cols[fits]] = spec.eos_id
        target_segments[eb[fits], cols[fits]] = segment[eb[fits], ep[fits]]
    input_lengths = (input_segments > 0).sum(axis=1)
    target_lengths = (target_segments > 0).sum(axis=1)
    wi, wt = int(input_lengths.max(initial=1)), int(target_lengths.max(initial=1))
    return Packed(inputs[:, :wi], input_lengths, input_segments[:, :wi], targets[:, :wt], target_lengths,
                  target_segments[:, :wt], int(real.sum()), int(use.sum()))
