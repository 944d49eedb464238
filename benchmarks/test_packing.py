"""Padding under the AlexaTM mixture, with causal-LM documents packed (`pack_documents`) and without.

For each seq_len (128, 1024) and each architecture's converter, batches of the `objective=alexatm` mixture are
drawn by the training loader from the embedded corpus copied COPIES times (12 languages, short documents),
prepared as `seqlab train` prepares it. Reported in extra_info:
- real_fraction: real tokens / positions the model computes (encoder + decoder rows, or the one decoder-only
  row), the padding the model pays for;
- clm_real_fraction: the same over the causal-LM rows only;
- batches/s of the loader (one process), the cost of packing in the data path.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from test_dataloader import write_text_corpus

from seqlab.config import DataConfig
from seqlab.data.loader import PackedBatches, StreamSpec
from seqlab.data.prepare import prepare_corpus
from seqlab.experiment import compose_config, resource_path, to_run_config
from seqlab.registry import OBJECTIVES
from seqlab.tokenizer import Tokenizer
from seqlab_plugins.architectures.decoder_only import DecoderOnly, DecoderOnlyConfig
from seqlab_plugins.architectures.seq2seq import Seq2Seq, Seq2SeqConfig

COPIES = 4
BATCH_SIZE = 32
BATCHES = 10  # per round
ROUNDS = 3


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Tokenizer, Path]:
    root = tmp_path_factory.mktemp("packing")
    tokenizer = Tokenizer(resource_path("tokenizer/embedded.model"))
    text = write_text_corpus(root / "text", COPIES)
    prepare_corpus([text], tokenizer.path, root / "prepared", source="embedded", workers=os.cpu_count() or 1,
                   progress=False)
    return tokenizer, root / "prepared"


def converter(arch: str, seq_len: int, pad_id: int):
    if arch == "seq2seq":
        return Seq2Seq.feature_converter(Seq2SeqConfig(name="seq2seq", max_positions=seq_len), pad_id=pad_id)
    return DecoderOnly.feature_converter(DecoderOnlyConfig(name="decoder_only", max_positions=2 * seq_len),
                                         pad_id=pad_id)


def positions(batch: dict, arch: str) -> tuple[np.ndarray, np.ndarray]:
    """(B,) real tokens and (B,) computed positions of each row of a converted batch."""
    if arch == "seq2seq":
        enc, dec = batch["input_ids"].numpy(), batch["decoder_input_ids"].numpy()
        real = (enc != 0).sum(axis=1) + (dec != 0).sum(axis=1)  # pad id 0; BOS is not 0
        return real, np.full(len(enc), enc.shape[1] + dec.shape[1])
    ids = batch["input_ids"].numpy()
    return (ids != 0).sum(axis=1), np.full(len(ids), ids.shape[1])


@pytest.mark.parametrize("arch", ["seq2seq", "decoder_only"])
@pytest.mark.parametrize("pack", [False, True], ids=["unpacked", "packed"])
@pytest.mark.parametrize("seq_len", [128, 1024])
def test_padding_fraction(benchmark, corpus, seq_len, pack, arch):
    tokenizer, prepared = corpus
    run = to_run_config(compose_config(["objective=alexatm",
                                        f"objective.children.1.objective.pack_documents={str(pack).lower()}"]))
    objective = OBJECTIVES.build(run.objective, tokenizer=tokenizer, seq_len=seq_len)
    spec = StreamSpec(prepared, DataConfig(seq_len=seq_len, batch_size=BATCH_SIZE), tokenizer.token_id("[DOC]"), 0)
    batches = iter(PackedBatches(spec, "train", objective, converter(arch, seq_len, tokenizer.pad_id)))
    clm = objective.names.index("clm")
    seen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def take_round() -> None:
        for _ in range(BATCHES):
            batch = next(batches)
            seen.append((*positions(batch, arch), batch["objective"].numpy()))

    benchmark.group = f"packing seq_len={seq_len} batch={BATCH_SIZE}"
    benchmark.pedantic(take_round, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    real, computed, task = (np.concatenate(x) for x in zip(*seen))
    assert (real <= computed).all()
    benchmark.extra_info["real_fraction"] = round(float(real.sum() / computed.sum()), 4)
    benchmark.extra_info["clm_real_fraction"] = round(float(real[task == clm].sum() / computed[task == clm].sum()), 4)
    if benchmark.stats is not None:
        benchmark.extra_info["batches_per_s"] = round(BATCHES / benchmark.stats.stats.mean, 1)
