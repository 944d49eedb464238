"""Warm starts (`architecture.init_from`): from a seqlab checkpoint or a Hugging Face folder, exactly the named
modules are read and the rest keeps its fresh initialisation; bad inputs fail naming the field, file and tensor;
sharded (DTensor) parameters get their own rows."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seqlab.config import InitFromConfig
from seqlab.errors import ConfigError, DataError
from seqlab.experiment import resource_path
from seqlab.tokenizer import Tokenizer
from seqlab.warm_start import warm_start
from seqlab_plugins.architectures.decoder_only import DecoderOnly, DecoderOnlyConfig
from seqlab_plugins.architectures.seq2seq import Seq2Seq, Seq2SeqConfig

VOCAB = 96


def _seq2seq(seed: int, vocab_size: int = VOCAB, **fields) -> Seq2Seq:
    cfg = Seq2SeqConfig(name="seq2seq", **{"d_model": 32, "n_heads": 4, "encoder_layers": 2, "decoder_layers": 2,
                                            "max_positions": 16, **fields})
    model = Seq2Seq(cfg, vocab_size=vocab_size)
    model.init_weights(seed)
    return model


def _pretrained(model: torch.nn.Module) -> torch.nn.Module:
    """Noise on every parameter: fresh inits leave norms at 1, biases at 0 and the seq2seq vocabulary matrices
    equal, so a load that missed or swapped one would pass by accident."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _save_checkpoint(model: torch.nn.Module, path: Path, drop: tuple[str, ...] = ()) -> Path:
    """What `seqlab train` writes, as far as a warm start reads it: the LightningModule's state_dict."""
    state = {f"model.{k}": v for k, v in model.state_dict().items() if k not in drop}
    torch.save({"state_dict": state, "global_step": 3, "hyper_parameters": {"vocab_size": VOCAB}}, path)
    return path


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_loaded_exactly(model, source: dict, fresh: dict, modules: tuple[str, ...]) -> None:
    def chosen(name: str) -> bool:
        return any(m == "" or name == m or name.startswith(m + ".") for m in modules)

    for name, value in model.state_dict().items():
        expected = source[name] if chosen(name) else fresh[name]
        assert torch.equal(value, expected), (name, "source" if chosen(name) else "fresh init")


def test_checkpoint_loads_exactly_the_encoder_and_leaves_the_rest_as_fresh_init(tmp_path):
    source = _pretrained(_seq2seq(seed=0))
    path = _save_checkpoint(source, tmp_path / "pre.ckpt")
    fresh = _state(_seq2seq(seed=1))
    model = _seq2seq(seed=1)
    report = warm_start(model, InitFromConfig(path=str(path), modules=["encoder"]))
    _assert_loaded_exactly(model, _state(source), fresh, ("encoder",))
    assert report.missing == [] and all(name.startswith("encoder.") for name in report.loaded)
    assert report.values == sum(p.numel() for p in model.encoder.parameters())
    # The paper's separate matrices: the decoder embedding and head keep their own (fresh) init.
    assert not torch.equal(model.decoder.embed.weight, model.encoder.embed.weight)


def test_several_prefixes_and_single_tensors(tmp_path):
    source = _pretrained(_seq2seq(seed=0))
    path = _save_checkpoint(source, tmp_path / "pre.ckpt")
    fresh = _state(_seq2seq(seed=1))
    model = _seq2seq(seed=1)
    modules = ("decoder.blocks.1", "head.weight", "encoder.final_norm")
    warm_start(model, {"path": str(path), "modules": list(modules)})  # a config restored from hyper-parameters
    _assert_loaded_exactly(model, _state(source), fresh, modules)


def test_no_path_is_no_warm_start():
    model = _seq2seq(seed=1)
    before = _state(model)
    assert warm_start(model, InitFromConfig()) is None and warm_start(model, None) is None
    _assert_loaded_exactly(model, before, before, ())


def test_a_tied_tensor_is_loaded_through_any_of_its_names(tmp_path):
    source = _pretrained(_seq2seq(seed=0, tie_embeddings=True))
    path = _save_checkpoint(source, tmp_path / "pre.ckpt")
    model = _seq2seq(seed=1, tie_embeddings=True)
    warm_start(model, InitFromConfig(path=str(path), modules=["head"]))
    assert torch.equal(model.encoder.embed.weight, source.encoder.embed.weight)
    assert model.head.weight is model.encoder.embed.weight is model.decoder.embed.weight


def test_untied_source_into_tied_model_must_choose_one_matrix(tmp_path):
    path = _save_checkpoint(_pretrained(_seq2seq(seed=0)), tmp_path / "pre.ckpt")
    with pytest.raises(ConfigError, match=r"encoder\.embed\.weight and decoder\.embed\.weight are one tied tensor"):
        warm_start(_seq2seq(seed=1, tie_embeddings=True), InitFromConfig(path=str(path), modules=[""]))


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(resource_path("tokenizer/embedded.model"))


