"""Release-compatible networks: sizes, key names, shapes, gradients, colour handling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lipsync import checkpoints
from lipsync.models import (
    QualityDisc,
    QualityDiscConfig,
    SyncNetColor,
    SyncNetColorConfig,
    SyncNetV2,
    Wav2Lip,
    Wav2LipConfig,
    available_models,
    create_model,
    prepare_for_inference,
    swap_rb,
    sync_loss,
)
from lipsync.models.blocks import fold_frames, unfold_frames
from lipsync.models.inference import fold_batchnorm

# Parameter counts from REFERENCE.md section 2 (millions).
REFERENCE_PARAMS = {"wav2lip": 36.3, "syncnet_color": 16.4, "quality_disc": 14.1}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def randomise_batchnorm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial running statistics so eval-mode tests exercise BatchNorm."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


@pytest.fixture(scope="module")
def wav2lip() -> Wav2Lip:
    torch.manual_seed(0)
    return randomise_batchnorm(Wav2Lip()).eval()


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_parameter_counts_match_release(name):
    with torch.device("meta"):
        model = create_model(name)
    assert abs(n_params(model) / 1e6 - REFERENCE_PARAMS[name]) / REFERENCE_PARAMS[name] < 0.01


def test_release_key_names_and_shapes():
    with torch.device("meta"):
        gen, expert, disc = Wav2Lip(), SyncNetColor(), QualityDisc()
    g = gen.state_dict()
    assert g["face_encoder_blocks.0.0.conv_block.0.weight"].shape == (16, 6, 7, 7)
    assert g["face_encoder_blocks.2.3.conv_block.1.running_var"].shape == (64,)
    assert "face_encoder_blocks.2.3.conv_block.1.num_batches_tracked" in g
    assert g["face_encoder_blocks.6.1.conv_block.0.weight"].shape == (512, 512, 1, 1)
    assert g["audio_encoder.12.conv_block.0.weight"].shape == (512, 512, 1, 1)
    assert "audio_encoder.13.conv_block.0.weight" not in g
    assert g["face_decoder_blocks.1.0.conv_block.0.weight"].shape == (1024, 512, 3, 3)  # transposed
    assert g["face_decoder_blocks.6.2.conv_block.0.weight"].shape == (64, 64, 3, 3)
    assert g["output_block.0.conv_block.0.weight"].shape == (32, 80, 3, 3)
    assert g["output_block.1.weight"].shape == (3, 32, 1, 1)
    e = expert.state_dict()
    assert e["face_encoder.0.conv_block.0.weight"].shape == (32, 15, 7, 7)
    assert e["face_encoder.16.conv_block.0.weight"].shape == (512, 512, 1, 1)
    assert "face_encoder.17.conv_block.0.weight" not in e
    assert e["audio_encoder.13.conv_block.0.weight"].shape == (512, 512, 1, 1)
    d = disc.state_dict()
    assert d["face_encoder_blocks.1.0.conv_block.0.weight"].shape == (64, 32, 5, 5)
    assert d["face_encoder_blocks.6.1.conv_block.0.weight"].shape == (512, 512, 1, 1)
    assert d["binary_pred.0.weight"].shape == (1, 512, 1, 1)
    assert not any(".conv_block.1." in k for k in d)  # no normalisation in the discriminator


def test_generator_shapes_5d_and_4d_agree(wav2lip):
    torch.manual_seed(1)
    faces = torch.rand(1, 6, 2, 96, 96)
    mels = torch.randn(1, 2, 1, 80, 16)
    with torch.no_grad():
        out5 = wav2lip(faces, mels)
        folded, t = fold_frames(faces)
        out4 = wav2lip(folded, mels.reshape(2, 1, 80, 16))
    assert out5.shape == (1, 3, 2, 96, 96)
    assert out4.shape == (2, 3, 96, 96)
    torch.testing.assert_close(unfold_frames(out4, t), out5)
    assert 0 <= out5.min() and out5.max() <= 1
    assert (out5[:, :, 0] - out5[:, :, 1]).abs().max() > 0


def test_generator_gradients_reach_every_parameter():
    # Structural check on the meta device (no arithmetic): every parameter is on the loss's graph.
    with torch.device("meta"):
        model = Wav2Lip().train()
        out = model(torch.rand(2, 6, 1, 96, 96), torch.randn(2, 1, 1, 80, 16))
        F.l1_loss(out, torch.rand_like(out)).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_generator_rejects_bad_shapes(wav2lip):
    faces, mels = torch.rand(1, 6, 2, 96, 96), torch.randn(1, 2, 1, 80, 16)
    with pytest.raises(ValueError, match="swapped"):
        wav2lip(mels.permute(0, 2, 1, 3, 4), faces)
    with pytest.raises(ValueError, match="96x96"):
        wav2lip(torch.rand(1, 6, 2, 64, 64), mels)
    with pytest.raises(ValueError, match="mels"):
        wav2lip(faces, torch.randn(1, 3, 1, 80, 16))


def test_bgr_weights_convert_at_the_boundary(wav2lip):
    """A BGR-weights model fed RGB equals the same weights run natively on BGR."""
    bgr = Wav2Lip(Wav2LipConfig(colour="bgr")).eval()
    bgr.load_state_dict(wav2lip.state_dict())
    torch.manual_seed(3)
    faces, mels = torch.rand(1, 6, 96, 96), torch.randn(1, 1, 80, 16)
    with torch.no_grad():
        got = bgr(faces, mels)
        native = bgr.forward_native(faces[:, [2, 1, 0, 5, 4, 3]], mels)[:, [2, 1, 0]]
        rgb = wav2lip(faces, mels)
    torch.testing.assert_close(got, native)
    assert (got - rgb).abs().max() > 1e-4  # the flag changes what the weights see
    assert bgr.weights_colour == "bgr" and wav2lip.weights_colour == "rgb"


def test_swap_rb_groups_of_three():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert swap_rb(x).flatten().tolist() == [2, 1, 0, 5, 4, 3]
    with pytest.raises(ValueError, match="multiple of 3"):
        swap_rb(torch.zeros(1, 4, 1, 1))


def test_syncnet_color_embeddings_and_gradients():
    torch.manual_seed(4)
    model = SyncNetColor().train()
    mels, faces = torch.randn(2, 1, 80, 16), torch.rand(2, 3, 5, 48, 96)
    audio, video = model(mels, faces)
    assert audio.shape == video.shape == (2, 512)
    torch.testing.assert_close(audio.norm(dim=1), torch.ones(2))
    sim = (audio * video).sum(1)
    assert ((sim >= 0) & (sim <= 1)).all()
    sync_loss(sim, torch.tensor([1.0, 0.0])).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():  # the release's (B, 15, 48, 96) frame-major layout is the same input
        a = model.similarity(mels, faces)
        b = model.similarity(mels, faces.transpose(1, 2).reshape(2, 15, 48, 96))
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="lower_faces"):
        model(mels, torch.rand(2, 3, 5, 96, 96))


def test_sync_loss_is_bce():
    sim = torch.tensor([0.9, 0.2])
    expected = -(torch.log(torch.tensor(0.9)) + torch.log(torch.tensor(0.8))) / 2
    torch.testing.assert_close(sync_loss(sim, torch.tensor([1.0, 0.0])), expected)


def test_quality_disc_uses_lower_half_only():
    torch.manual_seed(5)
    disc = QualityDisc().eval()
    faces = torch.rand(1, 3, 2, 96, 96)
    with torch.no_grad():
        p = disc(faces)
        changed = faces.clone()
        changed[:, :, :, :48] = torch.rand_like(changed[:, :, :, :48])
        q = disc(changed)
        changed[:, :, :, 60:] = 0
        r = disc(changed)
    assert p.shape == (2, 1) and ((p > 0) & (p < 1)).all()
    torch.testing.assert_close(p, q)
    assert (r - q).abs().max() > 0
    disc.train()
    loss = disc.discriminator_loss(faces, torch.rand_like(faces)) + disc.generator_loss(faces)
    loss.backward()
    assert all(p.grad is not None for p in disc.parameters())
    assert QualityDisc(QualityDiscConfig(colour="bgr")).weights_colour == "bgr"


def test_lips_discriminator_judges_its_box_only(tmp_path):
    """``region``: only the box counts, seen at twice the resolution, one logit per row of the
    final map; the config (slope, box) survives a save and load."""
    torch.manual_seed(8)
    disc = create_model("quality_disc_lips_tiny").eval()
    assert disc.config.slope == 0.2 and disc.config.region == (0.25, 0.4, 0.75, 0.9)
    faces = torch.rand(2, 3, 3, 96, 96)
    with torch.no_grad():
        p = disc.logits(faces)
        outside = faces.clone()
        outside[..., :38, :] = 0  # above the box
        outside[..., 38:, :24] = 1  # left of it
        inside = faces.clone()
        inside[..., 60:70, 40:56] = 0  # the lips
        assert p.shape == (6, 4)
        torch.testing.assert_close(disc.logits(outside), p)
        assert (disc.logits(inside) - p).abs().max() > 0
    path = checkpoints.save(tmp_path / "d.safetensors", disc)
    again = checkpoints.load(path, kind="quality_disc").model.eval()
    assert again.config == disc.config
    with torch.no_grad():
        torch.testing.assert_close(again.logits(faces), p)
    with pytest.raises(ValueError, match="region"):
        QualityDiscConfig(region=(0.5, 0.4, 0.25, 0.9))
    with pytest.raises(ValueError, match="slope"):
        QualityDiscConfig(slope=1.0)


def test_fresh_discriminator_features_tell_faces_apart():
    """He initialisation: a fresh discriminator's last features still differ between faces; with
    PyTorch's default initialisation 13 unnormalised layers shrink that to about 1e-6."""
    torch.manual_seed(4)
    disc = create_model("quality_disc_tiny")
    default = create_model("quality_disc_tiny")
    for m in default.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.reset_parameters()
    faces = torch.rand(8, 3, 96, 96)
    with torch.no_grad():
        spread = {name: torch.nn.Sequential(*d.face_encoder_blocks)(d.judged(faces)).std(0).mean().item()
                  for name, d in (("he", disc), ("default", default))}
    assert spread["he"] > 1e-3 and spread["he"] > 1000 * spread["default"]
    assert disc.binary_pred[0].bias.abs().max() == 0  # starts undecided


