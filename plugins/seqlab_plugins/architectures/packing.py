"""Converter helpers for packed rows: positions that restart with every example, and where examples start.

A packed row holds several examples, numbered by segment ids (1, 2, ...; 0 on padding) that the objective
wrote. Both architectures restart positions at each example and keep attention inside it (attention.py's
segment_mask), so an example scores in a packed row what it scores alone.
"""
from __future__ import annotations

import numpy as np


def segment_starts(segments: np.ndarray) -> np.ndarray:
    """(B, L) segment ids -> (B, L) bool, True on the first position of every example."""
    previous = np.concatenate([np.zeros((segments.shape[0], 1), segments.dtype), segments[:, :-1]], axis=1)
    return (segments != previous) & (segments > 0)


def segment_positions(segments: np.ndarray) -> np.ndarray:
    """(B, L) segment ids -> (B, L) int64 position of each token within its example (0 on padding)."""
    cols = np.broadcast_to(np.arange(segments.shape[1]), segments.shape)
    start = np.maximum.accumulate(np.where(segment_starts(segments), cols, 0), axis=1)  # (B, L)
    return np.where(segments > 0, cols - start, 0).astype(np.int64)
