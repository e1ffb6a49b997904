"""lipsync.metrics.perceptual: SSIM / PSNR against scikit-image, LPIPS without downloads."""

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from lipsync.metrics.perceptual import PSNR_CAP, LPIPSMetric, psnr, ssim


def _frames():
    from media import face_photo, place

    photo = face_photo("grace_hopper")
    ref = np.stack([place(photo, (72, 88), (44 + i, 36), 0.12) for i in range(3)])
    rng = np.random.default_rng(0)
    noisy = np.clip(ref.astype(int) + rng.integers(-25, 26, ref.shape), 0, 255).astype(np.uint8)
    shifted = np.roll(ref, 2, axis=2)
    return ref, noisy, shifted


@pytest.mark.parametrize("which", [1, 2])
def test_ssim_and_psnr_match_scikit_image(which):
    ref, *others = _frames()
    gen = others[which - 1]
    want_ssim = [structural_similarity(g, r, channel_axis=-1, data_range=255) for g, r in zip(gen, ref)]
    want_psnr = [peak_signal_noise_ratio(r, g, data_range=255) for g, r in zip(gen, ref)]
    np.testing.assert_allclose(ssim(gen, ref), want_ssim, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(psnr(gen, ref), want_psnr, rtol=1e-12)
    # float32 (the fast GPU path) stays close
    np.testing.assert_allclose(ssim(gen, ref, dtype=torch.float32), want_ssim, atol=1e-4)


def test_identical_frames():
    ref, _, _ = _frames()
    assert np.allclose(ssim(ref, ref), 1.0)
    assert (psnr(ref, ref) == PSNR_CAP).all()


def test_pair_shape_errors():
    ref, _, _ = _frames()
    with pytest.raises(ValueError, match="same shape|one shape"):
        psnr(ref, ref[:, :-1])
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim(ref[:, :5, :5], ref[:, :5, :5])


def test_lpips_random_backbone_finite_and_ordered():
    ref, noisy, shifted = _frames()
    metric = LPIPSMetric("alex", backbone=None, device="cpu")
    assert metric.random_backbone
    d_same = metric(ref, ref)
    d_noisy = metric(noisy, ref)
    assert d_same.shape == (3,) and np.allclose(d_same, 0, atol=1e-7)
    assert np.isfinite(d_noisy).all() and (d_noisy > 0).all()


def test_lpips_loads_torchvision_backbone_file(tmp_path):
    from lipsync.compat import import_torchvision

    tv = import_torchvision()
    torch.manual_seed(3)
    alex = tv.models.alexnet(weights=None)
    path = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(alex.state_dict(), path)
    metric = LPIPSMetric("alex", backbone=path, device="cpu")
    assert not metric.random_backbone
    assert torch.equal(metric.model.net.slice1._modules["0"].weight, alex.features[0].weight)
    assert torch.equal(metric.model.net.slice5._modules["10"].weight, alex.features[10].weight)
    # the shipped linear layers are loaded (not the zero/random init)
    import lpips

    shipped = torch.load(f"{lpips.__path__[0]}/weights/v0.1/alex.pth", map_location="cpu", weights_only=True)
    assert torch.equal(metric.model.lin0.model[1].weight, shipped["lin0.model.1.weight"])
    ref, noisy, _ = _frames()
    assert np.isfinite(metric(noisy, ref)).all()


def test_lpips_rejects_wrong_backbone_file(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="wrong.pth"):
        LPIPSMetric("alex", backbone=path, device="cpu")
    with pytest.raises(ValueError, match="unknown LPIPS net"):
        LPIPSMetric("resnet")
