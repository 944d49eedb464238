"""Contract tests over the registries, so that a new plugin or preset is covered without a test of its own.

- Architectures, every preset and each plugin's example config: the parameter count is exact (counted on the
  meta device, so at any size). Those small enough to materialise (the tiny presets, the plugins' examples)
  also: a meta build then init writes every tensor as an eager init does, keyed by seed; one training step has
  loss log V and finite gradients everywhere; greedy decoding is the same with and without the cache. Every
  combination of components, at a tiny size, initialises everything and counts exactly.
- Objectives, from each one's example config: valid Features, deterministic given the generator, on which every
  architecture trains.
- Eval tasks, every plugin's example and every preset: read their layout and score their own references.

A plugin whose config defaults cannot build alone gives the fields to set (`register(..., example=...)`, see
seqlab.registry).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import planned_rows, write_flores, write_jsonl, write_lines

from seqlab.config import ObjectiveConfig
from seqlab.errors import ConfigError, PluginError
from seqlab.evaluation.tasks import Example
from seqlab.interfaces import Features, Rows, capability
from seqlab.registry import ARCHITECTURES, EVAL_TASKS, OBJECTIVES, Registry, load_plugins
from seqlab.tokenizer import PAD_ID
from seqlab_plugins.architectures.components import MLPS, NORMS, POSITIONS, TransformerConfig
from seqlab_plugins.architectures.generation import GenerationConfig, generate
from seqlab_plugins.evals.rank_classification import SIB200_FOLDERS, XCOPA_CONNECTORS
from seqlab_plugins.evals.translation import LANGUAGES

load_plugins()  # the registries are the parameter lists

V = 512  # vocabulary of the architecture checks
SMALL = 2_000_000  # parameters at V up to which an architecture is materialised, trained and decoded
SEQ_LEN = 64  # objective checks


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Every tensor here is tiny: intra-op threads would only add synchronisation (and, on a shared machine,
    waits for a busy core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _architecture_configs() -> dict:
    """Every preset, and each architecture plugin's own example config (a plugin without presets is covered)."""
    configs = {name: cfg for name, (cfg, _) in ARCHITECTURES.presets().items()}
    return {**configs, **{plugin.name: ARCHITECTURES.example(plugin.name) for plugin in ARCHITECTURES}}


ARCHITECTURE_CONFIGS = _architecture_configs()


def _factory(cfg):
    return ARCHITECTURES.get(cfg.name).factory


def _count(cfg) -> int:
    return capability(_factory(cfg), "parameter_count", "parameter accounting")(cfg, V).total


SMALL_CONFIGS = {name: cfg for name, cfg in ARCHITECTURE_CONFIGS.items() if _count(cfg) <= SMALL}


def _meta_built(cfg, vocab_size: int = V) -> torch.nn.Module:
    with torch.device("meta"):
        return ARCHITECTURES.build(cfg, vocab_size=vocab_size)


def _tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return dict(itertools.chain(model.named_parameters(), model.named_buffers()))


def _materialised_from_garbage(cfg, vocab_size: int = V) -> torch.nn.Module:
    """Meta build, `to_empty`, every tensor filled with NaN (integers with their minimum): what init must
    overwrite entirely."""
    model = _meta_built(cfg, vocab_size).to_empty(device="cpu")
    with torch.no_grad():
        for t in _tensors(model).values():
            t.fill_(math.nan if t.is_floating_point() else torch.iinfo(t.dtype).min)
    return model


def _unwritten(model: torch.nn.Module) -> list[str]:
    """Tensors still holding some of the garbage `_materialised_from_garbage` filled them with."""
    def written(t: torch.Tensor) -> bool:
        return bool(torch.isfinite(t).all() if t.is_floating_point() else (t != torch.iinfo(t.dtype).min).all())

    return [name for name, t in _tensors(model).items() if not written(t)]


def _random_batch(model: torch.nn.Module, cfg, rng: np.random.Generator, batch: int = 4) -> dict:
    """The architecture's converter batch of random Features: text ids (16 and up), 1-10 tokens each side."""
    li, lt = rng.integers(1, 11, batch), rng.integers(1, 11, batch)
    inputs = np.where(np.arange(li.max()) < li[:, None], rng.integers(16, V, (batch, li.max())), PAD_ID)
    targets = np.where(np.arange(lt.max()) < lt[:, None], rng.integers(16, V, (batch, lt.max())), PAD_ID)
    features = Features(inputs, li, targets, lt, np.zeros(batch, dtype=np.int64))
    return type(model).feature_converter(cfg, pad_id=PAD_ID)(features)


