"""lipsync.checkpoints: our safetensors round trip, the public release layouts, clear errors."""

from __future__ import annotations

import copy
import os
from collections import OrderedDict

import pytest
import torch
from safetensors.torch import save_file

from lipsync import checkpoints
from lipsync.checkpoints import CheckpointError
from lipsync.models import (
    MarlinLipGenerator,
    QualityDisc,
    SyncNetColor,
    SyncNetV2,
    Wav2Lip,
    create_model,
)
from marlin import Marlin


def randomise_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(7)
    return model


@pytest.fixture(scope="module")
def release_models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {name: randomise_batchnorm(cls()).eval()
            for name, cls in [("wav2lip", Wav2Lip), ("syncnet_color", SyncNetColor),
                              ("quality_disc", QualityDisc), ("syncnet_v2", SyncNetV2)]}


def probe(name: str, model: torch.nn.Module) -> torch.Tensor:
    """A cheap forward pass of the part that distinguishes the weights."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        if name == "wav2lip":
            return model(torch.rand(1, 6, 96, 96, generator=g), torch.randn(1, 1, 80, 16, generator=g))
        if name == "syncnet_color":
            mels, faces = torch.randn(1, 1, 80, 16, generator=g), torch.rand(1, 3, 5, 48, 96, generator=g)
            return model.similarity(mels, faces)
        if name == "quality_disc":
            return model(torch.rand(1, 3, 96, 96, generator=g))
        return model.forward_aud(torch.randn(2, 1, 13, 20, generator=g))


def release_layout(state: dict, layout: str) -> object:
    if layout in ("module", "dict_module"):
        state = OrderedDict((f"module.{k}", v) for k, v in state.items())
    if layout.startswith("dict"):
        optimizer = {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}
        return {"state_dict": state, "optimizer": optimizer, "global_step": 3000, "global_epoch": 12}
    return state


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("layout", ["bare", "module", "dict", "dict_module"])
@pytest.mark.parametrize("name", ["wav2lip", "syncnet_color", "quality_disc", "syncnet_v2"])
def test_public_layouts_load(tmp_path, release_models, name, layout):
    source = release_models[name]
    path = tmp_path / f"{name}.pth"
    torch.save(release_layout(source.state_dict(), layout), path)
    loaded = checkpoints.load(path)
    assert type(loaded.model) is type(source) and same_weights(loaded.model, source)
    assert loaded.meta["architecture"] == name and loaded.meta["colour"] == "bgr"
    assert loaded.model.weights_colour == "bgr" and not loaded.model.training
    assert loaded.meta["steps"] == (3000 if layout.startswith("dict") else None)


@pytest.mark.parametrize("name", ["wav2lip", "syncnet_color", "quality_disc", "syncnet_v2"])
def test_public_file_gives_identical_outputs(tmp_path, release_models, name):
    source = release_models[name]
    # the release's weights expect BGR: the equivalent model runs the same weights with colour="bgr"
    reference = copy.deepcopy(source)
    reference.config = source.config.replace(colour="bgr")
    torch.save(release_layout(source.state_dict(), "dict_module"), tmp_path / "w.pth")
    loaded = checkpoints.load(tmp_path / "w.pth")
    assert torch.equal(probe(name, loaded.model), probe(name, reference))


def test_release_conventions_recorded(tmp_path, release_models):
    conventions = {}
    for name in ("wav2lip", "syncnet_color"):
        torch.save(release_models[name].state_dict(), tmp_path / f"{name}.pth")
        conventions[name] = checkpoints.load(tmp_path / f"{name}.pth").meta["audio_convention"]
    # the release trained its generator one frame early, its expert not (REFERENCE.md section 2)
    assert conventions == {"wav2lip": "wav2lip_train", "syncnet_color": "inference"}


def test_syncnet_v2_without_batch_counters(tmp_path, release_models):
    """syncnet_v2.model predates BatchNorm's num_batches_tracked; it must still load."""
    source = release_models["syncnet_v2"]
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "syncnet_v2.model")
    loaded = checkpoints.load(tmp_path / "syncnet_v2.model", kind="syncnet_v2")
    assert loaded.meta["format"] == "syncnet-release"
    assert torch.equal(probe("syncnet_v2", loaded.model), probe("syncnet_v2", source))


@pytest.mark.parametrize("name", ["marlin_lip_tiny", "vit_lip_tiny", "marlin_sync_tiny", "quality_disc"])
def test_our_format_round_trip(tmp_path, name):
    torch.manual_seed(2)
    model = create_model(name, **({"img_size": 192} if name == "vit_lip_tiny" else {})).eval()
    randomise_batchnorm(model)
    path = checkpoints.save(tmp_path / "sub" / "model.safetensors", model,
                            {"steps": 1234, "trained_on": "LRS2 pretrain", "lr": 1e-4})
    assert sorted(os.listdir(path.parent)) == ["model.safetensors"]  # no temporary file left
    loaded = checkpoints.load(path)
    assert type(loaded.model) is type(model) and loaded.model.config == model.config
    assert loaded.meta["steps"] == 1234 and loaded.meta["trained_on"] == "LRS2 pretrain"
    assert loaded.meta["audio_convention"] == "inference" and loaded.meta["colour"] == "rgb"
    assert loaded.meta["lr"] == 1e-4 and loaded.meta["format"] == checkpoints.FORMAT
    own, back = model.state_dict(), loaded.model.state_dict()
    assert own.keys() == back.keys() and all(torch.equal(own[k], back[k]) for k in own)


