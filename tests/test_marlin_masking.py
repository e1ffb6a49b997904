"""Masking strategies: exact visible counts, structure, determinism, facial-region guidance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from marlin import MASKING_STRATEGIES, get_config, make_mask
from marlin.masking import patch_membership

CFG = get_config("vit_tiny", img_size=64, n_frames=8)  # grid (4, 4, 4) = 64 tokens
BASE = get_config("vit_base")  # grid (8, 14, 14), 156 visible at ratio 0.9
FACIAL = (2, 3, 4, 5)  # eyes, nose, mouth (hair is a facial group too but covers large areas)


def face_labels(n_frames: int, size: int, centres: list[tuple[int, int]], face: int = 96) -> torch.Tensor:
    """Synthetic parsing maps (T, size, size) uint8: a face of side ``face`` centred per frame."""
    out = np.zeros((n_frames, size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for t, (cx, cy) in enumerate(centres):
        r = face / 2
        lab = out[t]
        lab[((xx - cx) / r) ** 2 + ((yy - cy) / (1.2 * r)) ** 2 <= 1] = 1  # skin
        lab[(yy < cy - 0.8 * r) & (np.abs(xx - cx) < r) & (yy > cy - 1.3 * r)] = 6  # hair
        parts = [((-0.6, -0.35, -0.15, -0.15), 2),  # right brow+eye (image left)
                 ((0.15, -0.35, 0.6, -0.15), 3), ((-0.12, -0.1, 0.12, 0.25), 4),  # left eye, nose
                 ((-0.35, 0.4, 0.35, 0.6), 5)]  # mouth
        for (x0, y0, x1, y1), v in parts:
            lab[int(cy + y0 * r): int(cy + y1 * r), int(cx + x0 * r): int(cx + x1 * r)] = v
    return torch.from_numpy(out)


@pytest.mark.parametrize("strategy", MASKING_STRATEGIES)
@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.75, 0.9, 0.97])
def test_exact_visible_count(strategy, ratio):
    regions = torch.randint(0, 7, (3, CFG.n_frames, 64, 64), dtype=torch.uint8)
    mask = make_mask(strategy, 3, CFG, regions=regions, generator=torch.Generator().manual_seed(0),
                     mask_ratio=ratio)
    assert mask.dtype == torch.bool and mask.shape == (3, CFG.n_tokens)
    assert mask.sum(1).tolist() == [int(CFG.n_tokens * (1 - ratio))] * 3


def test_released_count_is_156():
    regions = face_labels(16, 224, [(112, 112)] * 16, face=120)[None].expand(2, -1, -1, -1)
    for strategy in MASKING_STRATEGIES:
        mask = make_mask(strategy, 2, BASE, regions=regions, generator=torch.Generator().manual_seed(3))
        assert mask.sum(1).tolist() == [156, 156]


def test_tube_and_frame_structure():
    g = torch.Generator().manual_seed(0)
    t, h, w = CFG.grid
    n_vis = CFG.n_visible(0.5)  # 32 of 64: tube = 8 full tubes of 4, frame = 2 full slices of 16
    tube = make_mask("tube", 4, CFG, generator=g, mask_ratio=0.5).view(4, t, h * w)
    assert (tube == tube[:, :1]).all()  # same spatial patches in every slice
    frame = make_mask("frame", 4, CFG, generator=g, mask_ratio=0.5).view(4, t, h * w)
    assert ((frame.sum(-1) == 0) | (frame.sum(-1) == h * w)).all()
    assert frame.sum((1, 2)).tolist() == [n_vis] * 4
    # a count that does not divide: 156 = 19 full tubes of 8 + one partial tube of 4
    big = make_mask("tube", 2, BASE, generator=g).view(2, 8, 196)
    per_pos = big.sum(1)
    assert ((per_pos == 8).sum(1) == 19).all() and ((per_pos == 4).sum(1) == 1).all()
    assert ((per_pos == 0) | (per_pos == 8) | (per_pos == 4)).all()


def test_generator_makes_masks_reproducible():
    def draw(seed):
        return make_mask("random", 2, CFG, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(draw(1), draw(1))
    assert not torch.equal(draw(1), draw(2))
    masks = draw(1)
    assert not torch.equal(masks[0], masks[1])  # each sample drawn separately


def test_patch_membership_any_pixel_and_first_frame_of_tubelet():
    regions = torch.zeros(1, CFG.n_frames, 64, 64, dtype=torch.uint8)
    regions[0, 0, 17, 33] = 5  # one mouth pixel in patch (h=1, w=2) of tubelet 0's first frame
    regions[0, 1, 40, 40] = 4  # a nose pixel in the SECOND frame of tubelet 0: ignored
    member = patch_membership(regions, CFG)  # (1, T', 7, H', W')
    assert member.shape == (1, 4, 7, 4, 4)
    assert member[0, 0, 5].nonzero().tolist() == [[1, 2]]
    assert not member[0, :, 4].any()
    assert member[0, 0, 0].all()  # every patch also touches background
    # label maps at another resolution than the clip are max-pooled onto the grid
    odd = torch.zeros(1, CFG.n_frames, 50, 50, dtype=torch.uint8)
    odd[0, 0, 0, 49] = 3
    assert patch_membership(odd, CFG)[0, 0, 3].nonzero().tolist() == [[0, 3]]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), size=st.sampled_from([64, 50]), wide=st.booleans())
def test_patch_membership_matches_a_per_patch_set(seed, size, wide):
    """Random label maps, uint8 (the loader's) or int64, on the exact grid or pooled onto it: each
    patch holds exactly the regions some pixel of it has, in the first frame of its tubelet."""
    rng = np.random.default_rng(seed)
    shape = (2, CFG.n_frames, size, size)
    labels = rng.integers(0, 7, shape) * (rng.random(shape) < 0.3)  # mostly background, some of each
    regions = torch.from_numpy(labels.astype(np.int64 if wide else np.uint8))
    member = patch_membership(regions, CFG)
    t_grid, h_grid, w_grid = CFG.grid
    assert member.shape == (2, t_grid, 7, h_grid, w_grid) and member.dtype == torch.bool
    for b in range(2):
        for t in range(t_grid):
            frame = labels[b, t * CFG.tubelet_size]
            for i in range(h_grid):
                for j in range(w_grid):  # the pixels adaptive pooling assigns to cell (i, j)
                    ys = slice(i * size // h_grid, -(-(i + 1) * size // h_grid))
                    xs = slice(j * size // w_grid, -(-(j + 1) * size // w_grid))
                    expected = set(np.unique(frame[ys, xs]).tolist())
                    assert set(member[b, t, :, i, j].nonzero().flatten().tolist()) == expected


def test_fasking_masks_facial_parts_when_background_and_skin_suffice():
    centres = [(112, 112)] * 16
    regions = face_labels(16, 224, centres, face=100)[None].expand(4, -1, -1, -1).contiguous()
    member = patch_membership(regions, BASE)  # (4, 8, 7, 14, 14)
    facial = member[:, :, list(FACIAL)].any(2).flatten(1)
    for seed in range(3):
        mask = make_mask("fasking", 4, BASE, regions=regions, generator=torch.Generator().manual_seed(seed))
        assert not (mask & facial).any()
        hair = member[:, :, 6].flatten(1)
        assert not (mask & hair).any()
    # the reverse keeps facial parts visible first: every visible patch touches a facial group
    opp = make_mask("fasking_opp", 4, BASE, regions=regions, generator=torch.Generator().manual_seed(0))
    any_face_group = member[:, :, 2:].any(2).flatten(1)
    assert (opp <= any_face_group).all()


def test_fasking_follows_moving_face():
    # the face jumps every tubelet; odd frames carry a decoy face elsewhere that must be ignored
    starts = [(60 + 12 * (i // 2), 70 + 8 * (i // 2)) if i % 2 == 0 else (170, 170) for i in range(16)]
    regions = face_labels(16, 224, starts, face=80)[None].expand(3, -1, -1, -1).contiguous()
    mask = make_mask("fasking", 3, BASE, regions=regions, generator=torch.Generator().manual_seed(0))
    first_frames = regions[:, 0::2]
    mask = mask.view(3, 8, 14, 14)
    for t in range(8):
        lab = first_frames[0, t].view(14, 16, 14, 16).permute(0, 2, 1, 3).reshape(14, 14, 256)
        touches_face = torch.zeros(14, 14, dtype=torch.bool)
        for v in FACIAL:
            touches_face |= (lab == v).any(-1)
        assert touches_face.any()
        assert not (mask[:, t] & touches_face).any()
    # the decoy position is background in the first frames, so it may be visible; make sure
    # some visible patches lie there in at least one slice (it is not treated as face)
    decoy = torch.zeros(14, 14, dtype=torch.bool)
    decoy[9:12, 9:12] = True
    assert (mask & decoy).any()


def test_fasking_without_face_is_uniform_random():
    regions = torch.zeros(2, 16, 224, 224, dtype=torch.uint8)
    mask = make_mask("fasking", 2, BASE, regions=regions, generator=torch.Generator().manual_seed(0))
    assert mask.sum(1).tolist() == [156, 156]
    per_slice = mask.view(2, 8, 196).sum(-1)
    assert ((per_slice == 19) | (per_slice == 20)).all()


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), ratio=st.sampled_from([0.5, 0.75, 0.9]))
def test_fasking_property_random_blobs(seed, ratio):
    """Exact counts; facial patches stay hidden whenever background+skin give enough candidates."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((2, CFG.n_frames, 64, 64), np.uint8)
    for b in range(2):
        for t in range(CFG.n_frames):
            for v in rng.integers(1, 7, size=rng.integers(1, 6)):
                y, x = rng.integers(0, 56, size=2)
                hh, ww = rng.integers(1, 24, size=2)
                labels[b, t, y: y + hh, x: x + ww] = v
    regions = torch.from_numpy(labels)
    mask = make_mask("fasking", 2, CFG, regions=regions, generator=torch.Generator().manual_seed(seed),
                     mask_ratio=ratio)
    n_vis = CFG.n_visible(ratio)
    assert mask.sum(1).tolist() == [n_vis, n_vis]
    member = patch_membership(regions, CFG).flatten(3)  # (B, T', 7, HW)
    facial = member[:, :, 2:].any(2)
    plain = ~facial  # patches touching only background / skin
    quota_max = -(-n_vis // CFG.grid[0])
    vis = mask.view(2, CFG.grid[0], -1)
    enough = plain.sum(-1) >= quota_max
    assert not (vis & facial)[enough].any()


def test_bad_masking_inputs():
    with pytest.raises(ValueError, match="unknown masking strategy 'blocks'"):
        make_mask("blocks", 1, CFG)
    with pytest.raises(ValueError, match="needs region label maps"):
        make_mask("fasking", 1, CFG)
    with pytest.raises(ValueError, match=r"region ids must lie in \[0, 7\)"):
        make_mask("fasking", 1, CFG, regions=torch.full((1, 8, 64, 64), 9, dtype=torch.uint8))
    with pytest.raises(ValueError, match="regions have 4 frames"):
        make_mask("fasking", 1, CFG, regions=torch.zeros(1, 4, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="mask ratio"):
        make_mask("random", 1, CFG, mask_ratio=1.0)
