"""Data pipeline: raw corpora (corpus), the prepared on-disk format (store), `seqlab data prepare` (prepare, cli)."""
