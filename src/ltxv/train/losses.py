"""Video-VAE training losses (LTX-Video §3.1): pixel MSE, video DWT L1, KL, reconstruction GAN, LPIPS."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors.torch import load_file
from torch import Tensor, nn

# ---------------------------------------------------------------------------------------------------------
# Haar wavelets. Sub-band k = 4·t + 2·h + w with bits (t, h, w) ∈ {0 = low, 1 = high}, so LLL is band 0.


def _haar_basis(dims: int, like: Tensor) -> Tensor:
    """Orthonormal (2^dims, 2^dims) Haar basis: kron of [[1, 1], [1, −1]]/√2; orthogonal, so inverse = .T."""
    h = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=like.dtype, device=like.device) / math.sqrt(2.0)
    basis = h
    for _ in range(dims - 1):
        basis = torch.kron(basis, h)
    return basis


def haar_dwt3d(x: Tensor) -> Tensor:
    """One level of the orthonormal 3-D Haar DWT: (B, C, F, H, W) -> (B, 8, C, ceil(F/2), H/2, W/2).

    Odd F > 1 prepends one copy of frame 0 (causal replicate padding, as the VAE's CausalConv3d), so the
    first frame is paired with itself and carries no temporal detail. F == 1 (images) uses the 2-D Haar
    transform: bands 0..3 are LL, LH, HL, HH and the temporal-high bands 4..7 are zeros. Energy
    (sum of squares) is preserved exactly for even F and F == 1.
    """
    if x.ndim != 5 or x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"haar_dwt3d needs (B, C, F, H, W) with even H and W, got {tuple(x.shape)}")
    if x.shape[2] == 1:
        x = rearrange(x, "b c f (h q) (w r) -> b c f h w (q r)", q=2, r=2)
        bands = torch.einsum("kn,bcfhwn->bkcfhw", _haar_basis(2, x), x)  # (B, 4, C, 1, H/2, W/2)
        return torch.cat([bands, torch.zeros_like(bands)], dim=1)  # (B, 8, C, 1, H/2, W/2)
    if x.shape[2] % 2:
        x = torch.cat([x[:, :, :1], x], dim=2)  # (B, C, F+1, H, W)
    x = rearrange(x, "b c (f p) (h q) (w r) -> b c f h w (p q r)", p=2, q=2, r=2)
    return torch.einsum("kn,bcfhwn->bkcfhw", _haar_basis(3, x), x)  # (B, 8, C, F/2, H/2, W/2)


def haar_idwt3d(bands: Tensor, num_frames: int) -> Tensor:
    """Inverse of haar_dwt3d: (B, 8, C, F2, H2, W2) -> (B, C, num_frames, 2·H2, 2·W2).

    num_frames (the original F) must be 2·F2 or 2·F2 − 1; it cannot be inferred from the bands.
    For num_frames == 1 only bands 0..3 are used; for odd num_frames the padded first frame is dropped.
    """
    f2 = bands.shape[3]
    if num_frames not in (2 * f2 - 1, 2 * f2):
        raise ValueError(f"num_frames={num_frames} is incompatible with {f2} sub-band frames")
    if num_frames == 1:
        x = torch.einsum("kn,bkcfhw->bcfhwn", _haar_basis(2, bands), bands[:, :4])
        return rearrange(x, "b c f h w (q r) -> b c f (h q) (w r)", q=2, r=2)  # (B, C, 1, H, W)
    x = torch.einsum("kn,bkcfhw->bcfhwn", _haar_basis(3, bands), bands)
    x = rearrange(x, "b c f h w (p q r) -> b c (f p) (h q) (w r)", p=2, q=2, r=2)  # (B, C, 2·F2, H, W)
    return x[:, :, 2 * f2 - num_frames :]


def wavelet_loss(recon: Tensor, target: Tensor, levels: int = 1) -> Tensor:
    """Video DWT loss (LTX-Video §3.1): L1 between the Haar coefficients of recon and target.

    The DWT is linear, so it is applied once to (recon − target). With levels > 1 the LLL band is
    transformed again; the coefficients are the detail bands of every level plus the last LLL band (a
    standard multi-level decomposition, so no coefficient is counted twice). The loss is the mean |·| over
    all those coefficients; for images (F == 1) the all-zero temporal-high bands are left out.
    """
    if levels < 1:
        raise ValueError(f"wavelet_loss needs levels >= 1, got {levels}")
    x = recon - target
    total, count = x.new_zeros(()), 0
    for level in range(levels):
        image = x.shape[2] == 1
        bands = haar_dwt3d(x)[:, :4] if image else haar_dwt3d(x)  # (B, 4|8, C, F', H', W')
        kept = bands if level == levels - 1 else bands[:, 1:]  # the LLL band recurses instead
        total, count = total + kept.abs().sum(), count + kept.numel()
        x = bands[:, 0]  # (B, C, F', H', W')
    return total / count


# ---------------------------------------------------------------------------------------------------------
# KL divergence of the diagonal-Gaussian posterior.


def kl_loss(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(μ, e^logvar) ‖ N(0, 1)) = ½·Σ_c (μ² + e^logvar − 1 − logvar) (Kingma & Welling 2014, App. B).

    Normalisation: summed over the latent channels (dim 1), averaged over batch and latent positions
    (F', H', W'), i.e. nats per latent token. That keeps the weight independent of clip length and
    resolution (bucketed batches), while the channel sum keeps the usual per-token ELBO scale. With the
    uniform log-variance the same logvar is repeated in every channel, so the variance term is C times
    that of a single channel.
    """
    kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar)  # (B, C, F', H', W')
    return kl.sum(dim=1).mean()


