"""EOS is something the default objective mixture teaches, for both architectures: without it as a label no
model can learn to stop, and generation would always run to max_new_tokens."""
from __future__ import annotations

import itertools

import pytest
import torch

from seqlab.experiment import compose_config, to_run_config
from seqlab.tokenizer import EOS_ID
from seqlab.train import build_components
from seqlab_plugins.architectures.loss import IGNORE_INDEX


@pytest.mark.parametrize("architecture", ["seq2seq_tiny", "decoder_only"])
def test_eos_is_a_label_of_both_children_of_the_default_mixture(tmp_path, architecture):
    run = to_run_config(compose_config([f"architecture={architecture}", f"cache_dir={tmp_path}"]))
    assert run.objective.name == "mixture"  # the paper's alexatm mixture is the default
    parts = build_components(run)
    parts.datamodule.setup("fit")
    names = parts.module.objective_names
    eos = torch.zeros(len(names), dtype=torch.long)
    labels = torch.zeros(len(names), dtype=torch.long)
    for batch in itertools.islice(iter(parts.datamodule.train_dataloader()), 20):
        for k in range(len(names)):
            rows = batch["labels"][batch["objective"] == k]
            labels[k] += int((rows != IGNORE_INDEX).sum())
            eos[k] += int((rows == EOS_ID).sum())
    by_name = dict(zip(names, eos.tolist()))
    assert by_name["alexatm_denoising"] > 0 and by_name["clm"] > 0, by_name
    # Every denoising row ends with exactly one EOS; the embedded corpus's documents are short lines, so
    # nearly every CLM continuation reaches its document's end.
    denoise = names.index("alexatm_denoising")
    assert eos[denoise] * run.data.seq_len == labels[denoise]
