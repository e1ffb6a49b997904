"""MARLIN-conditioned generator and sync expert: shapes, gradients, freezing, token layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lipsync.models import (
    MODELS,
    MarlinLipConfig,
    MarlinLipGenerator,
    MarlinWeightsError,
    create_model,
    prepare_for_inference,
)
from lipsync.models.marlin_encoder import tokens_to_frame_maps
from lipsync.models.marlin_generator import decoder_scales, edge_fill, neighbour_reference, rest_frames
from marlin import Marlin, get_config

GENERATOR_NAMES = [n for n, spec in MODELS.items() if spec.architecture == "marlin_lip"]
SYNC_NAMES = [n for n, spec in MODELS.items() if spec.architecture == "marlin_sync"]
# A cheaper decoder for the 192 / 256 px gradient tests (same architecture, narrower layers).
SMALL = dict(decoder_channels=(16, 16, 8, 8, 8, 8), n_res=1, audio_width=0.125, output_channels=8)


def inputs(batch: int, size: int, frames: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    faces = torch.rand(batch, 6, frames, size, size, generator=g)
    faces[:, :3, :, size // 2:] = 0
    return faces, torch.randn(batch, frames, 1, 80, 16, generator=g)


def test_decoder_scales():
    assert decoder_scales(14, 96) == [14, 24, 48, 96]
    assert decoder_scales(14, 192) == [14, 24, 48, 96, 192]
    assert decoder_scales(14, 256) == [14, 32, 64, 128, 256]
    assert decoder_scales(7, 96) == [7, 12, 24, 48, 96]
    with pytest.raises(ValueError, match="twice"):
        decoder_scales(14, 20)


def test_tokens_to_frame_maps_layout():
    """Token (t, h, w), channel half k -> frame 2t + k at (h, w)."""
    cfg = get_config("vit_tiny")
    t, h, w = cfg.grid
    e = cfg.encoder_dim
    tokens = torch.randn(2, t * h * w, e)
    maps = tokens_to_frame_maps(tokens, cfg)
    assert maps.shape == (2 * cfg.n_frames, e // 2, h, w)
    b, tt, hh, ww, k = 1, 3, 2, 5, 1
    frame = b * cfg.n_frames + 2 * tt + k
    token = tokens[b, (tt * h + hh) * w + ww]
    torch.testing.assert_close(maps[frame, :, hh, ww], token[k * e // 2:(k + 1) * e // 2])
    with pytest.raises(ValueError, match="tokens must be"):
        tokens_to_frame_maps(tokens[:, :-1], cfg)


def meta_tokens(model, windows: int) -> torch.Tensor:
    cfg = model.marlin_config
    return torch.empty(windows, cfg.n_tokens, cfg.encoder_dim, device="meta")


@pytest.mark.parametrize("name", GENERATOR_NAMES)
@pytest.mark.parametrize("size", [96, 192, 256])
def test_generator_shapes_every_size_meta(name, size):
    """Every registry size at every output size, on the meta device (shapes only, no compute).

    The encoder's own pass is exercised with real numbers on the tiny sizes below; here its
    tokens are given, so the decoder, audio path and reshapes are checked at full scale.
    """
    with torch.device("meta"):
        model = create_model(name, img_size=size).to("meta")  # MARLIN builds its sinusoid table on the CPU
        faces, mels = torch.empty(2, 6, 16, size, size), torch.empty(2, 16, 1, 80, 16)
        out = model(faces, mels, tokens=meta_tokens(model, 2))
        out4 = model(faces[0].transpose(0, 1), mels[0], tokens=meta_tokens(model, 1))
        out.float().mean().backward()
    assert out.shape == (2, 3, 16, size, size)
    assert out4.shape == (16, 3, size, size)
    assert model.scales[-1] == size and model.scales[0] == model.marlin_config.grid[1]
    assert [n for n, p in model.named_parameters() if p.grad is None and not n.startswith("encoder.")] == []
    frozen = model.config.freeze_encoder
    encoder = [p for n, p in model.encoder.named_parameters() if not n.endswith("emb")]
    assert all(p.requires_grad != frozen for p in encoder)


def test_paper_scale_shapes():
    """ViT-B: (B, 1568, 768) -> (B*16, 384, 14, 14); the first decoder block takes 768 + 6."""
    with torch.device("meta"):
        model = create_model("marlin_lip_base").to("meta")
        maps = tokens_to_frame_maps(meta_tokens(model, 2), model.marlin_config)
    assert model.marlin_config.n_tokens == 1568 and model.marlin_config.encoder_dim == 768
    assert model.marlin_config.img_size == 224
    assert maps.shape == (32, 384, 14, 14)
    assert model.decoder_blocks[0][0].conv_block[0].in_channels == 774
    assert model.scales == [14, 24, 48, 96]
    assert model.config.freeze_encoder and not any(p.requires_grad for p in model.encoder.parameters())


@pytest.mark.parametrize("size", [96, 192, 256])
def test_generator_gradients_tiny(size):
    overrides = {} if size == 96 else SMALL
    torch.manual_seed(size)
    model = create_model("marlin_lip_tiny", img_size=size, **overrides).train()
    assert not model.encoder.training  # frozen encoder stays in eval mode
    faces, mels = inputs(1, size)
    out = model(faces, mels)
    assert out.shape == (1, 3, 16, size, size) and 0 <= out.min() and out.max() <= 1
    F.l1_loss(out, faces[:, 3:]).backward()
    for n, p in model.named_parameters():
        if n.startswith("encoder."):
            assert p.grad is None, n
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, n


def test_baseline_vit_trains_its_encoder():
    torch.manual_seed(1)
    model = create_model("vit_lip_tiny", **SMALL).train()
    assert model.encoder.training and model.config.encoder_init == "random"
    faces, mels = inputs(1, 96)
    model(faces, mels).mean().backward()
    grads = [p.grad for n, p in model.encoder.named_parameters() if not n.endswith("emb")]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.fixture(scope="module")
def tiny() -> MarlinLipGenerator:
    torch.manual_seed(2)
    return create_model("marlin_lip_tiny", **SMALL).eval()


def test_encoder_sees_reference_frames(tiny):
    faces, mels = inputs(1, 96, frames=32)
    other = faces.clone()
    other[:, :3] = torch.rand_like(other[:, :3])  # a different masked target, same reference
    with torch.no_grad():
        tokens = tiny.encode(faces)
        assert tokens.shape == (2, tiny.marlin_config.n_tokens, tiny.marlin_config.encoder_dim)  # 2 windows
        torch.testing.assert_close(tiny.encode(other), tokens)
        changed = faces.clone()
        changed[:, 3:, 16:] = 0  # the reference of window 2 only
        t2 = tiny.encode(changed)
        torch.testing.assert_close(t2[0], tokens[0])
        assert (t2[1] - tokens[1]).abs().max() > 1e-3
        # precomputed tokens give the same frames as the internal encoder pass
        torch.testing.assert_close(tiny(faces, mels, tokens=tokens), tiny(faces, mels))
    masked_cfg = tiny.config.replace(encoder_frames="masked")
    masked = MarlinLipGenerator(masked_cfg).eval()
    with torch.no_grad():
        assert (masked.encode(other) - masked.encode(faces)).abs().max() > 1e-3


def test_generator_rejects_bad_windows(tiny):
    faces, mels = inputs(1, 96, frames=8)
    with pytest.raises(ValueError, match="16-frame windows"):
        tiny(faces, mels)
    faces, mels = inputs(1, 96)
    with pytest.raises(ValueError, match="tokens"):
        tiny(faces, mels, tokens=torch.zeros(2, tiny.marlin_config.n_tokens, tiny.marlin_config.encoder_dim))
    with pytest.raises(ValueError, match="decoder_channels"):
        MarlinLipConfig(marlin="vit_tiny", img_size=256, decoder_channels=(8, 8))
    with pytest.raises(ValueError, match="vit_tiny"):
        MarlinLipConfig(marlin="vit_huge")


def test_decoding_some_frames_equals_those_frames_of_the_full_output(tiny):
    faces, mels = inputs(2, 96)
    pick = torch.tensor([[3, 4, 5, 6, 7], [11, 12, 13, 14, 15]])
    with torch.no_grad():
        full = tiny(faces, mels)
        part = tiny(faces, mels, frames=pick)
    assert part.shape == (2, 3, 5, 96, 96)
    torch.testing.assert_close(part[0], full[0, :, 3:8])
    torch.testing.assert_close(part[1], full[1, :, 11:16])
    with pytest.raises(ValueError, match="index the 16 frames"):
        tiny(faces, mels, frames=pick + 5)
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        tiny(faces, mels, frames=pick[:1])


def test_audio_skip_reaches_every_scale():
    """With the token-grid audio route cut, audio still changes the output through audio_skip."""
    torch.manual_seed(3)
    faces, mels = inputs(1, 96)
    for skip in (0, 4):
        model = create_model("marlin_lip_tiny", **{**SMALL, "audio_skip": skip}).eval()
        with torch.no_grad():
            model.audio_proj.conv_block[0].weight.zero_()  # the paper's route now carries no audio
            model.audio_proj.conv_block[0].bias.zero_()
            for unit in model.audio_encoder:  # random weights large enough to tell audio apart
                unit.conv_block[0].weight.normal_(0.0, 0.5)
            diff = (model(faces, mels) - model(faces, torch.randn_like(mels))).abs().max()
        assert (diff > 0) == (skip > 0)  # exactly independent of the audio without the skip
        assert (model.decoder_blocks[-1][0].conv_block[0].in_channels
                == model.config.decoder_channels[len(model.scales) - 2] + 6 + skip)
    with pytest.raises(ValueError, match="audio_skip"):
        MarlinLipConfig(marlin="vit_tiny", audio_skip=-1)


@pytest.mark.parametrize("fill", ["zero", "edges"])
def test_reference_mask_hides_the_reference_mouth(fill):
    torch.manual_seed(4)
    model = create_model("marlin_lip_tiny", **{**SMALL, "reference_mask": (0.25, 0.5, 0.75, 0.75),
                                               "reference_fill": fill}).eval()
    assert create_model("marlin_lip_tiny").config.reference_mask is not None  # on in the tiny sizes
    faces, mels = inputs(1, 96)
    inside, outside = faces.clone(), faces.clone()
    inside[:, 3:, :, 48:72, 24:72] = torch.rand(3, 16, 24, 48)  # the reference's mouth box only
    outside[:, 3:, :, 80:, :] = 0.5
    with torch.no_grad():
        out = model(faces, mels)
        torch.testing.assert_close(model(inside, mels), out, rtol=0, atol=0)
        torch.testing.assert_close(model.encode(inside), model.encode(faces), rtol=0, atol=0)
        assert (model(outside, mels) - out).abs().max() > 0
    with pytest.raises(ValueError, match="reference_mask"):
        MarlinLipConfig(marlin="vit_tiny", reference_mask=(0.5, 0.5, 0.4, 0.9))
    with pytest.raises(ValueError, match="reference_fill"):
        MarlinLipConfig(marlin="vit_tiny", reference_fill="noise")


def test_mean_fill_shows_the_window_average_mouth_not_each_frame():
    # "mean": within a window the frames' mouths may be shuffled (same average) without changing
    # the output; a different average mouth changes it, and windows do not share their fill
    torch.manual_seed(5)
    model = create_model("marlin_lip_tiny", **{**SMALL, "reference_mask": (0.25, 0.5, 0.75, 0.75),
                                               "reference_fill": "mean"}).eval()
    faces, mels = inputs(2, 96)
    faces[:, 3:, :, 48:72, 24:72] = torch.rand(2, 3, 16, 24, 48)
    shuffled = faces.clone()
    shuffled[:, 3:, :, 48:72, 24:72] = faces[:, 3:, torch.randperm(16), 48:72, 24:72]
    brighter = faces.clone()
    brighter[1, 3:, :, 48:72, 24:72] += 0.2
    with torch.no_grad():
        out = model(faces, mels)
        torch.testing.assert_close(model(shuffled, mels), out, rtol=0, atol=1e-5)
        changed = (model(brighter, mels) - out).abs().amax(dim=(1, 2, 3, 4))
    assert changed[0] == 0 and changed[1] > 1e-4
    x = model._mask_reference(faces.transpose(1, 2).reshape(32, 6, 96, 96))
    box = x[:, 3:, 48:72, 24:72].reshape(2, 16, 3, 24, 48)
    torch.testing.assert_close(box, faces[:, 3:, :, 48:72, 24:72].mean(2, keepdim=True)
                               .transpose(1, 2).expand(-1, 16, -1, -1, -1))


def test_rest_fill_shows_each_windows_most_closed_mouth():
    nan = float("nan")
    openings = torch.tensor([0.3, 0.1, 0.2, nan, nan, nan, nan, nan, 0.0, nan, 0.5, 0.4])
    assert rest_frames(openings, 4).tolist() == [1, 0, 0]  # NaN is unknown; all unknown: frame 0
    with pytest.raises(ValueError, match="openings"):
        rest_frames(openings, 5)
    torch.manual_seed(6)
    model = create_model("marlin_lip_tiny", **{**SMALL, "reference_mask": (0.25, 0.5, 0.75, 0.75),
                                               "reference_fill": "rest"}).eval()
    faces, mels = inputs(2, 96)
    rest = torch.tensor([3, 12])
    x = model._mask_reference(faces.transpose(1, 2).reshape(32, 6, 96, 96), rest)
    box = x[:, 3:, 48:72, 24:72].reshape(2, 16, 3, 24, 48)
    for w in range(2):  # every frame of a window shows its rest frame's box; outside it, itself
        torch.testing.assert_close(box[w], faces[w, 3:, rest[w], 48:72, 24:72].expand(16, -1, -1, -1))
    torch.testing.assert_close(x[:, 3:, :48], faces[:, 3:, :, :48].transpose(1, 2).reshape(32, 3, 48, 96))
    other = faces.clone()
    other[0, 3:, 5, 48:72, 24:72] = 0.5  # not a rest frame: its mouth is not shown
    with torch.no_grad():
        out = model(faces, mels, rest=rest)
        torch.testing.assert_close(model(other, mels, rest=rest), out, rtol=0, atol=0)
        assert (model(faces, mels, rest=torch.tensor([4, 12])) - out).abs().max() > 0
    with pytest.raises(ValueError, match="needs rest"):
        model(faces, mels)
    with pytest.raises(ValueError, match="rest indices"):
        model(faces, mels, rest=torch.tensor([0, 16]))


def test_edge_fill_continues_the_shading_around_the_box():
    # a plane a*x + b*y + c is rebuilt exactly (both interpolations are linear), whatever was inside
    ys, xs = torch.meshgrid(torch.arange(40.0), torch.arange(32.0), indexing="ij")
    plane = torch.stack([0.01 * xs + 0.02 * ys, 0.5 - 0.01 * ys, 0.003 * xs + 0.2])[None]  # (1, 3, 40, 32)
    box = (6, 20, 26, 35)
    messed = plane.clone()
    messed[..., 20:35, 6:26] = torch.rand(3, 15, 20)
    torch.testing.assert_close(edge_fill(messed, box), plane[..., 20:35, 6:26], rtol=0, atol=1e-6)
    # a box on the image's edge takes its own outermost column there
    flat = torch.full((2, 3, 16, 16), 0.25)
    flat[..., 4:12, 8:15] = torch.rand(2, 3, 8, 7)
    got = edge_fill(flat, (8, 4, 16, 12))
    assert got.shape == (2, 3, 8, 8)
    torch.testing.assert_close(got, torch.full_like(got, 0.25), rtol=0, atol=1e-6)


def test_load_marlin_weights(tiny):
    marlin = Marlin.from_config("vit_tiny", with_decoder=True)
    model = MarlinLipGenerator(tiny.config)
    model.load_marlin(marlin)
    for k, v in marlin.encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[k], v)
    full = {f"encoder.{k}": v.clone() for k, v in marlin.encoder.state_dict().items()}
    full["decoder.mask_token"] = torch.zeros(1, 1, 96)  # decoder keys are ignored
    model.load_marlin(full)
    with pytest.raises(MarlinWeightsError, match="shape mismatch|missing"):
        model.load_marlin(Marlin.from_config("vit_small", with_decoder=False))


def test_inference_copy_of_marlin_generator(tiny):
    faces, mels = inputs(1, 96)
    fast = prepare_for_inference(tiny)
    with torch.no_grad():
        expected = tiny(faces, mels)
    got = fast(faces, mels, tokens=fast.encode(faces))
    assert (got - expected).abs().max() < 1e-4
    assert fast.frames_per_window == 16 and fast.img_size == 96


def test_neighbour_reference_takes_the_adjacent_window():
    x = torch.arange(48).view(48, 1, 1)
    got = neighbour_reference(x, 16).flatten()
    assert got[:16].tolist() == list(range(16, 32))  # the first window borrows the second
    assert got[16:].tolist() == list(range(0, 32))  # the others, the one before
    one = neighbour_reference(torch.arange(16), 16)
    assert one.tolist() == list(range(8, 16)) + list(range(8))  # alone: half a window away
    with pytest.raises(ValueError, match="whole windows"):
        neighbour_reference(torch.arange(20), 16)
    with pytest.raises(ValueError, match="inference_reference"):
        create_model("marlin_lip_tiny", inference_reference="later")


@pytest.mark.parametrize("how", ["same", "neighbour"])
def test_runner_gives_the_reference_the_generator_was_trained_with(how):
    """The inference runner's reference: the crops themselves, or their neighbouring windows."""
    from lipsync.inference.runner import GeneratorRunner

    model = create_model("marlin_lip_tiny", img_size=48, composite=True, reference_mask=None,
                         inference_reference=how).eval()
    model.composite.bias.data.fill_(30.0)  # the output is the reference it was given
    runner = GeneratorRunner(model, torch.device("cpu"), precision="fp32", optimize=False)
    g = torch.Generator().manual_seed(0)
    crops = torch.randint(0, 256, (32, 48, 48, 3), generator=g, dtype=torch.uint8).numpy()
    out = runner(crops, torch.zeros(32, 80, 16).numpy())
    expected = crops if how == "same" else crops[list(range(16, 32)) + list(range(16))]
    assert abs(out.astype(int) - expected.astype(int)).max() <= 1