# ---------------------------------------------------------------------------------------------------------
# Reconstruction GAN (LTX-Video §3.1): the discriminator sees (real, recon) or (recon, real) stacked along
# channels and predicts which ordering it got. Logit > 0 means "the real video is the first half".


@dataclass(frozen=True)
class DiscriminatorConfig:
    channels: int = 32  # width of the first conv; doubles every layer
    layers: int = 3  # stride-(1, 2, 2) convs, so logits come out at H/2^layers × W/2^layers


class PairDiscriminator(nn.Module):
    """3-D PatchGAN over a channel-stacked pair (B, 6, F, H, W) -> logits (B, 1, F, H/2^L, W/2^L).

    Strides (1, 2, 2) keep every frame, so F == 1 and F == 9 both work; GroupNorm (not BatchNorm) keeps
    samples independent, which the per-sample ordering needs.
    """

    def __init__(self, cfg: DiscriminatorConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, c_out = 6, cfg.channels
        for i in range(cfg.layers):
            layers.append(nn.Conv3d(c_in, c_out, (3, 4, 4), stride=(1, 2, 2), padding=1))
            if i > 0:  # no norm on the first layer (Isola et al. 2017, PatchGAN)
                layers.append(nn.GroupNorm(math.gcd(32, c_out), c_out))
            layers.append(nn.LeakyReLU(0.2))
            c_in, c_out = c_out, c_out * 2
        layers.append(nn.Conv3d(c_in, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, pair: Tensor) -> Tensor:
        return self.net(pair)


def patch_weights(real: Tensor, recon: Tensor, logits_shape: torch.Size, foreground: float) -> Tensor | None:
    """Per-patch weights (B, 1, F, h, w) for the adversarial losses: 1 + foreground on the discriminator's
    patches that hold object pixels of `real` or `recon` (foreground_mask, max-pooled to the logits' grid);
    None when foreground = 0 (the plain mean). On a plain background most patches are the same in both halves
    of the pair, so their logits carry nothing and the plain mean dilutes the object's (MODELS.md)."""
    if foreground == 0:
        return None
    mask = torch.maximum(foreground_mask(real), foreground_mask(recon.detach()))  # (B, 1, F, H, W)
    return 1 + foreground * F.adaptive_max_pool3d(mask, logits_shape[2:])


def _weighted_mean(x: Tensor, weight: Tensor | None) -> Tensor:
    return x.mean() if weight is None else (x * weight).sum() / weight.sum()


def discriminator_loss(
    disc: PairDiscriminator,
    real: Tensor,
    recon: Tensor,
    generator: torch.Generator | None = None,
    foreground: float = 0.0,
) -> Tensor:
    """Logistic (softplus) loss of the ordering classifier; each sample's order is drawn from `generator`.

    softplus(−y·logit) is binary cross-entropy with y = +1 for (real, recon) and −1 for (recon, real),
    averaged over batch and patches (object patches weighted 1 + foreground, see patch_weights). recon is
    detached: this step trains only the discriminator.
    """
    recon = recon.detach()
    device = generator.device if generator is not None else real.device
    swap = torch.randint(0, 2, (real.shape[0],), generator=generator, device=device).to(real.device)
    swap = swap.bool().view(-1, 1, 1, 1, 1)
    pair = torch.where(swap, torch.cat([recon, real], 1), torch.cat([real, recon], 1))  # (B, 6, F, H, W)
    y = 1.0 - 2.0 * swap.to(real.dtype)  # +1 real first, −1 recon first
    logits = disc(pair)  # (B, 1, F, h, w)
    return _weighted_mean(F.softplus(-y * logits), patch_weights(real, recon, logits.shape, foreground))


def generator_adversarial_loss(
    disc: PairDiscriminator, real: Tensor, recon: Tensor, foreground: float = 0.0
) -> Tensor:
    """Non-saturating autoencoder loss: make the discriminator pick the wrong order, for both orders.

    = ½·[softplus(logit(real, recon)) + softplus(−logit(recon, real))], averaged over batch and patches
    (object patches weighted 1 + foreground). Gradients also reach the discriminator's parameters; step only
    the VAE optimizer and zero the discriminator's grads before its own step.
    """
    real_first = disc(torch.cat([real, recon], 1))  # (B, 1, F, h, w)
    recon_first = disc(torch.cat([recon, real], 1))
    w = patch_weights(real, recon, real_first.shape, foreground)
    return 0.5 * (_weighted_mean(F.softplus(real_first), w) + _weighted_mean(F.softplus(-recon_first), w))


def adaptive_gan_weight(
    recon_loss: Tensor, gan_loss: Tensor, last_layer_weight: Tensor, max_weight: float = 1e4
) -> Tensor:
    """VQGAN adaptive weight (Esser et al. 2021, Eq. 7): ‖∇_L rec‖ / (‖∇_L gan‖ + 1e-4), clamped, detached."""
    g_rec = torch.autograd.grad(recon_loss, last_layer_weight, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan_loss, last_layer_weight, retain_graph=True)[0]
    return (g_rec.norm() / (g_gan.norm() + 1e-4)).clamp(0.0, max_weight).detach()


# ---------------------------------------------------------------------------------------------------------
# LPIPS (Zhang et al. 2018) with a VGG16 trunk, loaded only from a local safetensors file.
# Keys are those of the official `lpips.LPIPS(net="vgg").state_dict()`:
#   scaling_layer.shift, scaling_layer.scale                          (1, 3, 1, 1)
#   net.slice1.{0,2}  net.slice2.{5,7}  net.slice3.{10,12,14}
#   net.slice4.{17,19,21}  net.slice5.{24,26,28}  .weight / .bias (torchvision VGG16 `features` indices)
#   lin{0..4}.model.1.weight                                      (1, C_k, 1, 1), C_k: 64, 128, 256, 512, 512

_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_SLICE_ENDS = (4, 9, 16, 23, 30)  # features[:4] -> relu1_2, [4:9] -> relu2_2, ... [23:30] -> relu5_3


def _vgg16_slices() -> nn.Module:
    """torchvision VGG16 `features` cut after relu{1..5}_{2,2,3,3,3}, keeping the original layer indices."""
    layers: list[nn.Module] = []
    c_in = 3
    for v in _VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c_in, int(v), 3, padding=1), nn.ReLU()]
            c_in = int(v)
    net = nn.Module()
    for k, (start, end) in enumerate(zip((0, *_SLICE_ENDS[:-1]), _SLICE_ENDS, strict=True)):
        net.add_module(
            f"slice{k + 1}", nn.Sequential(OrderedDict((str(i), layers[i]) for i in range(start, end)))
        )
    return net