@pytest.fixture(scope="module")
def mbart_folder(tmp_path_factory, tokenizer):
    """A pre-trained seq2seq (the paper's untied layout, with MBart's embedding norm) exported to MBart."""
    pytest.importorskip("transformers")
    from seqlab_plugins.architectures.export import export_model

    source = _pretrained(_seq2seq(seed=0, vocab_size=tokenizer.vocab_size, embedding_norm=True))
    return export_model(source, tokenizer, tmp_path_factory.mktemp("mbart")), _state(source)


@pytest.mark.parametrize("modules", [("encoder",), ("",)], ids=["encoder", "whole_model"])
def test_hugging_face_folder_gives_the_exported_weights(mbart_folder, tokenizer, modules):
    folder, source = mbart_folder
    fresh = _state(_seq2seq(seed=1, vocab_size=tokenizer.vocab_size, embedding_norm=True))
    model = _seq2seq(seed=1, vocab_size=tokenizer.vocab_size, embedding_norm=True)
    report = warm_start(model, InitFromConfig(path=str(folder), modules=list(modules)))
    assert report.source == "Hugging Face folder"
    _assert_loaded_exactly(model, source, fresh, modules)


def test_hugging_face_folder_of_a_tied_model(tmp_path, tokenizer):
    """transformers saves a tied matrix once (model.shared.weight): the other names are read through it."""
    pytest.importorskip("transformers")
    from seqlab_plugins.architectures.export import export_model

    source = _pretrained(_seq2seq(seed=0, vocab_size=tokenizer.vocab_size, embedding_norm=True, tie_embeddings=True))
    export_model(source, tokenizer, tmp_path)
    model = _seq2seq(seed=1, vocab_size=tokenizer.vocab_size, embedding_norm=True, tie_embeddings=True)
    warm_start(model, InitFromConfig(path=str(tmp_path), modules=[""]))
    _assert_loaded_exactly(model, _state(source), {}, ("",))


def test_hugging_face_gpt2_folder_into_decoder_only(tmp_path, tokenizer):
    pytest.importorskip("transformers")
    from seqlab_plugins.architectures.export import export_model

    cfg = DecoderOnlyConfig(name="decoder_only", d_model=32, n_heads=4, n_layers=2, max_positions=16)
    source = DecoderOnly(cfg, vocab_size=tokenizer.vocab_size)
    source.init_weights(0)
    export_model(_pretrained(source), tokenizer, tmp_path)
    model = DecoderOnly(cfg, vocab_size=tokenizer.vocab_size)
    model.init_weights(1)
    fresh = _state(model)
    warm_start(model, InitFromConfig(path=str(tmp_path), modules=["decoder.blocks.0"]))
    _assert_loaded_exactly(model, _state(source), fresh, ("decoder.blocks.0",))


# Bad inputs: every message names the field and what is wrong.

def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"architecture\.init_from\.path='.*nope\.ckpt': no such file or folder"):
        warm_start(_seq2seq(seed=1), InitFromConfig(path=str(tmp_path / "nope.ckpt")))


def test_prefix_that_names_no_module_lists_the_top_level_ones(tmp_path):
    path = _save_checkpoint(_seq2seq(seed=0), tmp_path / "pre.ckpt")
    with pytest.raises(ConfigError, match=r"architecture\.init_from\.modules\[1\]='encoderr': matches no parameter "
                                          r"of the Seq2Seq model; its top-level modules are decoder, encoder, head"):
        warm_start(_seq2seq(seed=1), InitFromConfig(path=str(path), modules=["encoder", "encoderr"]))


def test_shape_mismatch_names_the_tensor_and_both_shapes(tmp_path):
    path = _save_checkpoint(_seq2seq(seed=0, vocab_size=VOCAB + 8), tmp_path / "pre.ckpt")
    model = _seq2seq(seed=1)
    before = _state(model)
    with pytest.raises(ConfigError, match=r"pre\.ckpt'?: encoder\.embed\.weight has shape \(104, 32\) there but "
                                          r"\(96, 32\) in this model"):
        warm_start(model, InitFromConfig(path=str(path)))
    _assert_loaded_exactly(model, before, before, ())  # nothing written before the check