def test_runner_shows_the_rest_frame_chosen_from_the_openings():
    from lipsync.inference.runner import GeneratorRunner

    model = create_model("marlin_lip_tiny", img_size=48, composite=True, reference_fill="rest",
                         reference_mask=(0.25, 0.5, 0.75, 0.75)).eval()
    model.composite.bias.data.fill_(30.0)  # the output is the reference it was given
    runner = GeneratorRunner(model, torch.device("cpu"), precision="fp32", optimize=False)
    assert runner.needs_openings
    g = torch.Generator().manual_seed(1)
    crops = torch.randint(0, 256, (32, 48, 48, 3), generator=g, dtype=torch.uint8).numpy()
    openings = torch.rand(32, generator=g).numpy()
    openings[[7, 20]] = -1.0  # the most closed mouth of each window
    out = runner(crops, torch.zeros(32, 80, 16).numpy(), openings=openings)
    for w, rest in ((0, 7), (1, 20)):
        box = out[16 * w:16 * w + 16, 24:36, 12:36].astype(int)
        assert abs(box - crops[rest, 24:36, 12:36].astype(int)).max() <= 1
    assert abs(out[:, :20].astype(int) - crops[:, :20].astype(int)).max() <= 1  # above the box: itself


@pytest.mark.parametrize("name", SYNC_NAMES)
def test_sync_expert_shapes_meta(name):
    """Audio branch and projections at full scale on the meta device (the ViT runs on tiny below)."""
    with torch.device("meta"):
        model = create_model(name).to("meta")
        audio = model.embed_audio(torch.empty(2, 1, 80, 64))
        tokens = torch.empty(2, model.marlin_config.n_tokens, model.marlin_config.encoder_dim)
        per_time = tokens.view(2, model.marlin_config.grid[0], -1, tokens.shape[-1]).mean(2).flatten(1)
        video = model.video_proj(per_time)
    assert audio.shape == video.shape == (2, model.config.embed_dim)