def test_discriminator_slope_keeps_dead_units_learning():
    """A first layer negative on every input: at the release's slope 0.01 the gradient reaching
    its weights is a hundredth of what it is at 0.2 (same weights, same input)."""
    grads = {}
    for slope in (0.01, 0.2):
        torch.manual_seed(9)
        disc = QualityDisc(QualityDiscConfig(width=0.125, slope=slope))
        first = disc.face_encoder_blocks[0][0].conv_block[0]
        with torch.no_grad():
            first.bias.fill_(-50.0)  # dead: negative everywhere on faces in [0, 1]
        faces = torch.rand(4, 3, 96, 96)
        assert (first(faces[:, :, 48:]) < 0).all()
        disc.discriminator_loss(faces, torch.rand_like(faces)).backward()
        grads[slope] = first.weight.grad.abs().mean().item()
    assert grads[0.2] > 10 * grads[0.01] > 0


def test_saturated_quality_disc_still_learns():
    """Its losses work on logits: a discriminator sure that everything is real (probability 1 in
    float32) still gets a gradient that brings it back, and the generator one that fools it."""
    torch.manual_seed(7)
    disc = QualityDisc(QualityDiscConfig(width=0.125))
    with torch.no_grad():
        disc.binary_pred[0].bias.fill_(40.0)
    real, fake = torch.rand(2, 3, 96, 96), torch.rand(2, 3, 96, 96, requires_grad=True)
    assert (disc(real) == 1).all()  # saturated
    disc.discriminator_loss(real, fake).backward()
    assert disc.binary_pred[0].bias.grad.item() > 0.9  # pushes the fake logits down at full strength
    torch.testing.assert_close(disc(real), torch.sigmoid(disc.logits(real)))
    with torch.no_grad():
        disc.binary_pred[0].bias.fill_(-40.0)  # sure that everything is fake
    disc.generator_loss(fake).backward()
    assert fake.grad.abs().sum() > 0


