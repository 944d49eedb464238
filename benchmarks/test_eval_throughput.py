"""Evaluation throughput: ranking and generation examples/s, seqlab against lm-evaluation-harness's `hf` backend,
on the same model, the same requests, in the same run.

The model: a random causal decoder-only seqlab model (d_model 256, 4 layers, 256 positions) and its GPT-2
export, so all four paths compute the same function (the scores agree within 1e-4, tests/integration/
test_lm_harness.py). The task: 96 multiple-choice items, prompts of 8 to 60 words and 4 candidates of 1 to 6
words (lm-eval's `loglikelihood` requests, the candidate after a space), then 32 of the prompts continued
greedily for up to 24 tokens (the random model never says "." or EOS, so every row runs to the limit). Batch
16 everywhere, torch's default thread count, in float32 and in bfloat16 (weights and activations).

Rows (`path`):
- lm_eval_hf: lm-eval 0.4.13's HFLM on the export, `loglikelihood` / `generate_until`: the reference.
- lm_eval_seqlab: the same lm-eval calls through seqlab's backend (`SeqlabLM`) on the seqlab model.
- seqlab_native: seqlab's own harness calls (`score_continuations`, `generate`) on the seqlab model.
- seqlab_hf: the same harness calls on the export through seqlab's `HFModel`.
- test_denoising_generation: the same prompts in AlexaTM's denoising mode (the prompt forced again at the start
  of the output, so every row's forced prefix has its own length) on the seqlab model: `batched` (rows of
  any prefix length together) against `one_per_batch`, the reference, which is what grouping rows by prefix
  length amounts to when every prompt length differs.
extra_info: examples_per_s, and vs_lm_eval_hf, a path's examples/s over lm_eval_hf's in the same dtype
(measured first).
"""
from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
lm_eval = pytest.importorskip("lm_eval")
pytest.importorskip("transformers")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402

from seqlab.evaluation.hf import HFModel  # noqa: E402
from seqlab.evaluation.likelihood import Budget, build_request, score_continuations  # noqa: E402
from seqlab.evaluation.lm_harness import SeqlabLM  # noqa: E402
from seqlab.evaluation.model import SeqlabModel  # noqa: E402
from seqlab.experiment import resource_path  # noqa: E402
from seqlab.registry import ARCHITECTURES, load_plugins  # noqa: E402
from seqlab.tokenizer import EOS_ID, Tokenizer  # noqa: E402
from seqlab_plugins.architectures.decoder_only import DecoderOnlyConfig  # noqa: E402
from seqlab_plugins.architectures.export import export_model  # noqa: E402

BATCH_SIZE = 16
ITEMS, CHOICES, GENERATED = 96, 4, 32
MAX_NEW, STOP = 24, "."
WORDS = ("the council met on monday and voted for a new budget while people in the town waited outside "
         "rain fell over the river so the bridge was closed until evening when workers came back").split()
PATHS = ["lm_eval_hf", "lm_eval_seqlab", "seqlab_native", "seqlab_hf"]  # the reference first
REFERENCE: dict[tuple[str, str], float] = {}


def sentence(rng: np.random.Generator, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(low, high + 1))))


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def setup(request, tmp_path_factory):
    dtype = request.param
    load_plugins()
    tokenizer = Tokenizer(resource_path("tokenizer/embedded.model"))
    cfg = DecoderOnlyConfig(name="decoder_only", d_model=256, n_layers=4, n_heads=4, d_ff=1024, max_positions=256,
                            prefix_lm=False)
    torch.manual_seed(0)
    model = ARCHITECTURES.build(cfg, vocab_size=tokenizer.vocab_size)
    model.init_weights()
    export = export_model(model.eval(), tokenizer, tmp_path_factory.mktemp("gpt2"))
    ours = SeqlabModel(copy.deepcopy(model).to(getattr(torch, dtype)), tokenizer, cfg, name="bench",
                       batch_size=BATCH_SIZE)
    rng = np.random.default_rng(0)
    prompts = [sentence(rng, 8, 60) for _ in range(ITEMS)]
    choices = [[sentence(rng, 1, 6) for _ in range(CHOICES)] for _ in range(ITEMS)]
    backends = {
        "lm_eval_hf": HFLM(pretrained=str(export), batch_size=BATCH_SIZE, device="cpu", dtype=dtype,
                           prefix_token_id=EOS_ID),
        "lm_eval_seqlab": SeqlabLM(model=ours, mode="clm", mode_token=False, batch_size=BATCH_SIZE),
        "seqlab_native": ours,
        "seqlab_hf": HFModel.from_pretrained(export, batch_size=BATCH_SIZE, dtype=getattr(torch, dtype)),
    }
    return dtype, backends, prompts, choices