def test_sync_expert_tiny_trains_end_to_end():
    torch.manual_seed(3)
    model = create_model("marlin_sync_tiny").train()
    g = torch.Generator().manual_seed(3)
    mels, lower = torch.randn(2, 1, 80, 64, generator=g), torch.rand(2, 3, 16, 48, 96, generator=g)
    audio, video = model(mels, lower)
    torch.testing.assert_close(audio.norm(dim=1), torch.ones(2))
    sim = (audio * video).sum(1)
    assert ((sim >= 0) & (sim <= 1)).all()
    F.binary_cross_entropy(sim.clamp(1e-6, 1 - 1e-6), torch.tensor([1.0, 0.0])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None and not n.endswith("emb")]
    assert missing == []
    with pytest.raises(ValueError, match="80, 64"):
        model(torch.randn(2, 1, 80, 16), lower)
    with pytest.raises(ValueError, match="lower_faces"):
        model(mels, torch.rand(2, 3, 5, 48, 96))
    # the order of frames matters (per-time pooling keeps time)
    model.eval()
    with torch.no_grad():
        a = model.embed_video(lower)
        b = model.embed_video(lower.flip(2))
    assert (a - b).abs().max() > 1e-4


def test_warp_image_moves_pixels_by_the_flow():
    from lipsync.models.marlin_generator import warp_image

    g = torch.Generator().manual_seed(4)
    images = torch.rand(2, 3, 32, 32, generator=g)
    torch.testing.assert_close(warp_image(images, torch.zeros(2, 2, 8, 8)), images, rtol=0, atol=1e-5)
    flow = torch.zeros(2, 2, 8, 8)
    flow[:, 0], flow[:, 1] = 2.0, -3.0  # each pixel shows the one 2 right and 3 up of it
    out = warp_image(images, flow)
    torch.testing.assert_close(out[..., 3:, :30], images[..., :29, 2:], rtol=0, atol=1e-5)
    torch.testing.assert_close(out[..., 0, :30], images[..., 0, 2:], rtol=0, atol=1e-5)  # border repeats
    half = torch.zeros(2, 2, 8, 8)
    half[:, 0] = 0.5  # half a pixel right: the mean of two neighbours
    torch.testing.assert_close(warp_image(images, half)[..., :31], 0.5 * (images[..., :31] + images[..., 1:]),
                               rtol=0, atol=1e-5)