def test_syncnet_v2_shapes_and_input_convention():
    torch.manual_seed(6)
    model = randomise_batchnorm(SyncNetV2()).eval()
    mfcc, lips = torch.randn(2, 1, 13, 20), torch.rand(2, 3, 5, 224, 224)
    with torch.no_grad():
        a, v = model(mfcc, lips)
        native = model.netfclip(model.netcnnlip(lips[:, [2, 1, 0]] * 255).flatten(1))
    assert a.shape == v.shape == (2, 1024)
    torch.testing.assert_close(v, native)
    assert model.weights_colour == "bgr"
    with pytest.raises(ValueError, match="MFCC"):
        model.forward_aud(torch.randn(2, 1, 13, 16))
    assert [k for k in model.state_dict() if k.startswith("netcnnaud.")][:2] == ["netcnnaud.0.weight",
                                                                               "netcnnaud.0.bias"]
    assert model.state_dict()["netcnnlip.18.weight"].shape == (512, 256, 1, 6, 6)
    assert model.state_dict()["netcnnaud.18.weight"].shape == (512, 256, 5, 4)


def test_registry_lists_and_builds():
    names = available_models()
    assert {"wav2lip", "syncnet_color", "quality_disc", "syncnet_v2", "marlin_lip_tiny", "marlin_lip_base",
            "vit_lip_tiny", "marlin_sync_tiny"} <= set(names)
    with pytest.raises(ValueError, match="choose from"):
        create_model("wav2lip_hq")
    with pytest.raises(ValueError, match="unknown"):
        create_model("wav2lip", size=3)
    assert create_model("syncnet_color", colour="BGR").weights_colour == "bgr"
    assert SyncNetColorConfig.from_json(SyncNetColorConfig(colour="bgr").to_json()).colour == "bgr"


