"""Training steps on real AlexaTM-mixture batches, causal-LM documents packed (`pack_documents`) or one per row.

Batches come from the training loader on the embedded corpus (as `benchmarks/test_packing.py` draws them:
`objective=alexatm`, 12 languages, short documents), BATCHES of them per round, converted for the model, the same
batches for every round. One round trains on each batch once (forward, backward, AdamW), in float32, so rows
of both objectives and of every width are in the timing. Models: `seq2seq_tiny` and a decoder-only prefix-LM of
its size (4 layers, the default baseline's layout) with positions for both rows. Reported in extra_info:
- target_tokens_per_s: labelled target tokens trained on per second, the useful throughput (`train/
  target_tokens_per_s` in training) that packing raises;
- real_fraction: real tokens over positions computed;
- packed_vs_unpacked: target_tokens_per_s over the unpacked row's.
Run with `make bench`.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from test_packing import corpus  # noqa: F401 (the prepared embedded corpus, a module fixture)
from test_packing import positions
from test_train_step import decoder_only_config, parameters, train_step

from seqlab.config import DataConfig
from seqlab.data.loader import PackedBatches, StreamSpec
from seqlab.experiment import compose_config, to_run_config
from seqlab.registry import ARCHITECTURES, OBJECTIVES, load_plugins
from seqlab_plugins.architectures.loss import IGNORE_INDEX

BATCH_SIZE = 8
BATCHES = 8  # per round
ROUNDS = {128: 5, 1024: 2}
MODELS = ["seq2seq", "decoder_only"]


def model_config(model_kind: str, seq_len: int):
    tiny = replace(ARCHITECTURES.preset("seq2seq_tiny"), max_positions=seq_len)
    if model_kind == "seq2seq":
        return tiny
    return replace(decoder_only_config(tiny), max_positions=2 * seq_len, prefix_lm=True)


@pytest.fixture(scope="module")
def target_throughput() -> dict[tuple[str, int, bool], float]:
    """Target tokens/s of each (model, seq_len, packed) measured in this module, for the ratios."""
    return {}


@pytest.mark.parametrize("model_kind", MODELS)
@pytest.mark.parametrize("seq_len", sorted(ROUNDS))
@pytest.mark.parametrize("pack", [False, True], ids=["unpacked", "packed"])
def test_train_step_packing(benchmark, corpus, target_throughput, model_kind, seq_len, pack):  # noqa: F811
    load_plugins()
    tokenizer, prepared = corpus
    run = to_run_config(compose_config(["objective=alexatm",
                                        f"objective.children.1.objective.pack_documents={str(pack).lower()}"]))
    objective = OBJECTIVES.build(run.objective, tokenizer=tokenizer, seq_len=seq_len)
    cfg = model_config(model_kind, seq_len)
    converter = ARCHITECTURES.get(cfg.name).factory.feature_converter(cfg, pad_id=tokenizer.pad_id)
    spec = StreamSpec(prepared, DataConfig(seq_len=seq_len, batch_size=BATCH_SIZE), tokenizer.token_id("[DOC]"), 0)
    stream = iter(PackedBatches(spec, "train", objective, converter))
    batches = [next(stream) for _ in range(BATCHES)]
    for batch in batches:  # the model's inputs only
        for key in ("objective", "feature_lengths", "sampler_state"):
            batch.pop(key)
    real, computed = (np.concatenate(x) for x in zip(*(positions(batch, model_kind) for batch in batches)))
    targets = sum(int((batch["labels"] != IGNORE_INDEX).sum()) for batch in batches)

    torch.manual_seed(0)
    model = ARCHITECTURES.build(cfg, vocab_size=tokenizer.vocab_size)
    model.init_weights()
    current: list[dict] = []

    def loss() -> torch.Tensor:
        out = model.loss(current[0])
        return out.loss_sum.sum() / out.tokens.sum().clamp_min(1)

    step = train_step(model, loss, "fp32")

    def one_round() -> None:
        for batch in batches:
            current[:] = [batch]
            step()

    benchmark.group = f"train step on alexatm batches, {model_kind} tiny, seq_len {seq_len}, batch {BATCH_SIZE}"
    benchmark.pedantic(one_round, rounds=ROUNDS[seq_len], iterations=1, warmup_rounds=1)
    benchmark.extra_info["real_fraction"] = round(float(real.sum() / computed.sum()), 4)
    benchmark.extra_info["target_tokens_per_round"] = targets
    benchmark.extra_info["parameters"] = parameters([model])
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing measured
        return
    target_throughput[model_kind, seq_len, pack] = targets / benchmark.stats.stats.median
    benchmark.extra_info["target_tokens_per_s"] = round(target_throughput[model_kind, seq_len, pack])
    if pack and (model_kind, seq_len, False) in target_throughput:
        benchmark.extra_info["packed_vs_unpacked"] = round(
            target_throughput[model_kind, seq_len, True] / target_throughput[model_kind, seq_len, False], 2)
