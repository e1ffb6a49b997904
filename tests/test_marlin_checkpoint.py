"""Checkpoint loading and saving: released .pt, Lightning .ckpt, HF safetensors, our own format."""

from __future__ import annotations

import collections
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from marlin import CheckpointError, Marlin, available_models, get_config, load_state_dict
from marlin.checkpoint import infer_config, strip_prefixes

TINY = get_config("vit_tiny")


class Payload:
    """An arbitrary class: ``torch.load(weights_only=True)`` must refuse to unpickle it."""


@pytest.fixture(scope="module")
def full_model() -> Marlin:
    torch.manual_seed(0)
    return Marlin(TINY).eval()


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    return torch.rand(1, *TINY.clip_shape, generator=torch.Generator().manual_seed(0))


def _same_features(a: Marlin, b: Marlin, x: torch.Tensor) -> None:
    """Same encoder weights (every tensor bit-identical); features equal follows."""
    want, got = a.encoder.state_dict(), b.encoder.state_dict()
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key


def test_own_safetensors_roundtrip(tmp_path, full_model, clip):
    path = tmp_path / "sub" / "tiny.safetensors"
    full_model.save(path, metadata={"step": "12"})
    assert [p.name for p in path.parent.iterdir()] == ["tiny.safetensors"]  # no temp left behind
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["step"] == "12" and json.loads(meta["marlin_config"])["name"] == "vit_tiny"
    loaded = Marlin.from_file(path)
    assert loaded.config == TINY and loaded.has_decoder and not loaded.training
    _same_features(full_model, loaded, clip)
    # a non-registry config survives through the metadata alone
    odd = Marlin(TINY.replace(name="custom", encoder_heads=2, n_frames=8, img_size=64), with_decoder=False)
    odd.save(tmp_path / "odd.safetensors")
    again = Marlin.from_file(tmp_path / "odd.safetensors")
    assert again.config == odd.config and not again.has_decoder


def test_released_encoder_and_full_pt(tmp_path, full_model, clip):
    state = full_model.state_dict()
    encoder_only = collections.OrderedDict((k, v) for k, v in state.items() if k.startswith("encoder."))
    torch.save(encoder_only, tmp_path / "marlin_vit_tiny.encoder.pt")
    torch.save(state, tmp_path / "marlin_vit_tiny.full.pt")
    enc = Marlin.from_file(tmp_path / "marlin_vit_tiny.encoder.pt")
    assert not enc.has_decoder and enc.config == TINY  # variant inferred from the shapes
    _same_features(full_model, enc, clip)
    torch.testing.assert_close(enc.extract_features(clip), full_model.extract_features(clip), rtol=0, atol=0)
    full = Marlin.from_file(tmp_path / "marlin_vit_tiny.full.pt")
    assert full.has_decoder
    for key, value in full_model.state_dict().items():
        assert torch.equal(full.state_dict()[key], value), key
    # an encoder-only load of a full file ignores the decoder
    assert not Marlin.from_file(tmp_path / "marlin_vit_tiny.full.pt", with_decoder=False).has_decoder
    with pytest.raises(CheckpointError, match=r"missing \d+ keys: decoder\."):
        Marlin.from_file(tmp_path / "marlin_vit_tiny.encoder.pt", with_decoder=True)


def test_lightning_ckpt_drops_discriminator(tmp_path, full_model, clip):
    state = dict(full_model.state_dict())
    state["discriminator.layers.0.linear.weight"] = torch.zeros(4, 1536)
    ckpt = {"state_dict": state, "epoch": 3, "global_step": 120, "pytorch-lightning_version": "1.7.7",
            "hyper_parameters": {"adv_weight": 0.01}}
    torch.save(ckpt, tmp_path / "last.ckpt")
    model = Marlin.from_file(tmp_path / "last.ckpt")
    assert model.has_decoder
    _same_features(full_model, model, clip)


def test_hugging_face_safetensors_with_prefix(tmp_path, full_model, clip):
    state = {f"marlin.{k}": v.contiguous() for k, v in full_model.state_dict().items()}
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    model = Marlin.from_file(tmp_path / "model.safetensors")
    assert model.config == TINY
    _same_features(full_model, model, clip)


def test_variant_inferred_for_every_registry_entry():
    for name in available_models():
        with torch.device("meta"):
            state = Marlin.from_config(name).state_dict()
        assert infer_config(state) == get_config(name)
        encoder = {k: v for k, v in state.items() if k.startswith("encoder.")}
        assert infer_config(encoder).encoder_dim == get_config(name).encoder_dim
    # an unknown size: heads from the 64-wide head convention, frames assumed 16
    with torch.device("meta"):
        state = Marlin(get_config("vit_tiny", encoder_dim=256, encoder_heads=4, img_size=64)).state_dict()
    cfg = infer_config(state)
    got = (cfg.name, cfg.encoder_dim, cfg.encoder_heads, cfg.img_size, cfg.n_frames)
    assert got == ("custom", 256, 4, 64, 16)


def test_mismatch_lists_missing_unexpected_and_shapes(tmp_path, full_model):
    state = dict(full_model.state_dict())
    del state["encoder.blocks.1.attn.q_bias"]
    state["encoder.blocks.1.attn.k_bias"] = torch.zeros(192)
    state["decoder.head.bias"] = torch.zeros(7)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        Marlin.from_file(tmp_path / "bad.pt")
    msg = str(err.value)
    assert "bad.pt" in msg and "missing 1 keys: encoder.blocks.1.attn.q_bias" in msg
    assert "unexpected 1 keys: encoder.blocks.1.attn.k_bias" in msg
    assert "decoder.head.bias (7,) != (1536,)" in msg
    with pytest.raises(CheckpointError, match="does not fit MARLIN 'vit_small'"):
        Marlin.from_file(tmp_path / "bad.pt", config="vit_small")


def test_unreadable_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        Marlin.from_file(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: cannot read checkpoint"):
        Marlin.from_file(tmp_path / "junk.pt")
    # weights_only=True refuses arbitrary pickled objects
    torch.save({"state_dict": {"x": Payload()}}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot read checkpoint.*Payload"):
        load_state_dict(tmp_path / "evil.pt")
    torch.save({"something": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="encoder.patch_embedding.projection.weight"):
        Marlin.from_file(tmp_path / "other.pt")


def test_strip_prefixes():
    sd = {"marlin.encoder.norm.weight": 1, "module.model.decoder.head.bias": 2, "enc_dec_proj.weight": 3}
    assert strip_prefixes(sd) == {"encoder.norm.weight": 1, "decoder.head.bias": 2, "enc_dec_proj.weight": 3}