@pytest.fixture(scope="module")
def eager_output(wav2lip):
    g = torch.Generator().manual_seed(7)
    faces, mels = torch.rand(1, 6, 1, 96, 96, generator=g), torch.randn(1, 1, 1, 80, 16, generator=g)
    with torch.no_grad():
        return faces, mels, wav2lip(faces, mels)


@pytest.mark.parametrize("kwargs, tol", [({}, 1e-4), ({"fold_bn": False, "channels_last": False}, 0.0),
                                         ({"dtype": torch.bfloat16}, 0.05)])
def test_prepare_for_inference_matches_eager(wav2lip, eager_output, kwargs, tol):
    faces, mels, expected = eager_output
    before = {k: v.clone() for k, v in wav2lip.state_dict().items()}
    fast = prepare_for_inference(wav2lip, **kwargs)
    got = fast(faces, mels)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert (got - expected).abs().max().item() <= tol
    assert fast.img_size == 96 and fast.frames_per_window == 1
    assert all(torch.equal(before[k], v) for k, v in wav2lip.state_dict().items())  # original untouched


def test_fold_batchnorm_counts_pairs():
    model = randomise_batchnorm(SyncNetV2()).eval()
    lips = torch.rand(1, 3, 5, 224, 224)
    with torch.no_grad():
        expected = model.forward_lip(lips)
        assert fold_batchnorm(model) == 12  # 6 audio + 6 lip conv/BN pairs; the Linear+BN1d stay
        torch.testing.assert_close(model.forward_lip(lips), expected, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("name, dim", [("syncnet_color_tiny", 128), ("quality_disc_tiny", None)])
def test_narrow_expert_and_discriminator(name, dim):
    """``width`` scales every layer; the release's names stay (only shapes shrink)."""
    torch.manual_seed(6)
    small, full = create_model(name).eval(), create_model(name.removesuffix("_tiny"))
    assert n_params(small) < n_params(full) / 10
    assert set(small.state_dict()) == set(full.state_dict())
    if dim is None:
        assert small(torch.rand(3, 3, 96, 96)).shape == (3, 1)
    else:
        audio, video = small(torch.randn(2, 1, 80, 16), torch.rand(2, 3, 5, 48, 96))
        assert audio.shape == video.shape == (2, dim)
    with pytest.raises(ValueError, match="width"):
        SyncNetColorConfig(width=0)