def test_our_format_marlin_generator_outputs_identical(tmp_path):
    torch.manual_seed(3)
    model = create_model("marlin_lip_tiny", decoder_channels=(8, 8, 8, 8, 8), audio_width=0.125).eval()
    model.load_marlin(Marlin.from_config("vit_tiny", with_decoder=False))
    path = checkpoints.save(tmp_path / "g.safetensors", model)
    loaded = checkpoints.load(path, kind=("wav2lip", "marlin_lip")).model
    assert isinstance(loaded, MarlinLipGenerator) and not loaded.encoder.training
    assert not any(p.requires_grad for p in loaded.encoder.parameters())
    faces, mels = torch.rand(1, 6, 16, 96, 96), torch.randn(1, 16, 1, 80, 16)
    with torch.no_grad():
        assert torch.equal(loaded(faces, mels), model(faces, mels))


def test_bgr_release_resaved_keeps_its_colour(tmp_path, release_models):
    torch.save(release_models["syncnet_color"].state_dict(), tmp_path / "expert.pth")
    first = checkpoints.load(tmp_path / "expert.pth")
    path = checkpoints.save(tmp_path / "expert.safetensors", first.model, {"audio_convention": "inference"})
    again = checkpoints.load(path)
    assert again.meta["colour"] == "bgr" and again.model.weights_colour == "bgr"
    assert same_weights(again.model, first.model)


# ----- errors ---------------------------------------------------------------------------------
def test_missing_empty_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        checkpoints.load(tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="directory"):
        checkpoints.load(tmp_path)
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        checkpoints.load(tmp_path / "empty.pth")
    (tmp_path / "text.pth").write_text("hello, not a checkpoint\n")
    with pytest.raises(CheckpointError, match="not a PyTorch or safetensors"):
        checkpoints.load(tmp_path / "text.pth")


def test_truncated_files(tmp_path, release_models):
    full = tmp_path / "q.pth"
    torch.save(release_models["quality_disc"].state_dict(), full)
    data = full.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        checkpoints.load(tmp_path / "cut.pth")
    ours = checkpoints.save(tmp_path / "q.safetensors", release_models["quality_disc"])
    data = ours.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt safetensors"):
        checkpoints.load(tmp_path / "cut.safetensors")


def test_wrong_kind(tmp_path, release_models):
    torch.save(release_models["quality_disc"].state_dict(), tmp_path / "disc.pth")
    with pytest.raises(CheckpointError, match="'quality_disc' model, expected 'wav2lip' or 'marlin_lip'"):
        checkpoints.load(tmp_path / "disc.pth", kind=("wav2lip", "marlin_lip"))
    Marlin.from_config("vit_tiny", with_decoder=False).save(tmp_path / "marlin.safetensors")
    with pytest.raises(CheckpointError, match="MARLIN checkpoint"):
        checkpoints.load(tmp_path / "marlin.safetensors")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a lip-sync model"):
        checkpoints.load(tmp_path / "other.pt")
    save_file({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="not a lip-sync model"):
        checkpoints.load(tmp_path / "other.safetensors")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list"):
        checkpoints.load(tmp_path / "list.pt")


class _Pickled:
    """Not allowed by torch.load(weights_only=True)."""


def test_pickled_objects_refused(tmp_path):
    torch.save({"state_dict": {}, "extra": _Pickled()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="weights_only"):
        checkpoints.load(tmp_path / "evil.pth")


def test_mismatched_shapes_and_keys(tmp_path, release_models):
    state = dict(release_models["syncnet_color"].state_dict())
    state["audio_encoder.0.conv_block.0.weight"] = torch.zeros(16, 1, 3, 3)
    del state["face_encoder.16.conv_block.0.bias"]
    torch.save({"state_dict": state}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as info:
        checkpoints.load(tmp_path / "bad.pth")
    message = str(info.value)
    assert "audio_encoder.0.conv_block.0.weight: file (16, 1, 3, 3) vs model (32, 1, 3, 3)" in message
    assert "face_encoder.16.conv_block.0.bias" in message and "bad.pth" in message
    # our format: the stored config no longer matches the tensors
    model = create_model("marlin_sync_tiny")
    path = checkpoints.save(tmp_path / "s.safetensors", model)
    tensors = {}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
        for k in f.keys():  # noqa: SIM118
            tensors[k] = f.get_tensor(k)
    tensors["video_proj.weight"] = tensors["video_proj.weight"][:-1]
    save_file(tensors, tmp_path / "s2.safetensors", metadata=metadata)
    with pytest.raises(CheckpointError, match="video_proj.weight"):
        checkpoints.load(tmp_path / "s2.safetensors")


def test_save_rejects_foreign_models_and_bad_meta(tmp_path):
    with pytest.raises(CheckpointError, match="not a lip-sync model"):
        checkpoints.save(tmp_path / "x.safetensors", torch.nn.Linear(2, 2))
    disc = QualityDisc()
    with pytest.raises(CheckpointError, match="audio_convention"):
        checkpoints.save(tmp_path / "x.safetensors", disc, {"audio_convention": "sideways"})
    with pytest.raises(CheckpointError, match="JSON"):
        checkpoints.save(tmp_path / "x.safetensors", disc, {"when": object()})
    assert os.listdir(tmp_path) == []