def rank(backend, prompts: list[str], choices: list[list[str]]) -> None:
    if isinstance(backend, (HFLM, SeqlabLM)):
        requests = [Instance("loglikelihood", {}, (p, " " + c), i) for i, (p, cs) in enumerate(zip(prompts, choices))
                    for c in cs]
        backend.loglikelihood(requests, disable_tqdm=True)
    else:
        score_continuations(backend, "bench", "clm", prompts, [[" " + c for c in cs] for cs in choices],
                            Budget(backend, "clm", 0), [], progress=False)


def generate(backend, prompts: list[str]) -> None:
    if isinstance(backend, (HFLM, SeqlabLM)):
        args = {"until": [STOP], "max_gen_toks": MAX_NEW, "do_sample": False}
        backend.generate_until([Instance("generate_until", {}, (p, args), i) for i, p in enumerate(prompts)],
                               disable_tqdm=True)
    else:
        requests = [build_request(ids, [], "clm", (), 256 - MAX_NEW)[0] for ids in backend.encode(prompts)]
        backend.generate(requests, MAX_NEW, stop=[STOP])


@pytest.mark.parametrize("kind", ["rank", "generate"])
@pytest.mark.parametrize("path", PATHS)
def test_eval_throughput(benchmark, setup, kind, path):
    dtype, backends, prompts, choices = setup
    backend = backends[path]
    if kind == "rank":
        benchmark.pedantic(rank, args=(backend, prompts, choices), rounds=3, iterations=1, warmup_rounds=1)
        examples = ITEMS
    else:
        benchmark.pedantic(generate, args=(backend, prompts[:GENERATED]), rounds=3, iterations=1, warmup_rounds=1)
        examples = GENERATED
    rate = examples / benchmark.stats.stats.mean
    benchmark.extra_info["examples_per_s"] = round(rate, 1)
    benchmark.extra_info["dtype"] = dtype
    if path == PATHS[0]:
        REFERENCE[kind, dtype] = rate
    elif (kind, dtype) in REFERENCE:
        benchmark.extra_info["vs_lm_eval_hf"] = round(rate / REFERENCE[kind, dtype], 2)


@pytest.mark.parametrize("batching", ["one_per_batch", "batched"])  # the reference first
def test_denoising_generation(benchmark, setup, batching):
    dtype, backends, prompts, _ = setup
    ours: SeqlabModel = backends["seqlab_native"]
    requests = [build_request(ids, [], "denoising", (), (256 - MAX_NEW) // 2)[0]
                for ids in ours.encode(prompts[:GENERATED])]
    ours.batch_size = 1 if batching == "one_per_batch" else BATCH_SIZE
    try:
        benchmark.pedantic(ours.generate, args=(requests, MAX_NEW), kwargs={"stop": [STOP]}, rounds=3,
                           iterations=1, warmup_rounds=1)
    finally:
        ours.batch_size = BATCH_SIZE
    rate = GENERATED / benchmark.stats.stats.mean
    benchmark.extra_info.update(examples_per_s=round(rate, 1), dtype=dtype)
    if batching == "one_per_batch":
        REFERENCE["denoising", dtype] = rate
    elif ("denoising", dtype) in REFERENCE:
        benchmark.extra_info["vs_one_per_batch"] = round(rate / REFERENCE["denoising", dtype], 2)
