"""Token masking for MARLIN pretraining: random, tube, frame and facial-region-guided.

Every strategy returns a ``(B, N)`` bool tensor, True = visible, with exactly
``config.n_visible(ratio) = int(N * (1 - ratio))`` visible tokens in every sample, so that the
visible tokens of a batch stack into one ``(B, N_visible, E)`` tensor.

Facial-region-guided masking ("fasking", MARLIN) takes per-frame region label maps
``(B, T, H, W)`` uint8 with the ids of :data:`REGION_NAMES` (those of ``marlin.face.REGIONS``).
Each tube patch takes the labels of its tubelet's FIRST frame, and belongs to every region of
which ANY of its pixels carries the label (max-pool).  Groups enter the visible-candidate set in
the keep order -- background, skin, then the five facial groups (both brow+eye groups, nose,
mouth, hair) in random order -- until a time slice has at least its quota of candidates; then
random candidates are dropped until exactly the quota stays visible.  A patch touching a facial
group counts as that group (not as skin/background), so eyes, nose, mouth and hair stay
masked whenever background and skin offer enough candidates.  ``fasking_opp`` uses the reverse
order (facial groups first, then skin, then background).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .config import MarlinConfig, get_config

__all__ = ["MASKING_STRATEGIES", "REGION_NAMES", "make_mask", "patch_membership", "region_ranks"]

MASKING_STRATEGIES = ("random", "tube", "frame", "fasking", "fasking_opp")

#: Region ids of the label maps (same as ``marlin.face.REGIONS``).
REGION_NAMES = ("background", "skin", "right_brow_eye", "left_brow_eye", "nose", "mouth", "hair")
N_REGIONS = len(REGION_NAMES)
_FACIAL = torch.tensor([False, False, True, True, True, True, True])


def _rand(shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else "cpu"
    return torch.rand(shape, generator=generator, device=device).cpu()


def _keep_top(scores: Tensor, quota: Tensor) -> Tensor:
    """True for the ``quota`` highest scores along the last dim (quota broadcasts on the rest)."""
    order = scores.argsort(dim=-1, descending=True)
    rank = order.argsort(dim=-1)
    return rank < quota.unsqueeze(-1)


def _split_quota(total: int, parts: int, batch: int, generator: torch.Generator | None) -> Tensor:
    """``(B, parts)`` int quotas summing to ``total``; the remainder goes to random parts."""
    base, extra = divmod(total, parts)
    quota = torch.full((batch, parts), base, dtype=torch.long)
    if extra:
        quota += _keep_top(_rand((batch, parts), generator), torch.full((batch,), extra)).long()
    return quota


def patch_membership(regions: Tensor, config: MarlinConfig) -> Tensor:
    """Which regions each tube patch touches.

    Parameters
    ----------
    regions:
        ``(B, T, H, W)`` integer label maps with ids in ``[0, 7)``, one per frame (any H, W; they
        are max-pooled onto the token grid, which works best when H, W are multiples of it).

    Returns
    -------
    Tensor
        ``(B, T', 7, H', W')`` bool: patch of slice ``t`` touches region ``r`` in the first frame
        of tubelet ``t``.
    """
    if regions.ndim != 4:
        raise ValueError(f"regions must be (B, T, H, W) label maps, got shape {tuple(regions.shape)}")
    t_grid, h_grid, w_grid = config.grid
    if regions.shape[1] < config.n_frames:
        raise ValueError(f"regions have {regions.shape[1]} frames, the clip has {config.n_frames}")
    labels = regions[:, : config.n_frames : config.tubelet_size].cpu()  # (B, T', H, W)
    if labels.numel() and (labels.min() < 0 or labels.max() >= N_REGIONS):
        raise ValueError(f"region ids must lie in [0, {N_REGIONS}) ({', '.join(REGION_NAMES)}), "
                         f"got [{int(labels.min())}, {int(labels.max())}]")
    b, _, height, width = labels.shape
    if height % h_grid == 0 and width % w_grid == 0:  # exact patches: "any pixel" by reshaping
        # each pixel's region as one bit, OR-ed over the patch's pixels, in numpy: torch has no OR
        # reduction, and a chain of small multi-threaded torch ops doing it (tried) stalled while
        # the loader's workers held the cores: a vit_base GPU pretraining step went from 0.5 to
        # 0.85 s, as its main process draws every batch's masks. Single-threaded numpy is 2x faster
        # than an int64 scatter of the labels on 2 idle cores, 4x with the cores busy
        bits = np.left_shift(np.uint8(1), labels.numpy().astype(np.uint8))
        bits = bits.reshape(b, t_grid, h_grid, height // h_grid, w_grid, width // w_grid)
        cells = np.bitwise_or.reduce(bits, axis=(3, 5))  # (B, T', H', W'): a bit per region present
        present = (cells[:, :, None] >> np.arange(N_REGIONS, dtype=np.uint8)[:, None, None]) & 1
        return torch.from_numpy(present.astype(bool))
    onehot = F.one_hot(labels.long(), N_REGIONS).permute(0, 1, 4, 2, 3).float()  # (B, T', R, H, W)
    pooled = F.adaptive_max_pool2d(onehot.flatten(0, 1), (h_grid, w_grid))
    return pooled.view(b, t_grid, N_REGIONS, h_grid, w_grid) > 0.5


def region_ranks(membership: Tensor, order: Tensor) -> Tensor:
    """Position in the keep order at which each patch becomes a candidate.

    Parameters
    ----------
    membership:
        ``(B, T', R, H', W')`` bool from :func:`patch_membership`.
    order:
        ``(B, R)`` long: ``order[b, r]`` = position of region ``r`` in sample ``b``'s keep order.

    Returns
    -------
    Tensor
        ``(B, T', H', W')`` long: the earliest position among the patch's facial regions if it
        touches any, otherwise the earliest among its background/skin regions.
    """
    big = N_REGIONS
    pos = order[:, None, :, None, None].expand_as(membership)
    facial = _FACIAL.view(1, 1, -1, 1, 1).expand_as(membership)
    rank_facial = torch.where(membership & facial, pos, big).amin(dim=2)
    rank_any = torch.where(membership, pos, big).amin(dim=2)
    return torch.where(rank_facial < big, rank_facial, rank_any)


def _keep_order(batch: int, reverse: bool, generator: torch.Generator | None) -> Tensor:
    """``(B, R)`` position of each region in the keep order (facial groups shuffled)."""
    shuffled = _rand((batch, N_REGIONS - 2), generator).argsort(dim=-1)  # facial ranks 0..4
    order = torch.empty(batch, N_REGIONS, dtype=torch.long)
    if reverse:  # facial groups, then skin, then background
        order[:, 2:] = shuffled
        order[:, 1] = N_REGIONS - 2
        order[:, 0] = N_REGIONS - 1
    else:  # background, skin, then facial groups
        order[:, 0] = 0
        order[:, 1] = 1
        order[:, 2:] = shuffled + 2
    return order


def _fasking(batch: int, config: MarlinConfig, n_visible: int, regions: Tensor, reverse: bool,
             generator: torch.Generator | None) -> Tensor:
    if regions.shape[0] != batch:
        raise ValueError(f"regions have batch {regions.shape[0]}, expected {batch}")
    t_grid, h_grid, w_grid = config.grid
    ranks = region_ranks(patch_membership(regions, config), _keep_order(batch, reverse, generator))
    ranks = ranks.flatten(2)  # (B, T', HW)
    quota = _split_quota(n_visible, t_grid, batch, generator)  # (B, T')
    levels = torch.arange(N_REGIONS)
    counts = (ranks.unsqueeze(-1) <= levels).sum(dim=2)  # (B, T', R) candidates per level
    enough = counts >= quota.unsqueeze(-1)
    # first level with enough candidates (every patch is a candidate at the last level)
    level = torch.where(enough, levels, N_REGIONS).amin(dim=-1)  # (B, T')
    candidate = ranks <= level.unsqueeze(-1)
    scores = _rand(tuple(ranks.shape), generator) + candidate.float() * 2.0
    return _keep_top(scores, quota).flatten(1)


def make_mask(strategy: str, batch: int, config: MarlinConfig | str, regions: Tensor | None = None,
              generator: torch.Generator | None = None, mask_ratio: float | None = None,
              device: torch.device | str | None = None) -> Tensor:
    """Draw visibility masks for a batch of clips.

    Parameters
    ----------
    strategy:
        One of :data:`MASKING_STRATEGIES`: ``"random"`` (any tokens), ``"tube"`` (the same
        spatial patches in every time slice), ``"frame"`` (whole time slices), ``"fasking"`` /
        ``"fasking_opp"`` (facial-region guided, see the module docstring; need ``regions``).
        Tube and frame fill the count that does not divide evenly with a partial tube / slice.
    batch:
        Number of masks B.
    config:
        Model config or registry name (token grid and default ``mask_ratio``).
    regions:
        ``(B, T, H, W)`` uint8 region label maps per frame, for the fasking strategies.
    generator:
        Source of randomness (``torch.Generator``); ``None`` uses the global RNG.
    mask_ratio:
        Fraction of tokens hidden; defaults to ``config.mask_ratio``.
    device:
        Device of the returned mask (default CPU).

    Returns
    -------
    Tensor
        ``(B, N)`` bool, True = visible, exactly ``int(N * (1 - mask_ratio))`` True per row.
    """
    config = get_config(config)
    n_visible = config.n_visible(mask_ratio)
    t_grid, h_grid, w_grid = config.grid
    hw = h_grid * w_grid
    if strategy == "random":
        mask = _keep_top(_rand((batch, config.n_tokens), generator), torch.full((batch,), n_visible))
    elif strategy in ("tube", "frame"):
        # unit = the slot repeated (tube: a spatial patch over all slices; frame: a slice)
        n_units, unit_len = (hw, t_grid) if strategy == "tube" else (t_grid, hw)
        full, partial = divmod(n_visible, unit_len)
        unit_rank = _rand((batch, n_units), generator).argsort(dim=-1).argsort(dim=-1)  # 0..n_units-1
        partial_quota = torch.full((batch, n_units), partial)
        within = _keep_top(_rand((batch, n_units, unit_len), generator), partial_quota)
        grid = (unit_rank < full).unsqueeze(-1) | ((unit_rank == full).unsqueeze(-1) & within)
        mask = grid.transpose(1, 2) if strategy == "tube" else grid  # -> (B, T', HW)
        mask = mask.reshape(batch, -1)
    elif strategy in ("fasking", "fasking_opp"):
        if regions is None:
            raise ValueError(f"masking strategy {strategy!r} needs region label maps (B, T, H, W)")
        mask = _fasking(batch, config, n_visible, regions, strategy == "fasking_opp", generator)
    else:
        raise ValueError(f"unknown masking strategy {strategy!r}; choose from {list(MASKING_STRATEGIES)}")
    return mask.to(device or "cpu")
