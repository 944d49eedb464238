"""The Transformer components both architectures are built from, chosen by config fields.

One config base for both layouts means a comparison can hold every component equal and vary only the layout
(encoder-decoder against decoder-only), or vary one component at a time. The defaults are the paper's: pre-LN
with LayerNorm, GELU feed-forward, learned positions, biases everywhere, multi-head attention.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from seqlab.config import ArchitectureConfig
from seqlab.errors import require

NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu", "geglu")  # gated variants (Shazeer 2020) have three matrices instead of two
POSITIONS = ("learned", "rope", "t5_relative_bias")
ATTENTIONS = ("sdpa", "flex")  # flex.py: block masks where FlexAttention has kernels, else SDPA


@dataclass
class TransformerConfig(ArchitectureConfig):
    d_model: int = 128
    n_heads: int = 4
    # Key/value heads: n_heads is multi-head attention, 1 multi-query, anything dividing n_heads grouped-query.
    # None: n_heads.
    n_kv_heads: Optional[int] = None
    d_ff: Optional[int] = None  # None: 4 * d_model for gelu; 8/3 * d_model (to a multiple of 8) for gated MLPs
    max_positions: int = 1024  # longest sequence a stack reads (position tables, rotary tables, length checks)
    dropout: float = 0.0
    norm: str = "layernorm"  # layernorm | rmsnorm
    norm_eps: float = 1e-5
    mlp: str = "gelu"  # gelu (exact erf) | swiglu (SiLU gate, Llama) | geglu (tanh-GELU gate, T5 v1.1, Gemma)
    positions: str = "learned"  # learned | rope | t5_relative_bias
    rope_theta: float = 10000.0  # rotary base (positions=rope)
    relative_buckets: int = 32  # positions=t5_relative_bias: buckets of relative distance, per stack
    relative_max_distance: int = 128  # distances beyond this share the last bucket
    bias: bool = True  # biases on every projection and on LayerNorm (GPT-2, BART); false: none (Llama, T5 v1.1)
    qk_norm: bool = False  # RMSNorm over each head's queries and keys before attention (OLMo 2, Qwen3)
    tie_embeddings: bool = True  # the LM head reuses the (decoder's) token embedding matrix
    # PaLM's auxiliary loss z_loss * log(Z)^2 per labelled token, keeping the softmax normaliser near 1; 0: off.
    # It is added to the training objective only: logged and validation losses stay pure cross-entropy.
    z_loss: float = 0.0
    # Labelled positions whose logits the loss computes at a time, in forward and backward: memory O(this x V)
    # instead of O(positions x V), for one more vocabulary matmul in backward. None: all at once.
    loss_chunk_size: Optional[int] = None
    attention: str = "sdpa"  # sdpa | flex (FlexAttention block masks: see flex.py for where they run)
    init_std: float = 0.02
    activation_checkpointing: bool = False  # recompute each block in backward: memory for compute

    def __post_init__(self) -> None:
        for key in ("d_model", "n_heads", "max_positions"):
            require(getattr(self, key) >= 1, f"architecture.{key}", getattr(self, key), "must be >= 1")
        require(self.d_model % self.n_heads == 0, "architecture.n_heads", self.n_heads,
                f"must divide architecture.d_model={self.d_model}")
        require(self.n_kv_heads is None or (self.n_kv_heads >= 1 and self.n_heads % self.n_kv_heads == 0),
                "architecture.n_kv_heads", self.n_kv_heads,
                f"must divide architecture.n_heads={self.n_heads} (1: multi-query; null: n_heads)")
        require(self.d_ff is None or self.d_ff >= 1, "architecture.d_ff", self.d_ff, "must be >= 1 or null")
        require(0.0 <= self.dropout < 1.0, "architecture.dropout", self.dropout, "must be in [0, 1)")
        require(self.norm in NORMS, "architecture.norm", self.norm, f"must be one of {', '.join(NORMS)}")
        require(self.norm_eps > 0, "architecture.norm_eps", self.norm_eps, "must be > 0")
        require(self.mlp in MLPS, "architecture.mlp", self.mlp, f"must be one of {', '.join(MLPS)}")
        require(self.positions in POSITIONS, "architecture.positions", self.positions,
                f"must be one of {', '.join(POSITIONS)}")
        require(self.positions != "rope" or self.head_dim % 2 == 0, "architecture.positions", self.positions,
                f"rope rotates pairs of features: the head size d_model / n_heads = {self.head_dim} must be even")
        require(self.rope_theta > 0, "architecture.rope_theta", self.rope_theta, "must be > 0")
        require(self.relative_buckets >= 2, "architecture.relative_buckets", self.relative_buckets, "must be >= 2")
        require(self.relative_max_distance > self.relative_buckets // 2, "architecture.relative_max_distance",
                self.relative_max_distance, f"must exceed half of relative_buckets={self.relative_buckets}")
        require(self.z_loss >= 0 and math.isfinite(self.z_loss), "architecture.z_loss", self.z_loss, "must be >= 0")
        require(self.loss_chunk_size is None or self.loss_chunk_size >= 1, "architecture.loss_chunk_size",
                self.loss_chunk_size, "must be >= 1 or null")
        require(self.init_std > 0, "architecture.init_std", self.init_std, "must be > 0")
        require(self.attention in ATTENTIONS, "architecture.attention", self.attention,
                f"must be one of {', '.join(ATTENTIONS)}")
        if self.attention == "flex":
            require(self.positions != "t5_relative_bias", "architecture.attention", self.attention,
                    "flex takes masks, not score biases: use positions=learned or rope, or attention=sdpa")
            require(self.dropout == 0, "architecture.attention", self.attention,
                    f"flex has no attention dropout: needs architecture.dropout=0 (got {self.dropout})")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def gated(self) -> bool:
        return self.mlp != "gelu"

    @property
    def ffn_dim(self) -> int:
        """The feed-forward width: d_ff, or the default that gives gated and plain MLPs equal parameters."""
        if self.d_ff is not None:
            return self.d_ff
        return 8 * math.ceil(8 * self.d_model / 3 / 8) if self.gated else 4 * self.d_model

    def widened(self, width: float) -> dict:
        """Fields of this config `width` times wider: heads (and key/value heads) kept, d_model a multiple of
        them, d_ff scaled when it was set."""
        d_model = max(self.n_heads, round(self.d_model * width / self.n_heads) * self.n_heads)
        if self.positions == "rope" and (d_model // self.n_heads) % 2:
            d_model += self.n_heads  # rope needs an even head size
        return {"d_model": d_model, "d_ff": None if self.d_ff is None else max(1, round(self.d_ff * width))}
