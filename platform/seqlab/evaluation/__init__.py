"""Evaluation: the model interface, eval-task harness, `seqlab eval` and `seqlab compare`."""
