"""MARLIN model: registry, shapes, parameter names and counts, attention, patches, reconstruction."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch

from marlin import Marlin, MarlinConfig, available_models, get_config, make_mask, patchify, unpatchify
from marlin.model import Attention, Block, plain_attention, sinusoid_table
from marlin.model.blocks import MLP_ROWS, _rowwise_ok

# encoder parameters (incl. the fixed position table) from the release / paper, in millions
PUBLISHED_ENCODER_PARAMS = {"vit_small": 22.5, "vit_base": 87.4, "vit_large": 305.5}


def _small(name: str) -> MarlinConfig:
    """A registry entry's widths and heads, two blocks each, on a tiny clip (2 x 2 x 2 tokens);
    the full depths are covered by the parameter-count test."""
    return get_config(name, img_size=2 * get_config(name).patch_size, n_frames=4, encoder_depth=2,
                      decoder_depth=2)


def test_registry_names_and_published_sizes():
    assert available_models() == ["vit_tiny", "vit_small", "vit_base", "vit_large"]
    base = get_config("vit_base")
    assert (base.img_size, base.n_frames, base.patch_size, base.tubelet_size) == (224, 16, 16, 2)
    assert base.grid == (8, 14, 14) and base.n_tokens == 1568 and base.patch_dim == 1536
    assert base.n_visible() == 156
    assert get_config("marlin_vit_small_ytf") == get_config("vit_small")
    tiny = get_config("vit_tiny")
    assert tiny.img_size in (96, 112) and tiny.encoder_dim < 384


@pytest.mark.parametrize("name", ["vit_small", "vit_base", "vit_large"])
def test_parameter_counts_match_release(name):
    with torch.device("meta"):
        model = Marlin.from_config(name)
    n_enc = sum(p.numel() for p in model.encoder.parameters()) / 1e6
    assert n_enc == pytest.approx(PUBLISHED_ENCODER_PARAMS[name], rel=0.01)
    cfg = model.config
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    e, d = cfg.encoder_dim, cfg.decoder_dim
    assert shapes["encoder.patch_embedding.projection.weight"] == (e, 3, 2, 16, 16)
    assert shapes["encoder.pos_embedding.emb"] == (1, 1568, e)
    assert shapes["encoder.blocks.0.attn.qkv.weight"] == (3 * e, e)
    assert shapes["encoder.blocks.0.attn.q_bias"] == (e,)
    assert shapes["encoder.blocks.0.mlp.layers.0.linear.weight"] == (4 * e, e)
    assert shapes[f"encoder.blocks.{cfg.encoder_depth - 1}.mlp.layers.1.linear.bias"] == (e,)
    assert shapes["decoder.mask_token"] == (1, 1, d)
    assert shapes["decoder.head.weight"] == (1536, d)
    assert shapes["enc_dec_proj.weight"] == (d, e)
    assert "encoder.blocks.0.attn.k_bias" not in shapes and "enc_dec_proj.bias" not in shapes


@pytest.mark.parametrize("name", available_models())
def test_random_init_forward_every_registry_entry(name):
    cfg = _small(name) if name != "vit_tiny" else get_config(name)
    torch.manual_seed(0)
    model = Marlin(cfg).eval()
    x = torch.rand(2, *cfg.clip_shape)
    mask = make_mask("random", 2, cfg, generator=torch.Generator().manual_seed(1), mask_ratio=0.5)
    n_vis = cfg.n_visible(0.5)
    pred = model(x, mask)
    assert pred.shape == (2, cfg.n_tokens - n_vis, cfg.patch_dim)
    seq = model.extract_features(x, keep_seq=True)
    pooled = model.extract_features(x, keep_seq=False)
    assert seq.shape == (2, cfg.n_tokens, cfg.encoder_dim)
    assert pooled.shape == (2, cfg.encoder_dim)
    assert torch.isfinite(pred).all() and torch.isfinite(seq).all()
    # per-token LayerNorm with unit weight: zero mean, unit variance per token
    assert seq.mean(-1).abs().max() < 1e-4
    assert model.grid == cfg.grid


def test_pooled_is_norm_of_token_mean():
    cfg = get_config("vit_tiny", img_size=48, n_frames=8)
    model = Marlin(cfg, with_decoder=False).eval()
    with torch.no_grad():
        for p in model.encoder.norm.parameters():
            p.normal_()
        x = torch.rand(1, *cfg.clip_shape)
        tokens = model.encoder.embed(x)
        for block in model.encoder.blocks:
            tokens = block(tokens)
        want = model.encoder.norm(tokens.mean(1))
        torch.testing.assert_close(model.extract_features(x, keep_seq=False), want)
        # not the mean of the normed tokens
        assert not torch.allclose(model.encoder.norm(tokens).mean(1), want, atol=1e-3)


def test_sdpa_attention_equals_plain_softmax():
    torch.manual_seed(0)
    attn = Attention(64, 4)
    with torch.no_grad():
        attn.q_bias.normal_()
        attn.v_bias.normal_()
    x = torch.randn(3, 50, 64)
    fast = attn(x)
    attn.use_sdpa = False
    slow = attn(x)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    # the key bias is zero: adding a constant to every key changes nothing in softmax,
    # so check q/v biases are actually used instead
    with torch.no_grad():
        attn.v_bias.add_(1.0)
    assert not torch.allclose(attn(x), slow)
    q, k, v = torch.randn(3, 2, 2, 7, 8).unbind(0)
    want = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, -1) @ v
    torch.testing.assert_close(plain_attention(q, k, v), want)


def test_block_equals_textbook_prenorm_formula_with_gradients():
    torch.manual_seed(0)
    block = Block(64, 4)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 10, 64, requires_grad=True)

    def plain(t):
        t = t + block.attn(block.norm1(t))
        return t + block.mlp(block.norm2(t))

    params = [x, *block.parameters()]
    got = block(x)
    want = plain(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(torch.autograd.grad(got.square().sum(), params),
                    torch.autograd.grad(want.square().sum(), params)):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast takes the plain path
        torch.testing.assert_close(block(x).float(), want, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("tokens", [MLP_ROWS + 1, 2 * MLP_ROWS, 2 * MLP_ROWS + 7])
def test_block_inference_in_row_blocks_equals_the_whole(tokens):
    """Without autograd on a CPU the MLP runs in blocks of MLP_ROWS tokens: same result."""
    torch.manual_seed(1)
    block = Block(32, 4).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, tokens, 32)
    with torch.no_grad():
        assert _rowwise_ok(block(x), block.mlp.layers[1].linear)
        want = x + block.attn(block.norm1(x))
        want = want + block.mlp(block.norm2(want))
        got = block(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with torch.inference_mode():
        torch.testing.assert_close(block(x), want, rtol=1e-5, atol=1e-5)
    assert not _rowwise_ok(x.requires_grad_(), block.mlp.layers[1].linear)  # training: the plain path
    torch.testing.assert_close(block(x), want, rtol=1e-5, atol=1e-5)


def test_attention_key_bias_is_zero():
    attn = Attention(8, 2)
    with torch.no_grad():
        attn.q_bias.fill_(1.0)
        attn.v_bias.fill_(2.0)
    bias = attn.qkv_bias()
    assert bias.tolist() == [1.0] * 8 + [0.0] * 8 + [2.0] * 8


def test_sinusoid_table_formula():
    table = sinusoid_table(20, 6)
    pos, j = 13, torch.arange(6)
    angle = pos / 10000 ** (2 * (j // 2) / 6)
    want = torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle))
    torch.testing.assert_close(table[pos], want.float())
    assert Marlin.from_config("vit_tiny").encoder.pos_embedding.emb.requires_grad is False


def test_patchify_layout_and_roundtrip():
    cfg = get_config("vit_tiny", img_size=32, n_frames=4)
    x = torch.rand(2, *cfg.clip_shape)
    patches = patchify(x, cfg)
    assert patches.shape == (2, cfg.n_tokens, cfg.patch_dim)
    torch.testing.assert_close(unpatchify(patches, cfg), x)
    # token (t=1, h=0, w=1); vector index (c, t, h, w) with channel outermost
    t_grid, h_grid, w_grid = cfg.grid
    token = 1 * h_grid * w_grid + 0 * w_grid + 1
    p, tub = cfg.patch_size, cfg.tubelet_size
    c, dt, dh, dw = 2, 1, 3, 5
    index = ((c * tub + dt) * p + dh) * p + dw
    assert patches[1, token, index] == x[1, c, 1 * tub + dt, 0 * p + dh, 1 * p + dw]


def test_reconstruct_keeps_visible_and_fills_masked():
    cfg = get_config("vit_tiny", img_size=48, n_frames=8)
    model = Marlin(cfg).eval()
    x = torch.rand(2, *cfg.clip_shape)
    mask = make_mask("tube", 2, cfg, generator=torch.Generator().manual_seed(0))
    out = model.reconstruct(x, mask)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    got, src = patchify(out, cfg), patchify(x, cfg)
    torch.testing.assert_close(got[mask], src[mask])
    with torch.no_grad():
        pred = model(x, mask).clamp(0, 1)
    torch.testing.assert_close(got[~mask], pred.reshape(-1, cfg.patch_dim))
    only_pred = patchify(model.reconstruct(x, mask, paste_visible=False), cfg)
    assert only_pred[mask].abs().max() == 0


def test_training_step_gradients():
    cfg = get_config("vit_tiny", img_size=48, n_frames=8)
    model = Marlin(cfg).train()
    x = torch.rand(2, *cfg.clip_shape)
    mask = make_mask("random", 2, cfg, generator=torch.Generator().manual_seed(0))
    target = model.patchify(x)[~mask].view(2, -1, cfg.patch_dim)
    loss = torch.nn.functional.mse_loss(model(x, mask), target)
    loss.backward()
    assert model.encoder.blocks[0].attn.q_bias.grad is not None
    assert model.decoder.mask_token.grad.abs().sum() > 0
    assert model.encoder.pos_embedding.emb.grad is None
    # training-mode extract_features keeps the graph (fine-tuning), eval mode does not
    assert model.extract_features(x[:1]).requires_grad
    assert not model.eval().extract_features(x[:1]).requires_grad


def test_bad_inputs_raise_clear_errors():
    cfg = get_config("vit_tiny")
    model = Marlin(cfg, with_decoder=False)
    with pytest.raises(RuntimeError, match="no decoder"):
        model(torch.rand(1, *cfg.clip_shape), torch.ones(1, cfg.n_tokens, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"expects clips of shape \(B, 3, 16, 112, 112\)"):
        model.extract_features(torch.rand(1, 3, 8, 112, 112))
    full = Marlin(cfg)
    with pytest.raises(ValueError, match="mask must be bool"):
        full(torch.rand(1, *cfg.clip_shape), torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="vit_tiny"):
        get_config("vit_huge")
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        MarlinConfig(img_size=100)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.img_size = 64  # type: ignore[misc]
    assert MarlinConfig.from_json(cfg.to_json()) == cfg


def test_import_is_light():
    heavy = "('cv2', 'mediapipe', 'av', 'marlin.face', 'marlin.video')"
    code = ("import sys, marlin; from marlin import Marlin; "
            f"bad = [m for m in {heavy} if m in sys.modules]; "
            "assert not bad, bad; assert set(marlin.__all__) >= {'Marlin', 'MarlinConfig', 'make_mask'}")
    subprocess.run([sys.executable, "-c", code], check=True)