class _ScalingLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))


class _Lin(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()  # index 0 is the official Dropout; Identity keeps the key `model.1.weight`
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPS(nn.Module):
    """LPIPS distance between images (B, 3, H, W) in [-1, 1] -> (B,) (Zhang et al. 2018, Eq. 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.scaling_layer = _ScalingLayer()
        self.net = _vgg16_slices()
        for k, c in enumerate((64, 128, 256, 512, 512)):
            self.add_module(f"lin{k}", _Lin(c))

    @classmethod
    def from_file(cls, path: str | Path) -> LPIPS:
        """Strictly load a safetensors file with the keys listed above; frozen and in eval mode."""
        from ..weights import read_header

        try:
            read_header(str(path))  # a one-line error for a folder, a missing file, a pickle (.pth) ...
        except ValueError as err:
            raise ValueError(f"vae.lpips_path: {err} (convert the LPIPS .pth to safetensors first)") from None
        state = load_file(str(path))
        with torch.device("meta"):
            model = cls()
        expected = set(model.state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(f"LPIPS file {path}: missing keys {missing}, unexpected keys {unexpected}")
        model.load_state_dict(state, strict=True, assign=True)
        return model.requires_grad_(False).eval()

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        sl = self.scaling_layer
        fx, fy = (x - sl.shift) / sl.scale, (y - sl.shift) / sl.scale
        dist = x.new_zeros(x.shape[0])
        for k in range(5):
            fx, fy = self.net.get_submodule(f"slice{k + 1}")(fx), self.net.get_submodule(f"slice{k + 1}")(fy)
            # unit-normalise over channels (vector_norm: zero, not NaN, gradient where a feature is all 0),
            # squared difference, learned 1×1 weighting, spatial mean
            nx = fx / (torch.linalg.vector_norm(fx, dim=1, keepdim=True) + 1e-10)
            ny = fy / (torch.linalg.vector_norm(fy, dim=1, keepdim=True) + 1e-10)
            d = self.get_submodule(f"lin{k}").model((nx - ny).square())  # (B, 1, h, w)
            dist = dist + d.mean(dim=(1, 2, 3))
        return dist


def lpips_video(lpips: LPIPS, recon: Tensor, target: Tensor) -> Tensor:
    """Per-frame LPIPS of videos (B, 3, F, H, W), averaged over batch and frames."""
    to_images = "b c f h w -> (b f) c h w"
    return lpips(rearrange(recon, to_images), rearrange(target, to_images)).mean()


# ---------------------------------------------------------------------------------------------------------
# The weighted sum used to train the VAE.

FOREGROUND_THRESHOLD = 0.5  # in [-1, 1] units (0.25 of the [0, 1] range: the judge's object threshold)


def foreground_mask(video: Tensor, threshold: float = FOREGROUND_THRESHOLD) -> Tensor:
    """(B, 3, F, H, W) in [-1, 1] -> (B, 1, F, H, W) float: 1 where a pixel's largest channel difference from
    its frame's median colour exceeds `threshold`.
    On flat backgrounds (the shapes world) that is the object."""
    return (_background_distance(video, video) > threshold).to(video.dtype)


def _background_distance(video: Tensor, reference: Tensor) -> Tensor:
    """(B, 1, F, H, W): each pixel's largest channel difference from the median colour of `reference`'s
    frame (B, 3, F, H, W) — its background on a plain one."""
    median = reference.flatten(3).median(3).values[..., None, None]  # (B, 3, F, 1, 1)
    return (video - median).abs().amax(1, keepdim=True)


def silhouette_loss(recon: Tensor, target: Tensor, width: float = 0.25) -> Tensor:
    """Soft Dice loss between the object the reconstruction draws and the target's, per frame (B, 3, F, H, W).
    The reconstruction's mask ramps linearly from 0 to 1 as a pixel's distance from the target frame's median
    colour goes from FOREGROUND_THRESHOLD − width to + width (exactly 0 on the background, so the flat
    background does not count as a little object). Pixels whose target distance is inside that band (the
    target's own soft edge: anti-aliasing, H.264) are left out of both masks, so an exact copy scores 0.
    Pixel losses, even object-weighted, see a square's corners as a few pixels among thousands; Dice scores
    the silhouette of each frame, whatever the object's size. Frames without an object are left out."""
    if not 0 < width <= FOREGROUND_THRESHOLD:
        raise ValueError(f"silhouette width must be in (0, {FOREGROUND_THRESHOLD}], got {width}")
    low, high = FOREGROUND_THRESHOLD - width, FOREGROUND_THRESHOLD + width
    target_distance = _background_distance(target, target)  # (B, 1, F, H, W)
    certain = ((target_distance <= low) | (target_distance >= high)).to(recon.dtype)
    truth = (target_distance >= high).to(recon.dtype)
    drawn = ((_background_distance(recon, target) - low) / (2 * width)).clamp(0, 1) * certain
    overlap = (drawn * truth).sum((-2, -1))  # (B, 1, F)
    area = drawn.sum((-2, -1)) + truth.sum((-2, -1))
    has_object = truth.sum((-2, -1)) > 0
    if not has_object.any():
        return recon.sum() * 0
    dice = 1 - 2 * overlap / area.clamp_min(1e-6)
    return dice[has_object].mean()


def weighted_mse(recon: Tensor, target: Tensor, foreground: float, symmetric: bool = False) -> Tensor:
    """Pixel MSE with weight 1 + foreground on `foreground_mask(target)` pixels, normalised by the mean weight
    (foreground = 0 is plain MSE). A small object on a plain background is a few percent of the pixels: plain
    MSE is satisfied by the background and the object's gradient is drowned (MODELS.md).
    With the target's mask alone, drawing object colour on background pixels costs 1 and missing an object
    pixel 1 + foreground, so the reconstruction's objects grow (where a pixel is object with probability
    > 1/(2 + foreground), drawing it is cheaper) and every shape becomes a round blob. `symmetric` also weighs
    the pixels `recon` draws as object (its mask, no gradient through it): both errors cost the same."""
    if foreground == 0:
        return F.mse_loss(recon, target)
    mask = foreground_mask(target)  # (B, 1, F, H, W)
    if symmetric:
        mask = torch.maximum(mask, foreground_mask(recon.detach()))
    weight = 1 + foreground * mask
    return ((recon - target).pow(2) * weight).mean() / weight.mean()


@dataclass(frozen=True)
class VAELossWeights:
    mse: float = 1.0
    wavelet: float = 1.0
    kl: float = 1e-6
    gan: float = 0.0
    lpips: float = 0.0
    foreground: float = 0.0  # extra MSE weight on pixels unlike their frame's median colour (weighted_mse)
    foreground_symmetric: bool = False  # the extra weight also where the reconstruction draws an object
    silhouette: float = 0.0  # soft Dice between the drawn and the true object masks (silhouette_loss)
    silhouette_width: float = 0.25


def vae_reconstruction_losses(
    recon: Tensor,
    target: Tensor,
    mean: Tensor,
    logvar: Tensor,
    weights: VAELossWeights,
    disc: PairDiscriminator | None = None,
    lpips: LPIPS | None = None,
) -> dict[str, Tensor]:
    """Unweighted components with weight > 0 (others are not computed) plus "total" = Σ weight·component."""
    if weights.gan > 0 and disc is None:
        raise ValueError(f"weights.gan={weights.gan} needs a discriminator (disc=None)")
    if weights.lpips > 0 and lpips is None:
        raise ValueError(f"weights.lpips={weights.lpips} needs an LPIPS network (lpips=None)")
    terms = {
        "mse": lambda: weighted_mse(recon, target, weights.foreground, weights.foreground_symmetric),
        "wavelet": lambda: wavelet_loss(recon, target),
        "kl": lambda: kl_loss(mean, logvar),
        "gan": lambda: generator_adversarial_loss(disc, target, recon),
        "lpips": lambda: lpips_video(lpips, recon, target),
        "silhouette": lambda: silhouette_loss(recon, target, weights.silhouette_width),
    }
    losses = {name: fn() for name, fn in terms.items() if getattr(weights, name) > 0}
    losses["total"] = sum((getattr(weights, n) * v for n, v in losses.items()), recon.new_zeros(()))
    return losses
