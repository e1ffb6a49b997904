"""Exactness against the reference implementation, marlin-pytorch 0.3.4, with the same weights.

CI installs it (``pip install --no-deps marlin-pytorch==0.3.4``); its model modules need only
torch and einops.
"""

from __future__ import annotations

import pytest
import torch

from marlin import Marlin, get_config, make_mask, unpatchify
from marlin.model import sinusoid_table
from marlin.model.release import build_release, release_available

pytestmark = pytest.mark.skipif(not release_available(), reason="marlin-pytorch 0.3.4 not installed")

TOL = dict(rtol=0, atol=1e-4)
# vit_small widths and heads (and the tiny entry) on short, small clips to stay fast
CONFIGS = {
    "small_width": get_config("vit_small", img_size=32, encoder_depth=3, decoder_depth=2),
    "tiny": get_config("vit_tiny", img_size=48),
}


def _pair(name: str) -> tuple[torch.nn.Module, Marlin]:
    cfg = CONFIGS[name]
    torch.manual_seed(0)
    ref = build_release(cfg)
    with torch.no_grad():  # the release initialises biases and norms to 0/1: perturb every tensor
        for key, param in ref.named_parameters():
            if not key.endswith("pos_embedding.emb"):
                param.add_(0.05 * torch.randn_like(param))
    ours = Marlin(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request):
    return request.param, *_pair(request.param)


def test_same_parameter_names_and_shapes(pair):
    _, ref, ours = pair
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert got == want


def test_extract_features_match(pair):
    name, ref, ours = pair
    x = torch.rand(2, *CONFIGS[name].clip_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for keep_seq in (True, False):
            want = ref.extract_features(x, keep_seq=keep_seq)
            got = ours.extract_features(x, keep_seq=keep_seq)
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("strategy", ["random", "fasking"])
def test_reconstruction_output_matches(pair, strategy):
    name, ref, ours = pair
    cfg = CONFIGS[name]
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, *cfg.clip_shape, generator=g)
    regions = torch.randint(0, 7, (2, cfg.n_frames, cfg.img_size, cfg.img_size), generator=g).to(torch.uint8)
    mask = make_mask(strategy, 2, cfg, regions=regions, generator=g)
    with torch.no_grad():
        want = ref(x, mask)
        got = ours(x, mask)
    assert got.shape == want.shape == (2, cfg.n_tokens - cfg.n_visible(), cfg.patch_dim)
    torch.testing.assert_close(got, want, **TOL)
    # our patch layout is the release's: its unpatch_to_img gives the same clip as ours
    patches = torch.rand(1, cfg.n_tokens, cfg.patch_dim, generator=g)
    torch.testing.assert_close(unpatchify(patches, cfg), ref.decoder.unpatch_to_img(patches), rtol=0, atol=0)


def test_release_state_dict_file_loads_and_matches(tmp_path):
    ref, _ = _pair("small_width")
    torch.save(ref.state_dict(), tmp_path / "marlin_custom.full.pt")
    ours = Marlin.from_file(tmp_path / "marlin_custom.full.pt")  # variant inferred from shapes
    cfg = CONFIGS["small_width"]
    assert (ours.config.encoder_heads, ours.config.img_size, ours.config.n_frames) == (6, 32, 16)
    x = torch.rand(1, *cfg.clip_shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(ours.extract_features(x, keep_seq=False),
                                   ref.extract_features(x, keep_seq=False), **TOL)


def test_positional_table_matches_release():
    ref = build_release(get_config("vit_small"), with_decoder=False)
    ours = sinusoid_table(1568, 384)[None]
    # the release evaluates the angles in float32 (errors up to ~1e-4 at late positions);
    # ours are computed in float64, then rounded
    torch.testing.assert_close(ours, ref.encoder.pos_embedding.emb.data, rtol=0, atol=2e-4)
    pos = torch.arange(1568, dtype=torch.float64)[:, None]
    j = torch.arange(384)
    angle = pos / 10000 ** ((2 * (j // 2)).double() / 384)
    exact = torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle))
    assert (ours[0].double() - exact).abs().max() < 1e-6
