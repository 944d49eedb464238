"""seqlab: plugin-based platform for LLM pre-training studies (seq2seq vs decoder-only)."""

__version__ = "0.1.0"