def _check_loss_and_grads(model: torch.nn.Module, batch: dict) -> float:
    """One training step's loss is finite and every parameter gets a finite gradient; returns the loss."""
    model.train()
    out = model.loss(batch)
    loss = out.loss_sum.sum() / out.tokens.sum()
    assert torch.isfinite(loss), loss
    if out.regulariser is not None:
        assert torch.isfinite(out.regulariser).all()
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert missing == [], f"parameters without a gradient (unused in the loss): {missing}"
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert bad == [], f"non-finite gradients: {bad}"
    return float(loss.detach())


# ---------------------------------------------------------------------------------------------------------------
# The example mechanism


@dataclass
class _Cfg(ObjectiveConfig):
    sizes: list = field(default_factory=list)
    rate: float = 0.5

    def __post_init__(self) -> None:
        if not self.sizes:
            raise ConfigError("objective.sizes=[]: must list at least one size")


def test_example_sets_fields_over_the_defaults_when_built():
    reg = Registry("objective", "test_contracts_group")
    reg.register("listed", config=_Cfg, example={"sizes": [1, 2]})(lambda cfg: cfg)
    reg.register("plain", config=ObjectiveConfig)(lambda cfg: cfg)
    first = reg.example("listed")
    assert first == _Cfg(name="listed", sizes=[1, 2], rate=0.5) and reg.example("listed") is not first
    assert reg.example("plain") == ObjectiveConfig(name="plain")  # no example: the defaults


def test_example_naming_an_unknown_field_is_refused_at_registration():
    with pytest.raises(PluginError, match=r"objective plugin 'typo': example sets sizez, not fields of _Cfg"):
        Registry("objective", "test_contracts_group").register("typo", config=_Cfg, example={"sizez": [1]})


# ---------------------------------------------------------------------------------------------------------------
# Architectures: every preset and plugin example


@pytest.mark.parametrize("name", sorted(ARCHITECTURE_CONFIGS))
def test_parameter_count_equals_the_built_model(name):
    cfg = ARCHITECTURE_CONFIGS[name]
    model = _meta_built(cfg)
    assert sum(p.numel() for p in model.parameters()) == _count(cfg)  # tied parameters are listed once


def test_small_architectures_are_found():
    assert {"seq2seq_tiny", "t5_tiny", "llama_tiny", *ARCHITECTURES.names()} <= set(SMALL_CONFIGS)


@pytest.mark.parametrize("name", sorted(SMALL_CONFIGS))
def test_meta_build_then_init_writes_everything_as_an_eager_init_does(name):
    cfg = SMALL_CONFIGS[name]
    model = _materialised_from_garbage(cfg)
    model.init_weights(0)
    assert _unwritten(model) == []
    eager = ARCHITECTURES.build(cfg, vocab_size=V)
    eager.init_weights(0)
    assert len(list(model.parameters())) == len(list(eager.parameters()))  # ties restored after to_empty
    for key, value in eager.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


@pytest.mark.parametrize("name", sorted(SMALL_CONFIGS))
def test_init_is_keyed_by_seed(name):
    cfg = SMALL_CONFIGS[name]
    first, again, other = (ARCHITECTURES.build(cfg, vocab_size=V) for _ in range(3))
    torch.manual_seed(1)  # the global RNG plays no part
    first.init_weights(0)
    torch.manual_seed(2)
    again.init_weights(0)
    other.init_weights(1)
    a, b, c = first.state_dict(), again.state_dict(), other.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    drawn = [k for k, t in a.items() if t.numel() > 1 and not bool((t == t.flatten()[0]).all())]
    assert drawn and all(not torch.equal(a[k], c[k]) for k in drawn)


@pytest.mark.parametrize("name", sorted(SMALL_CONFIGS))
def test_loss_at_init_is_log_vocabulary_with_finite_gradients(name):
    cfg = SMALL_CONFIGS[name]
    model = ARCHITECTURES.build(cfg, vocab_size=V)
    model.init_weights(0)
    loss = _check_loss_and_grads(model, _random_batch(model, cfg, np.random.default_rng(0)))
    assert loss == pytest.approx(math.log(V), rel=0.05)  # near-uniform predictions at init