def test_strict_needs_every_tensor_under_the_prefix(tmp_path):
    source = _pretrained(_seq2seq(seed=0))
    path = _save_checkpoint(source, tmp_path / "pre.ckpt", drop=("encoder.blocks.1.ff.up.weight",))
    with pytest.raises(ConfigError, match=r"lacks 1 of the \d+ tensors under \['encoder'\], e\.g\. "
                                          r"encoder\.blocks\.1\.ff\.up\.weight; set architecture\.init_from\.strict"):
        warm_start(_seq2seq(seed=1), InitFromConfig(path=str(path)))
    fresh = _seq2seq(seed=1)
    model = _seq2seq(seed=1)
    report = warm_start(model, InitFromConfig(path=str(path), strict=False))
    assert report.missing == ["encoder.blocks.1.ff.up.weight"]
    assert torch.equal(model.encoder.blocks[1].ff.up.weight, fresh.encoder.blocks[1].ff.up.weight)
    assert torch.equal(model.encoder.blocks[1].ff.up.bias, source.encoder.blocks[1].ff.up.bias)


def test_strict_refuses_a_deeper_encoder(tmp_path):
    path = _save_checkpoint(_seq2seq(seed=0, encoder_layers=3), tmp_path / "pre.ckpt")
    with pytest.raises(ConfigError, match=r"that this model lacks, e\.g\. encoder\.blocks\.2\."):
        warm_start(_seq2seq(seed=1), InitFromConfig(path=str(path)))
    warm_start(_seq2seq(seed=1), InitFromConfig(path=str(path), strict=False))  # its first two layers


def test_a_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a checkpoint")
    with pytest.raises(DataError, match=r"architecture\.init_from\.path='.*notes\.txt': not a loadable checkpoint"):
        warm_start(_seq2seq(seed=1), InitFromConfig(path=str(path)))
    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="holds no state_dict"):
        warm_start(_seq2seq(seed=1), InitFromConfig(path=str(tmp_path / "other.pt")))


def test_folder_without_config_or_of_another_layout(tmp_path, mbart_folder, tokenizer):
    with pytest.raises(ConfigError, match="a folder without config.json"):
        warm_start(_seq2seq(seed=1), InitFromConfig(path=str(tmp_path)))
    folder, _ = mbart_folder
    cfg = DecoderOnlyConfig(name="decoder_only", d_model=32, n_heads=4, n_layers=2, max_positions=16)
    model = DecoderOnly(cfg, vocab_size=tokenizer.vocab_size)
    model.init_weights(0)
    with pytest.raises(ConfigError, match=r"a 'mbart' model, but this architecture maps to 'gpt2'"):
        warm_start(model, InitFromConfig(path=str(folder), modules=["decoder"]))
    # The paper's seq2seq without an embedding norm has no exact MBart counterpart.
    with pytest.raises(ConfigError, match=r"needs this model's Hugging Face layout: .*embedding_norm"):
        warm_start(_seq2seq(seed=1, vocab_size=tokenizer.vocab_size), InitFromConfig(path=str(folder)))


@pytest.mark.parametrize("fields, message", [
    ({"path": ""}, r"architecture\.init_from\.path='': must name a checkpoint"),
    ({"path": "x", "modules": []}, r"architecture\.init_from\.modules=\[\]: must list at least one"),
    ({"path": "x", "modules": ["encoder."]}, r"architecture\.init_from\.modules\[0\]='encoder\.': must be a dotted"),
    ({"path": "x", "modules": ["encoder", "encoder"]}, r"lists a prefix twice"),
])
def test_config_is_validated(fields, message):
    with pytest.raises(ConfigError, match=message):
        InitFromConfig(**fields)


def test_sharded_parameters_get_their_own_rows(tmp_path):
    """Rank 1 of 2 (a fake process group: no peers needed) holds rows [51, 101) of a 101-row embedding; the
    warm start writes exactly those rows of every FSDP2 (DTensor) parameter."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor
    from torch.testing._internal.distributed.fake_pg import FakeStore

    source = _pretrained(_seq2seq(seed=0, vocab_size=101))
    path = _save_checkpoint(source, tmp_path / "pre.ckpt")
    fresh = _seq2seq(seed=1, vocab_size=101)
    dist.init_process_group("fake", rank=1, world_size=2, store=FakeStore())
    try:
        mesh = init_device_mesh("cpu", (2,))
        with torch.device("meta"):
            model = Seq2Seq(source.cfg, vocab_size=101)
        for block in model.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        model.to_empty(device="cpu")
        model.init_weights(1)
        warm_start(model, InitFromConfig(path=str(path), modules=["encoder"]))
        whole, init = dict(source.named_parameters()), dict(fresh.named_parameters())
        sharded = 0
        for name, param in model.named_parameters():
            assert isinstance(param, DTensor)
            local = param.to_local()
            rows = slice(param.shape[0] - local.shape[0], param.shape[0])  # rank 1 holds the last rows
            expected = (whole if name.startswith("encoder.") else init)[name].detach()[rows]
            assert torch.equal(local, expected), name
            sharded += local.shape[0] < param.shape[0]
        assert sharded > 10 and model.encoder.embed.weight.to_local().shape[0] == 50
    finally:
        dist.destroy_process_group()
