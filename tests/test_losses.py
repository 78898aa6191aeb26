"""Tests for the Video-VAE training losses: Haar DWT, KL, reconstruction GAN, LPIPS, weighted sum."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ltxv.train.losses import (
    LPIPS,
    DiscriminatorConfig,
    PairDiscriminator,
    VAELossWeights,
    adaptive_gan_weight,
    discriminator_loss,
    foreground_mask,
    generator_adversarial_loss,
    haar_dwt3d,
    haar_idwt3d,
    kl_loss,
    lpips_video,
    patch_weights,
    silhouette_loss,
    vae_reconstruction_losses,
    wavelet_loss,
    weighted_mse,
)


def _video(frames: int, seed: int = 0, size: int = 8, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, frames, size, size, generator=g)


# --- Haar DWT ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [1, 2, 8])
def test_dwt_preserves_energy(frames: int) -> None:
    x = _video(frames)
    bands = haar_dwt3d(x)
    assert bands.shape == (2, 8, 3, math.ceil(frames / 2), 4, 4)
    torch.testing.assert_close(bands.square().sum(), x.square().sum())


def test_dwt_odd_frames_is_energy_of_causally_padded_video() -> None:
    x = _video(9)
    bands = haar_dwt3d(x)
    assert bands.shape == (2, 8, 3, 5, 4, 4)
    padded = torch.cat([x[:, :, :1], x], dim=2)
    torch.testing.assert_close(bands.square().sum(), padded.square().sum())
    assert bands[:, 4:, :, 0].abs().max() < 1e-6  # frame 0 paired with itself: no temporal detail


@pytest.mark.parametrize("frames", [1, 2, 9, 17])
def test_idwt_reconstructs(frames: int) -> None:
    x = _video(frames)
    torch.testing.assert_close(haar_idwt3d(haar_dwt3d(x), frames), x)


def test_image_dwt_has_zero_temporal_bands() -> None:
    bands = haar_dwt3d(_video(1))
    assert bands[:, 4:].abs().max() == 0


@pytest.mark.parametrize("frames", [1, 9])
def test_constant_input_only_lll(frames: int) -> None:
    bands = haar_dwt3d(torch.full((1, 2, frames, 4, 4), 0.7))
    assert bands[:, 0].abs().min() > 0
    assert bands[:, 1:].abs().max() < 1e-6


def test_dwt_rejects_odd_sides() -> None:
    with pytest.raises(ValueError, match="even H and W"):
        haar_dwt3d(torch.zeros(1, 3, 1, 5, 4))


@pytest.mark.parametrize("levels", [1, 2, 3])
@pytest.mark.parametrize("frames", [1, 9])
def test_wavelet_loss_zero_for_identical_and_grads_flow(frames: int, levels: int) -> None:
    target = _video(frames)
    assert wavelet_loss(target, target.clone(), levels=levels) == 0
    recon = _video(frames, seed=1).requires_grad_()
    loss = wavelet_loss(recon, target, levels=levels)
    loss.backward()
    assert loss > 0 and recon.grad is not None and recon.grad.abs().sum() > 0


def test_wavelet_loss_single_level_is_mean_abs_of_bands() -> None:
    recon, target = _video(8), _video(8, seed=1)
    expected = (haar_dwt3d(recon) - haar_dwt3d(target)).abs().mean()
    torch.testing.assert_close(wavelet_loss(recon, target), expected)


# --- KL ---------------------------------------------------------------------------------------------------


def test_kl_zero_for_standard_normal() -> None:
    assert kl_loss(torch.zeros(2, 4, 2, 3, 3), torch.zeros(2, 4, 2, 3, 3)) == 0


def test_kl_closed_form_uniform_logvar() -> None:
    c, m, s = 4, 0.5, -1.0
    mean = torch.full((2, c, 2, 3, 3), m)
    logvar = torch.full((2, 1, 2, 3, 3), s).expand_as(mean)  # the VAE's uniform log-variance
    expected = c * 0.5 * (m**2 + math.exp(s) - 1 - s)  # summed over channels, per position
    torch.testing.assert_close(kl_loss(mean, logvar), torch.tensor(expected))


# --- Reconstruction GAN -----------------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [1, 9])
def test_discriminator_shapes(frames: int) -> None:
    disc = PairDiscriminator(DiscriminatorConfig(channels=8, layers=3))
    logits = disc(torch.randn(2, 6, frames, 32, 32))
    assert logits.shape == (2, 1, frames, 4, 4)


def test_discriminator_learns_which_is_real() -> None:
    torch.manual_seed(0)
    disc = PairDiscriminator(DiscriminatorConfig(channels=8, layers=2))
    opt = torch.optim.Adam(disc.parameters(), lr=1e-2)
    real = _video(1, size=16, batch=4)
    recon = 0.3 * real  # a recognisably washed-out "reconstruction"

    def eval_loss() -> float:
        return discriminator_loss(disc, real, recon, torch.Generator().manual_seed(123)).item()

    before = eval_loss()
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        opt.zero_grad()
        discriminator_loss(disc, real, recon, g).backward()
        opt.step()
    assert eval_loss() < 0.5 * before


def test_discriminator_loss_detaches_recon_and_generator_loss_does_not() -> None:
    disc = PairDiscriminator(DiscriminatorConfig(channels=8, layers=2))
    real, recon = _video(9, size=16), _video(9, seed=1, size=16).requires_grad_()
    discriminator_loss(disc, real, recon, torch.Generator().manual_seed(0)).backward()
    assert recon.grad is None
    generator_adversarial_loss(disc, real, recon).backward()
    assert recon.grad is not None and recon.grad.abs().sum() > 0


def test_gan_patch_weights_put_the_weight_on_the_object_patches() -> None:
    """A small object on a plain background: its patches get 1 + foreground (in the real or the recon), the
    rest 1; the weighted losses are the weighted means of the per-patch losses."""
    real = -torch.ones(1, 3, 1, 32, 32)
    real[..., 2:6, 2:6] = 1.0  # an object in the top-left patch of the 4x4 logits grid
    recon = -torch.ones(1, 3, 1, 32, 32)
    recon[..., 26:30, 26:30] = 1.0  # drawn in the bottom-right one
    assert patch_weights(real, recon, torch.Size([1, 1, 1, 4, 4]), 0.0) is None
    w = patch_weights(real, recon, torch.Size([1, 1, 1, 4, 4]), 9.0)[0, 0, 0]
    assert w[0, 0] == 10 and w[3, 3] == 10 and (w.sum() - 20) == 14  # the 14 background patches weigh 1
    torch.manual_seed(0)
    disc = PairDiscriminator(DiscriminatorConfig(channels=8, layers=3))
    per_patch = 0.5 * (
        F.softplus(disc(torch.cat([real, recon], 1))) + F.softplus(-disc(torch.cat([recon, real], 1)))
    )
    expected = (per_patch[0, 0, 0] * w).sum() / w.sum()
    torch.testing.assert_close(generator_adversarial_loss(disc, real, recon, 9.0), expected)
    torch.testing.assert_close(generator_adversarial_loss(disc, real, recon), per_patch.mean())
    g = torch.Generator().manual_seed(0)
    assert torch.isfinite(discriminator_loss(disc, real, recon, g, 9.0))


def test_adaptive_gan_weight_is_gradient_norm_ratio() -> None:
    w = torch.ones(5, requires_grad=True)
    weight = adaptive_gan_weight((3.0 * w).sum(), w.sum(), w)
    torch.testing.assert_close(weight, torch.tensor(3.0 / (1.0 + 1e-4 / math.sqrt(5))))
    assert not weight.requires_grad


# --- LPIPS ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lpips_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    torch.manual_seed(0)
    model = LPIPS()
    for k in range(5):  # official lin weights are non-negative
        lin = model.get_submodule(f"lin{k}").model[1]
        lin.weight.data.abs_()
    path = str(tmp_path_factory.mktemp("lpips") / "lpips_vgg.safetensors")
    save_file(model.state_dict(), path)
    return path


def test_lpips_roundtrip_and_keys(lpips_file: str) -> None:
    from safetensors.torch import load_file

    state = load_file(lpips_file)
    assert (
        "net.slice2.5.weight" in state and "lin4.model.1.weight" in state and "scaling_layer.shift" in state
    )
    model = LPIPS.from_file(lpips_file)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert not any(p.requires_grad for p in model.parameters())


def test_lpips_missing_key_error(lpips_file: str, tmp_path) -> None:
    from safetensors.torch import load_file

    state = load_file(lpips_file)
    del state["lin3.model.1.weight"]
    state["extra"] = torch.zeros(1)
    path = str(tmp_path / "broken.safetensors")
    save_file(state, path)
    with pytest.raises(
        ValueError, match=r"missing keys \['lin3.model.1.weight'\].*unexpected keys \['extra'\]"
    ):
        LPIPS.from_file(path)
    pickle = tmp_path / "vgg.pth"  # the official LPIPS weights are a torch pickle, never loaded
    pickle.write_bytes(b"\x80\x04pickle")
    for bad in (pickle, tmp_path):
        with pytest.raises(ValueError, match=r"vae.lpips_path: .*convert the LPIPS .pth to safetensors"):
            LPIPS.from_file(bad)


def test_lpips_video_zero_for_identical_positive_otherwise(lpips_file: str) -> None:
    model = LPIPS.from_file(lpips_file)
    target = _video(2, size=32).clamp(-1, 1)
    assert lpips_video(model, target, target.clone()).abs() < 1e-6
    recon = _video(2, seed=1, size=32).clamp(-1, 1).requires_grad_()
    loss = lpips_video(model, recon, target)
    loss.backward()
    assert loss > 0 and recon.grad.abs().sum() > 0


# --- Weighted sum -----------------------------------------------------------------------------------------


def test_vae_losses_skip_zero_weights() -> None:
    recon, target = _video(9, size=16), _video(9, seed=1, size=16)
    mean, logvar = torch.randn(2, 4, 2, 1, 1), torch.zeros(2, 4, 2, 1, 1)
    weights = VAELossWeights(mse=1.0, wavelet=0.0, kl=1e-3)
    losses = vae_reconstruction_losses(recon, target, mean, logvar, weights)
    assert set(losses) == {"mse", "kl", "total"}
    torch.testing.assert_close(losses["total"], losses["mse"] + 1e-3 * losses["kl"])


def test_vae_losses_all_terms(lpips_file: str) -> None:
    recon, target = _video(9, size=32).requires_grad_(), _video(9, seed=1, size=32)
    mean, logvar = torch.randn(2, 4, 2, 1, 1), torch.zeros(2, 4, 2, 1, 1)
    weights = VAELossWeights(gan=0.1, lpips=0.5)
    disc = PairDiscriminator(DiscriminatorConfig(channels=8, layers=2))
    losses = vae_reconstruction_losses(
        recon, target, mean, logvar, weights, disc, LPIPS.from_file(lpips_file)
    )
    assert set(losses) == {"mse", "wavelet", "kl", "gan", "lpips", "total"}
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    expected = sum(getattr(weights, n) * v for n, v in losses.items() if n != "total")
    torch.testing.assert_close(losses["total"], expected)
    losses["total"].backward()
    assert recon.grad is not None and recon.grad.abs().sum() > 0


def test_vae_losses_require_networks_for_nonzero_weights() -> None:
    x = _video(1)
    with pytest.raises(ValueError, match="discriminator"):
        vae_reconstruction_losses(x, x, x, x, VAELossWeights(gan=1.0))
    with pytest.raises(ValueError, match="LPIPS"):
        vae_reconstruction_losses(x, x, x, x, VAELossWeights(lpips=1.0))


def test_foreground_mask_finds_the_object_on_a_flat_background() -> None:
    video = torch.full((1, 3, 2, 16, 16), -1.0)  # black
    video[:, 0, :, 4:8, 4:8] = 1.0  # a red square (16 of 256 pixels)
    video[:, 0, :, 9, 9] = -0.8  # a faint speck below the threshold is background
    mask = foreground_mask(video)
    assert mask.shape == (1, 1, 2, 16, 16)
    assert mask.sum() == 2 * 16 and mask[0, 0, :, 4:8, 4:8].all()


def test_weighted_mse_weighs_object_errors() -> None:
    target = torch.full((1, 3, 1, 16, 16), -1.0)
    target[:, 0, :, 4:8, 4:8] = 1.0
    without_object = torch.full_like(target, -1.0)  # wrong on the object only
    torch.testing.assert_close(weighted_mse(without_object, target, 0.0), F.mse_loss(without_object, target))
    # weight 1 + 30 on 16 pixels, 1 on 240: the mean weight is (16·31 + 240)/256
    expected = F.mse_loss(without_object, target) * 31 / ((16 * 31 + 240) / 256)
    torch.testing.assert_close(weighted_mse(without_object, target, 30.0), expected)
    background_error = target.clone()
    background_error[..., 0, 0] = 1.0  # one wrong background pixel now costs less than plain MSE's share
    assert weighted_mse(background_error, target, 30.0) < F.mse_loss(background_error, target)


def test_symmetric_foreground_weighs_objects_drawn_too_big() -> None:
    """Target-only weighting makes object colour on background pixels cheap (objects grow into blobs);
    `symmetric` gives them the object weight too, with no gradient through the mask."""
    target = torch.full((1, 3, 1, 16, 16), -1.0)
    target[:, 0, :, 6:10, 6:10] = 1.0  # a 4x4 red square
    shifted = torch.full_like(target, -1.0)
    shifted[:, 0, :, 6:10, 7:11] = 1.0  # one column right: column 6 missed, column 10 drawn on the background

    def grads(symmetric: bool) -> tuple[float, float]:
        recon = shifted.clone().requires_grad_(True)
        weighted_mse(recon, target, 30.0, symmetric).backward()
        g = recon.grad[0, 0, 0].abs()
        return float(g[6:10, 6].mean()), float(g[6:10, 10].mean())  # (missed object pixel, drawn too much)

    missed, extra = grads(symmetric=False)
    assert missed == pytest.approx(31 * extra)  # drawing outside the object costs 31x less
    missed, extra = grads(symmetric=True)
    assert missed == pytest.approx(extra) and missed > 0
    mask = torch.maximum(foreground_mask(target), foreground_mask(shifted))
    weight = 1 + 30 * mask
    expected = ((shifted - target).pow(2) * weight).mean() / weight.mean()
    torch.testing.assert_close(weighted_mse(shifted, target, 30.0, symmetric=True), expected)
    assert weighted_mse(target, target, 30.0, symmetric=True) == 0


def test_silhouette_loss_is_dice_on_the_drawn_object() -> None:
    """Soft Dice on the drawn object: 0 when exact, 1 when nothing is drawn, 1 - 2·60/124 with 4 of 64 pixels
    missing; a faint corner (distance 0.4 from the background, under the 0.5 object threshold) counts in part
    and has a gradient; frames without an object are left out; the flat background is outside the mask."""
    target = torch.full((1, 3, 2, 16, 16), -1.0)
    target[:, 0, 0, 4:12, 4:12] = 1.0  # an 8x8 red square in frame 0; frame 1 is empty
    assert silhouette_loss(target, target) == 0
    assert silhouette_loss(torch.full_like(target, -1.0), target) == 1
    missing, faint = target.clone(), target.clone()
    for y, x in ((4, 4), (4, 11), (11, 4), (11, 11)):  # the 4 corner pixels
        missing[:, 0, 0, y, x] = -1.0
        faint[:, 0, 0, y, x] = -0.6  # distance 0.4: drawn (0.4 - 0.25) / 0.5 = 0.3
    assert silhouette_loss(missing, target).item() == pytest.approx(1 - 2 * 60 / 124)
    assert silhouette_loss(faint, target).item() == pytest.approx(1 - 2 * 61.2 / 125.2)
    recon = faint.clone().requires_grad_(True)
    silhouette_loss(recon, target).backward()
    assert recon.grad[0, 0, 0, 4, 4] < 0 and recon.grad[0, :, 1].eq(0).all()  # brighten the corner
    assert silhouette_loss(torch.full_like(target, -1.0), torch.full_like(target, -1.0)) == 0  # no object
    with pytest.raises(ValueError, match="width"):
        silhouette_loss(target, target, width=0.0)
    losses = vae_reconstruction_losses(missing, target, target, target, VAELossWeights(silhouette=0.5))
    torch.testing.assert_close(losses["silhouette"], silhouette_loss(missing, target))
    # a soft-edged target (anti-aliased, decoded H.264): its edge band is left out, so an exact copy scores 0
    soft = F.avg_pool3d(F.pad(target, (1, 1, 1, 1, 0, 0), mode="replicate"), (1, 3, 3), stride=1)
    distance = (soft + 1).abs().amax(1)  # from the black background
    assert soft.shape == target.shape and ((distance > 0.25) & (distance < 0.75)).any()  # some in the band
    copy = soft.clone().requires_grad_(True)
    loss = silhouette_loss(copy, soft)
    loss.backward()
    assert loss == 0 and copy.grad.abs().sum() == 0
    assert silhouette_loss(torch.full_like(soft, -1.0), soft) == 1