def _decodable(model: torch.nn.Module) -> torch.nn.Module:
    """Initialised, then noise on every parameter, in float64 and eval mode: at init a model predicts nearly
    uniformly (or, with copied embeddings, its own input), so greedy decoding would repeat one token."""
    torch.manual_seed(0)
    model.init_weights(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.double().eval()


@pytest.mark.parametrize("name", sorted(SMALL_CONFIGS))
def test_cached_greedy_decoding_equals_uncached(name):
    cfg = SMALL_CONFIGS[name]
    model = _decodable(ARCHITECTURES.build(cfg, vocab_size=V))
    lengths = torch.tensor([5, 1, 7])
    ids = torch.randint(16, V, (3, 7), generator=torch.Generator().manual_seed(0))
    ids = ids.masked_fill(torch.arange(7) >= lengths[:, None], PAD_ID)
    cached, uncached = (generate(model, ids, lengths, GenerationConfig(max_new_tokens=6, use_cache=use, eos_id=None))
                        for use in (True, False))
    assert cached.tokens.shape == (3, 6) and torch.equal(cached.tokens, uncached.tokens)
    assert len(set(cached.tokens.flatten().tolist())) > 3  # a real test: the choices vary


# ---------------------------------------------------------------------------------------------------------------
# Architectures: every combination of components, tiny


COMPONENTS = [dict(norm=n, mlp=m, positions=p, n_kv_heads=kv, bias=b, qk_norm=q)
              for n, m, p, kv, b, q in itertools.product(NORMS, MLPS, POSITIONS, (None, 1), (True, False),
                                                         (True, False))]
LAYOUTS = {  # each architecture plugin's own options, crossed with every combination of components (default: none)
    "seq2seq": [dict(encoder_layers=1, decoder_layers=1, **options) for options in (
        {}, {"share_embeddings": True, "embedding_norm": True}, {"tie_embeddings": True})],
    "decoder_only": [dict(n_layers=1, tie_embeddings=tie, prefix_lm=tie) for tie in (True, False)],
}
TINY = dict(d_model=16, n_heads=2, d_ff=24, max_positions=16, relative_buckets=8, relative_max_distance=16)
SWEEP_V = 40


def _transformer_example(arch: str) -> TransformerConfig:
    """The plugin's example config, whose component fields the tests below set (other plugins skip them)."""
    cfg = ARCHITECTURES.example(arch)
    if not isinstance(cfg, TransformerConfig):
        pytest.skip(f"{arch} is not built from the shared components (TransformerConfig)")
    return cfg


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_every_combination_initialises_everything_and_counts_exactly(arch, positions):
    failures, example = [], _transformer_example(arch)
    for components, layout in itertools.product(COMPONENTS, LAYOUTS.get(arch, [{}])):
        if components["positions"] != positions:
            continue
        cfg = replace(example, **TINY, **components, **layout)
        model = _materialised_from_garbage(cfg, SWEEP_V)
        try:
            model.init_weights(0)
        except RuntimeError as err:  # init_weights names what it left uninitialised
            failures.append(f"{components} {layout}: {err}")
            continue
        numel = sum(p.numel() for p in model.parameters())
        count = capability(_factory(cfg), "parameter_count", "parameter accounting")(cfg, SWEEP_V).total
        if _unwritten(model) or numel != count:
            failures.append(f"{components} {layout}: unwritten {_unwritten(model)}, {numel} parameters, "
                            f"counted {count}")
    assert failures == [], "\n".join(failures)


# A handful that trains: each norm, MLP and position scheme, both kinds of attention heads, biases and qk-norm
# on and off, on every architecture.
TRAINED = [dict(norm=NORMS[i % 2], mlp=MLPS[i], positions=POSITIONS[i], n_kv_heads=(None, 1)[i % 2],
                bias=i % 2 == 0, qk_norm=i % 2 == 1) for i in range(3)]


@pytest.mark.parametrize("components", TRAINED, ids=lambda c: f"{c['norm']}-{c['mlp']}-{c['positions']}")
@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_combinations_train(arch, components):
    for layout in LAYOUTS.get(arch, [{}]):
        cfg = replace(_transformer_example(arch), **TINY, **components, **layout)
        model = ARCHITECTURES.build(cfg, vocab_size=SWEEP_V)
        model.init_weights(0)
        rng = np.random.default_rng(0)
        li, lt = np.array([3, 9, 1]), np.array([7, 2, 5])
        features = Features(rng.integers(16, SWEEP_V, (3, 9)) * (np.arange(9) < li[:, None]), li,
                            rng.integers(16, SWEEP_V, (3, 7)) * (np.arange(7) < lt[:, None]), lt, np.zeros(3, int))
        _check_loss_and_grads(model, type(model).feature_converter(cfg, pad_id=PAD_ID)(features))


# ---------------------------------------------------------------------------------------------------------------
# Objectives


def _objective_features(name: str, tokenizer, seed: int) -> tuple[object, Rows, Features]:
    """The objective built from its example config, its plan of 8 rows, rows cut to the plan (documents of
    random lengths up to the planned one), and its Features, all from one seeded generator."""
    objective = OBJECTIVES.build(OBJECTIVES.example(name), tokenizer=tokenizer, seq_len=SEQ_LEN)
    rng = np.random.default_rng(seed)
    plan = objective.plan(8, rng)
    rows = planned_rows(tokenizer, rng, plan)
    lengths = np.where(plan.document, rng.integers(np.minimum(2, plan.length), plan.length + 1), plan.length)
    tokens = np.where(np.arange(rows.tokens.shape[1]) < lengths[:, None], rows.tokens, tokenizer.pad_id)
    rows = Rows(tokens, lengths, plan)
    return objective, rows, objective(rows, rng)


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_objective_gives_valid_features(name, tokenizer):
    objective, rows, f = _objective_features(name, tokenizer, seed=0)
    B = len(rows.lengths)
    assert len(objective.names) >= 1 and len(rows.plan.length) == B
    for array in (f.inputs, f.input_lengths, f.targets, f.target_lengths, f.objective):
        assert array.dtype == np.int64 and array.shape[0] == B
    for ids, lengths in ((f.inputs, f.input_lengths), (f.targets, f.target_lengths)):
        assert ids.ndim == 2 and lengths.ndim == 1
        assert ((lengths >= 0) & (lengths <= ids.shape[1]) & (lengths <= SEQ_LEN)).all(), lengths
        assert ((ids >= 0) & (ids < tokenizer.vocab_size)).all()
        padding = np.arange(ids.shape[1])[None, :] >= lengths[:, None]
        assert (ids[padding] == tokenizer.pad_id).all() and (ids[~padding] != tokenizer.pad_id).all()
    assert (f.target_lengths >= 1).all()  # every example has something to predict
    assert np.array_equal(f.objective, rows.plan.task)
    assert ((f.objective >= 0) & (f.objective < len(objective.names))).all()


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_objective_is_deterministic_given_its_generator(name, tokenizer):
    (_, rows_a, a), (_, rows_b, b) = (_objective_features(name, tokenizer, seed=5) for _ in range(2))
    assert np.array_equal(rows_a.tokens, rows_b.tokens)
    for key in ("inputs", "input_lengths", "targets", "target_lengths", "objective"):
        assert np.array_equal(getattr(a, key), getattr(b, key)), key


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_every_objective_trains_every_architecture(name, arch, tokenizer):
    """N objectives meet M architectures through Features: each architecture's converter takes each objective's
    features, and its loss on them is finite with finite gradients."""
    _, _, f = _objective_features(name, tokenizer, seed=0)
    cfg = replace(_transformer_example(arch), d_model=32, n_heads=2, d_ff=32, max_positions=2 * SEQ_LEN)
    model = ARCHITECTURES.build(cfg, vocab_size=tokenizer.vocab_size)
    model.init_weights(0)
    _check_loss_and_grads(model, type(model).feature_converter(cfg, pad_id=tokenizer.pad_id)(f))


# ---------------------------------------------------------------------------------------------------------------
# Eval tasks: every plugin's example config and every preset, on small data in each shipped layout


@pytest.fixture(scope="module")
def eval_root(tmp_path_factory) -> Path:
    """FLORES-200, SIB-200 and XCOPA folders for every language the shipped readers know, the JSONL file of
    the summarization example (`summaries.jsonl`), and SQuAD v2-style files for extractive QA."""
    root = tmp_path_factory.mktemp("eval_data")
    write_flores(root, {split: {stem: [f"{stem} {split} sentence {i}." for i in range(2)]
                                for stem, _ in LANGUAGES.values()} for split in ("dev", "devtest")})
    for folder in SIB200_FOLDERS.values():
        lang_dir = root / "sib200" / "data" / "annotated" / folder
        write_lines(lang_dir / "labels.txt", ["travel", "sports", "politics"])
        for split in ("train", "test"):
            write_lines(lang_dir / f"{split}.tsv", ["index_id\tcategory\ttext", f"1\ttravel\t{folder} trip",
                                                    f"2\tpolitics\t{folder} vote"])
    for lang in XCOPA_CONNECTORS:
        for split in ("val", "test"):
            write_jsonl(root / "xcopa" / "data" / lang / f"{split}.{lang}.jsonl", [
                {"idx": i, "premise": f"Premise {i}.", "choice1": "It rained.", "choice2": "It was sunny.",
                 "question": question, "label": i % 2} for i, question in enumerate(("cause", "effect"))])
    write_jsonl(root / "summaries.jsonl", [{"document": f"Report {i}: the council met and voted.",
                                            "summary": f"Council vote {i} passed."} for i in range(3)])
    qa = [{"id": str(i), "context": f"The vote {i} passed.", "question": "Did it pass?",
           "answers": {"text": ["passed"] if i else [], "answer_start": [12] if i else []}} for i in range(3)]
    for path in ("qa.jsonl", "squad_v2/validation.jsonl", "squad_v2/train.jsonl"):
        write_jsonl(root / path, qa)
    articles = [{"document": f"Report {i}: the council met.", "text": f"Bericht {i}.", "summary": f"Vote {i}."}
                for i in range(3)]
    for path in ("xsum/test.jsonl", "xsum/validation.jsonl",
                 *(f"mlsum/{lang}/{split}.jsonl" for lang in ("de", "es", "fr") for split in ("test", "validation"))):
        write_jsonl(root / path, articles)
    nli = [{"premise": f"The vote {i} passed.", "hypothesis": "It passed.", "label": i} for i in range(3)]
    write_jsonl(root / "nli.jsonl", nli)
    for lang in ("ar", "de", "en", "es", "fr", "hi"):
        for split in ("test", "validation"):
            write_jsonl(root / "xnli" / lang / f"{split}.jsonl", nli)
    for lang in ("de", "en", "es", "fr", "ja"):
        for split in ("test", "validation"):
            write_jsonl(root / "paws-x" / lang / f"{split}.jsonl",
                        [{"id": i, "sentence1": "A cat sat.", "sentence2": "A cat sits.", "label": i % 2}
                         for i in range(2)])
    glue = {"BoolQ": [{"idx": i, "passage": "Cats sit.", "question": "do cats sit", "label": bool(i)}
                      for i in range(2)],
            "CB": [{"idx": i, "premise": "It rained.", "hypothesis": "It was wet.", "label": label}
                   for i, label in enumerate(("entailment", "contradiction", "neutral"))],
            "RTE": [{"idx": i, "premise": "It rained.", "hypothesis": "It was wet.", "label": label}
                    for i, label in enumerate(("entailment", "not_entailment"))],
            "WiC": [{"idx": i, "word": "bank", "sentence1": "The river bank.", "sentence2": "The bank lent money.",
                     "label": bool(i)} for i in range(2)],
            "COPA": [{"idx": i, "premise": "The man fell.", "choice1": "He slipped.", "choice2": "He sang.",
                      "question": question, "label": i % 2} for i, question in enumerate(("cause", "effect"))]}
    for task, rows in glue.items():
        for split in ("val", "train"):
            write_jsonl(root / "super_glue" / task / f"{split}.jsonl", rows)
    winograd = [{"sentence": "The cup did not fit in the box because _ was too big.", "option1": "the cup",
                 "option2": "the box", "answer": str(1 + i)} for i in range(2)]
    for folder in ("winograd.jsonl", "xwinograd/en/test.jsonl", "xwinograd/fr/test.jsonl",
                   "xwinograd/jp/test.jsonl", "xwinograd/pt/test.jsonl"):
        write_jsonl(root / folder, winograd)
    sums = [{"question": f"What is {i} + 2?", "answer": f"{i} plus 2 is {i + 2}. #### {i + 2}"} for i in range(6)]
    for path in ("arithmetic.jsonl", "gsm8k/test.jsonl", "gsm8k/train.jsonl"):
        write_jsonl(root / path, sums)
    for lang in ("de", "en", "es", "fr", "ja", "te"):
        write_lines(root / "mgsm" / f"mgsm_{lang}.tsv", [f"What is {i} + 2?\t{i + 2}" for i in range(2)])
    return root


EVAL_CONFIGS = {**{name: cfg for name, (cfg, _) in EVAL_TASKS.presets().items()},
                **{plugin.name: EVAL_TASKS.example(plugin.name) for plugin in EVAL_TASKS}}


@pytest.mark.parametrize("name", sorted(EVAL_CONFIGS))
def test_eval_task_reads_examples_and_scores_its_references(name, eval_root):
    task = EVAL_TASKS.build(EVAL_CONFIGS[name])
    examples = task.examples(eval_root)
    assert examples and all(isinstance(ex, Example) and ex.prompt for ex in examples)
    assert len({ex.id for ex in examples}) == len(examples)
    for ex in examples:
        if ex.candidates:
            assert len(ex.candidates) >= 2 and 0 <= ex.label < len(ex.candidates) and ex.reference is None
        else:
            assert ex.reference
    if hasattr(task, "example_stats"):  # a generation task
        assert task.max_new_tokens >= 1 and all(ex.reference for ex in examples)
        stats = task.example_stats(examples, [ex.reference for ex in examples])
        assert stats and all(len(rows) == len(examples) for _, rows in stats.values())
