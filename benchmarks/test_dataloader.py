"""Whole-loader throughput: memory-mapped tokens -> sampler -> objective -> converter -> collated batches.

seqlab's loader (the training DataLoader, built by SeqLabDataModule) against the common naive design measured in
the same run and with the same number of DataLoader workers (0, 1, 2): raw text held in memory, tokenized with
SentencePiece one document at a time as examples are made, packed with a Python list per language, the same
AlexaTM objective and decoder-only converter applied per example, then `default_collate` (which needs equal
shapes, so every example is padded to max_positions). Both read the same text: the embedded corpus (12
languages) copied COPIES times, a few MB; seqlab reads it prepared by `prepare_corpus`.

Throughput is model tokens per second: the sum of batch["num_tokens"], i.e. non-padding positions of the
decoder-only input_ids, over the measured rounds, divided by their total time. The AlexaTM mixture at seq_len
1024 with batch 64: 80% denoising rows (~1.9k model tokens each) and 20% CLM rows (one short document each).
Run with `make bench`; tokens/s and the seqlab/reference ratio land in each benchmark's extra_info.
`benchmarks/profile_loader.py` reuses this module's setup.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import sentencepiece as spm
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from seqlab.config import DataConfig
from seqlab.data.loader import StreamSpec
from seqlab.data.prepare import prepare_corpus
from seqlab.datamodule import SeqLabDataModule
from seqlab.experiment import compose_config, resource_path, to_run_config
from seqlab.interfaces import FeatureConverter, Objective, Rows
from seqlab.registry import OBJECTIVES
from seqlab.tokenizer import PAD_ID, Tokenizer
from seqlab_plugins.architectures.loss import IGNORE_INDEX
from seqlab_plugins.architectures.decoder_only import DecoderOnly, DecoderOnlyConfig

SEQ_LEN = 1024
BATCH_SIZE = 64
# A decoder-only sequence is inputs + targets: a denoising row is 2 * 1024 - 154 tokens, beyond a max_positions
# of seq_len, so the converter gets room for twice the sequence length.
MAX_POSITIONS = 2 * SEQ_LEN
WORKERS = [0, 1, 2]
BATCHES = 20  # batches per timed round
ROUNDS = 10  # the whole module runs in ~20 s on 2 cores
COPIES = 10  # embedded corpus (~0.4 MB of text) x 10: ~4 MB, ~1.3M tokens
ALPHA = 0.5  # language sampling exponent, DataConfig's default
SEED = 0


@dataclass
class LoaderSetup:
    tokenizer: Tokenizer
    text_dir: Path  # <lang>/copy<k>.txt, one document per line
    prepared_dir: Path
    objective: Objective
    converter: FeatureConverter


def write_text_corpus(out: Path, copies: int) -> Path:
    """The embedded corpus copied `copies` times per language, each copy in its own seeded line order, so that
    neither loader sees the same documents in the same sequence twice in a row."""
    rng = np.random.default_rng(SEED)
    for source in sorted(Path(resource_path("corpus")).glob("*/*.txt")):
        lines = [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
        folder = out / source.parent.name
        folder.mkdir(parents=True)
        for k in range(copies):
            (folder / f"copy{k}.txt").write_text("\n".join(lines[i] for i in rng.permutation(len(lines))) + "\n",
                                                 encoding="utf-8")
    return out


def build_setup(root: Path) -> LoaderSetup:
    """Text corpus, its prepared form, the AlexaTM mixture (as `objective=alexatm` composes it) and the
    decoder-only converter, all under `root`."""
    tokenizer = Tokenizer(resource_path("tokenizer/embedded.model"))
    text_dir = write_text_corpus(root / "text", COPIES)
    prepared_dir = root / "prepared"
    prepare_corpus([text_dir], tokenizer.path, prepared_dir, source="embedded", workers=os.cpu_count() or 1,
                   progress=False)
    run = to_run_config(compose_config(["objective=alexatm"]))
    objective = OBJECTIVES.build(run.objective, tokenizer=tokenizer, seq_len=SEQ_LEN)
    converter = DecoderOnly.feature_converter(DecoderOnlyConfig(name="decoder_only", max_positions=MAX_POSITIONS),
                                              pad_id=tokenizer.pad_id)
    return LoaderSetup(tokenizer, text_dir, prepared_dir, objective, converter)


def seqlab_loader(setup: LoaderSetup, num_workers: int) -> DataLoader:
    """The DataLoader `seqlab train` uses (batch_size=None, batches collated by the dataset)."""
    data = DataConfig(seq_len=SEQ_LEN, batch_size=BATCH_SIZE, alpha=ALPHA, num_workers=num_workers)
    spec = StreamSpec(setup.prepared_dir, data, separator_id=setup.tokenizer.token_id("[DOC]"), seed=SEED)
    return SeqLabDataModule(spec, setup.objective, setup.converter).train_dataloader()


class TextOnTheFly(IterableDataset):
    """The naive reference: one example at a time from raw text, endless, a differently seeded stream per worker.

    Each example follows the objective's own one-row plan (a packed slice of seq_len tokens or one document),
    draws its language with alpha sampling over character counts, and is noised and converted by the same
    objective and converter as seqlab's batches, on a batch of one.
    """

    def __init__(self, documents: dict[str, list[str]], tokenizer_path: Path, objective: Objective,
                 converter: FeatureConverter, separator_id: int):
        self.documents = documents
        self.tokenizer_path = tokenizer_path
        self.objective = objective
        self.converter = converter
        self.separator_id = separator_id

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        rng = np.random.default_rng((SEED, info.id if info else 0))
        sp = spm.SentencePieceProcessor(model_file=str(self.tokenizer_path))
        languages = sorted(self.documents)
        characters = np.array([sum(map(len, self.documents[lang])) for lang in languages], dtype=np.float64)
        q = characters**ALPHA / (characters**ALPHA).sum()
        buffers: dict[str, list[int]] = {lang: [] for lang in languages}
        while True:
            plan = self.objective.plan(1, rng)
            lang = languages[rng.choice(len(languages), p=q)]
            docs, length = self.documents[lang], int(plan.length[0])
            if plan.document[0]:
                tokens = sp.encode(docs[rng.integers(len(docs))], out_type=int)[:length]
            else:
                buffer = buffers[lang]
                while len(buffer) < length:
                    buffer.extend(sp.encode(docs[rng.integers(len(docs))], out_type=int))
                    buffer.append(self.separator_id)
                tokens = buffer[:length]
                del buffer[:length]
            rows = Rows(np.array([tokens], dtype=np.int64), np.array([len(tokens)]), plan)
            features = self.objective(rows, rng)
            yield fixed_width(self.converter(features), int(features.objective[0]))


def fixed_width(batch: dict[str, Any], objective: int) -> dict[str, Any]:
    """A one-row converter batch -> one example padded to MAX_POSITIONS, as `default_collate` stacks only
    equal shapes."""
    pad = MAX_POSITIONS - batch["input_ids"].shape[1]
    return {"input_ids": F.pad(batch["input_ids"][0], (0, pad), value=PAD_ID),
            "labels": F.pad(batch["labels"][0], (0, pad), value=IGNORE_INDEX),
            "lengths": batch["lengths"][0], "prefix_lengths": batch["prefix_lengths"][0],
            "num_tokens": batch["num_tokens"], "objective": objective}


def reference_loader(setup: LoaderSetup, num_workers: int) -> DataLoader:
    documents = {folder.name: [line for path in sorted(folder.glob("*.txt"))
                               for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
                 for folder in sorted(setup.text_dir.iterdir())}
    dataset = TextOnTheFly(documents, setup.tokenizer.path, setup.objective, setup.converter,
                           setup.tokenizer.token_id("[DOC]"))
    # The same prefetching as seqlab's loader; default collate_fn.
    return DataLoader(dataset, batch_size=BATCH_SIZE, num_workers=num_workers,
                      prefetch_factor=4 if num_workers else None)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> LoaderSetup:
    return build_setup(tmp_path_factory.mktemp("loader"))


@pytest.fixture(scope="module")
def throughput() -> dict[tuple[str, int], float]:
    """tokens/s of each (implementation, workers) measured in this module, for the ratios."""
    return {}


LOADERS = {"seqlab": seqlab_loader, "reference": reference_loader}


# `workers` outermost so that each worker count runs seqlab, then the reference that takes the ratio.
@pytest.mark.parametrize("implementation", list(LOADERS))
@pytest.mark.parametrize("workers", WORKERS)
def test_loader_throughput(benchmark, setup, throughput, workers, implementation):
    batches = iter(LOADERS[implementation](setup, workers))
    # Worker start-up (fork, tokenizer load, memory maps) is not timed: the iterator is created and its first
    # batch taken here; the warm-up round then drains the batches the workers prefetched meanwhile, so the
    # measured rounds see the steady state.
    first = next(batches)
    assert {"input_ids", "labels", "lengths", "prefix_lengths", "num_tokens", "objective"} <= first.keys()
    assert first["input_ids"].shape[0] == BATCH_SIZE and first["input_ids"].dtype == torch.int64
    tokens_per_round: list[int] = []

    def take_round() -> None:
        tokens_per_round.append(sum(int(torch.as_tensor(next(batches)["num_tokens"]).sum()) for _ in range(BATCHES)))

    benchmark.group = f"loader workers={workers} seq_len={SEQ_LEN} batch={BATCH_SIZE}"
    benchmark.pedantic(take_round, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    batches = None  # dropping the iterator shuts its workers down before the next benchmark starts its own
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing measured
        return
    # Rounds of one pipeline are not independent (queues carry over), so total tokens / total time.
    tokens = sum(tokens_per_round[-ROUNDS:])
    throughput[implementation, workers] = tokens / benchmark.stats.stats.total
    benchmark.extra_info["tokens_per_s"] = round(throughput[implementation, workers])
    benchmark.extra_info["model_tokens_per_round"] = tokens // ROUNDS
    benchmark.extra_info["num_workers"] = workers
    if implementation == "reference" and ("seqlab", workers) in throughput:
        speedup = throughput["seqlab", workers] / throughput["reference", workers]
        benchmark.extra_info["seqlab_speedup"] = round(speedup, 2)
