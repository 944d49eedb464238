"""Export of a checkpoint written by a real (2-step) training run: the HF model gives the trained model's logits."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer  # noqa: E402

from seqlab.experiment import compose_config, to_run_config  # noqa: E402
from seqlab.train import build_components, build_trainer  # noqa: E402
from seqlab_plugins.architectures.attention import prefix_lm_mask  # noqa: E402
from seqlab.cli import main  # noqa: E402
from seqlab_plugins.architectures.export import export_checkpoint  # noqa: E402


def _logits(architecture: str, model: torch.nn.Module, hf: torch.nn.Module,
            batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ours and HF's logits on a validation batch; decoder-only compared causally (GPT-2 has no prefix LM)."""
    ids = batch["input_ids"]
    if architecture == "seq2seq":
        mask = torch.arange(ids.shape[1])[None, :] < batch["input_lengths"][:, None]
        return (model(ids, batch["input_lengths"], batch["decoder_input_ids"]),
                hf(input_ids=ids, attention_mask=mask.long(), decoder_input_ids=batch["decoder_input_ids"]).logits)
    lengths = batch.get("lengths", torch.full((ids.shape[0],), ids.shape[1]))
    causal = prefix_lm_mask(lengths, torch.zeros_like(lengths), ids.shape[1])
    mask = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
    return model(ids, causal), hf(input_ids=ids, attention_mask=mask.long()).logits


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["seq2seq", "decoder_only"])
def test_exported_checkpoint_reproduces_the_trained_model(tmp_path, architecture):
    overrides = ["trainer=smoke", "trainer.max_steps=2", "trainer.checkpoint_every_n_steps=2",
                 "trainer.val_check_interval=2", f"cache_dir={tmp_path / 'cache'}", f"architecture={architecture}"]
    if architecture == "seq2seq":
        overrides.append("architecture.embedding_norm=true")  # MBart has an embedding LayerNorm
    run = to_run_config(compose_config(overrides))
    parts = build_components(run)
    parts.datamodule.setup("fit")
    batch = next(iter(parts.datamodule.val_dataloader()))
    build_trainer(run, tmp_path / "run", parts.strategy).fit(parts.module, datamodule=parts.datamodule)

    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    out = export_checkpoint(checkpoint, tmp_path / "hf")
    # The command line does the same through the architecture's export_hf.
    assert main(["export", str(checkpoint), "--output", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
    auto = AutoModelForSeq2SeqLM if architecture == "seq2seq" else AutoModelForCausalLM
    hf = auto.from_pretrained(out).eval()
    with torch.no_grad():
        ours, theirs = _logits(architecture, parts.module.model.eval(), hf, batch)
    assert (ours - theirs).abs().max() < 1e-4
    assert "step 2" in (out / "README.md").read_text()
    assert AutoTokenizer.from_pretrained(out)("hello")["input_ids"] == parts.tokenizer.encode(["hello"])[0]
