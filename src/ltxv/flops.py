"""The DiT FLOP model (perf_and_users.md §A.5) and the dense bf16 peaks of known GPUs, for MFU."""

from __future__ import annotations

from .config import DiTConfig

# Dense bf16/fp16 tensor-core peaks (TFLOP/s, no sparsity), matched against torch.cuda.get_device_name().
# First match wins, so the H100 PCIe / NVL rows come before the SXM default.
PEAK_TFLOPS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("H100", "PCIE"), 756.0),
    (("H100", "NVL"), 835.0),
    (("H100",), 989.0),
    (("H200",), 989.0),
    (("A100",), 312.0),
    (("L40S",), 362.0),
    (("4090",), 165.0),
)


def dit_flops(cfg: DiTConfig, num_tokens: int, text_tokens: int, text_cached: bool = False) -> float:
    """FLOPs of one VideoDiT forward on one sample (a multiply-add counts 2), perf_and_users.md §A.5:

        flops = L·(28·N·d² + 4·T·d² + 4·N²·d + 4·N·T·d) + 2·N·d·(C_in + C_out) + 2·T·d·(C_txt + d)

    with d = hidden_dim, L = num_layers, N = num_tokens (video), T = text_tokens, C_txt = caption_channels.
    Per block: 28·N·d² = self-attention q/k/v/out 8·N·d² + cross-attention q/out 4·N·d² + FFN (4d) 16·N·d²;
    4·T·d² = cross-attention k/v on the text; 4·N²·d = self-attention QKᵀ and PV; 4·N·T·d = the same for
    cross-attention. Outside the blocks: the patchify_proj / proj_out linears and the two-layer caption
    projection. `text_cached` leaves out the text's share (`text_flops`: caption projection and k/v), which
    §A.5 also leaves out as cacheable and generate() computes once per generation (SpeedConfig.text_cache).
    Not counted: norms, RoPE, softmax, modulation and the AdaLN timestep MLP (~1% at 2B with per-token t).
    A batched forward (CFG, STG) costs batch x this. 2B at 6144 tokens, T = 128: 29.11 TFLOP (§A.5 table:
    29.1); 13B: 169.3 (169)."""
    n, t, d, layers = num_tokens, text_tokens, cfg.hidden_dim, cfg.num_layers
    video = layers * (28 * n * d**2 + 4 * n**2 * d + 4 * n * t * d) + 2 * n * d * (
        cfg.in_channels + cfg.out_channels
    )
    return float(video) + (0.0 if text_cached else text_flops(cfg, text_tokens))


def text_flops(cfg: DiTConfig, text_tokens: int) -> float:
    """FLOPs of `VideoDiT.prepare_text` on one sample: L·4·T·d² (every block's k/v) + 2·T·d·(C_txt + d)."""
    t, d = text_tokens, cfg.hidden_dim
    return float(cfg.num_layers * 4 * t * d**2 + 2 * t * d * (cfg.caption_channels + d))


def peak_tflops(device_name: str) -> float | None:
    """Dense bf16 peak of a known GPU from its name (e.g. "NVIDIA H100 80GB HBM3" -> 989), else None."""
    name = device_name.upper()
    return next((peak for keys, peak in PEAK_TFLOPS if all(k in name for k in keys)), None)
