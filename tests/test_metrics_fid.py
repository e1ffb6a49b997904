"""lipsync.metrics.fid: Fréchet distance, streaming statistics, the Inception path without downloads."""

import warnings

import numpy as np
import pytest
import torch
from scipy import linalg

from lipsync.metrics.fid import (
    ActivationStats,
    FIDExtractor,
    build_inception,
    fid_from_stats,
    frechet_distance,
)


def _random_spd(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_frechet_matches_direct_scipy_computation(method):
    rng = np.random.default_rng(0)
    d = 12
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    root = linalg.sqrtm(s1 @ s2).real
    direct = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * root)
    assert frechet_distance(mu1, s1, mu2, s2, method) == pytest.approx(direct, rel=1e-10)


def test_frechet_methods_agree_on_singular_covariances():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((6, 10)), rng.standard_normal((6, 10)) + 1  # rank 5 of 10
    args = (x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy: "Matrix is singular"
        ref = frechet_distance(*args, method="sqrtm")
    assert frechet_distance(*args) == pytest.approx(ref, rel=1e-3)
    with pytest.raises(ValueError, match="unknown method"):
        frechet_distance(*args, method="svd")


def test_frechet_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(1)
    d = 20
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    v1, v2 = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    closed = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(closed, rel=1e-10)
    assert frechet_distance(mu1, np.diag(v1), mu1, np.diag(v1)) == pytest.approx(0, abs=1e-10)


def test_frechet_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="inconsistent"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_streaming_stats_equal_numpy_over_batches_and_merge():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((500, 8)) * 3 + 100.0  # a large offset tests the shifted sums
    stats = ActivationStats(8)
    for chunk in np.array_split(x, 7):
        stats.update(chunk)
    np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-11)
    a, b = ActivationStats(8), ActivationStats(8)
    a.update(x[:123])
    b.update(x[123:])
    a.merge(b)
    np.testing.assert_allclose(a.cov, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-11)
    with pytest.raises(ValueError, match="at least 2"):
        s = ActivationStats(8)
        s.update(x[:1])
        _ = s.cov


def test_fid_from_sampled_gaussians_approaches_truth():
    rng = np.random.default_rng(3)
    d = 4
    a, b = ActivationStats(d), ActivationStats(d)
    a.update(rng.normal(0, 1, (20000, d)))
    b.update(rng.normal(0.5, 2, (20000, d)))
    truth = d * 0.25 + d * (1 - 2) ** 2  # |dmu|^2 + sum (sqrt(v1) - sqrt(v2))^2
    assert fid_from_stats(a, b) == pytest.approx(truth, rel=0.05)


def test_inception_random_init_end_to_end_finite_without_download():
    from media import face_photo

    ext = FIDExtractor(None, device="cpu", batch_size=4)
    photo = face_photo("astronaut")[::4, ::4]  # (128, 128, 3)
    rng = np.random.default_rng(0)
    frames_a = np.stack([np.roll(photo, s, axis=1) for s in range(0, 15, 5)])
    frames_b = rng.integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)  # any frame size goes in
    acts = ext.activations(frames_a)
    assert acts.shape == (3, 2048) and np.isfinite(acts).all() and acts.std() > 0
    np.testing.assert_allclose(
        ext.activations(frames_a[:1]), acts[:1], rtol=1e-5, atol=1e-6
    )  # batch-independent
    a, b = ActivationStats(), ActivationStats()
    a.update(acts)
    ext.update(b, frames_b)
    fid = fid_from_stats(a, b)  # 2048-d
    assert np.isfinite(fid) and fid > 0


def test_inception_loads_state_dict_file_and_rejects_wrong_file(tmp_path):
    net = build_inception(None, seed=1)
    body = {k[len("blocks.") :]: v for k, v in net.state_dict().items()}  # not the pytorch-fid layout
    bad = tmp_path / "bad.pth"
    torch.save(body, bad)
    with pytest.raises(ValueError, match="bad.pth"):
        build_inception(bad)
    # A file in pytorch-fid's layout (torchvision Inception names) loads and reproduces the weights.
    import pytorch_fid.inception as pfi

    from lipsync.metrics.fid import _fid_inception_body

    torch.manual_seed(5)
    ref = _fid_inception_body(pfi)
    good = tmp_path / "pt_inception.pth"
    torch.save(ref.state_dict(), good)
    loaded = build_inception(good)
    w = dict(loaded.named_parameters())["blocks.0.0.conv.weight"]
    assert torch.equal(w, ref.Conv2d_1a_3x3.conv.weight)
