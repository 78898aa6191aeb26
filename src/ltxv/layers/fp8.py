"""Fp8Linear: e4m3 weights and activations, per-tensor scales (`torch._scaled_mm`); quantize_linears().

Per-tensor symmetric scaling: scale = amax / 448, x ≈ scale · e4m3(x / scale); the weight is quantized once,
the activation at every call (dynamic). Two kernels compute the same product: "scaled_mm" (FP8 tensor cores
on Ada/Hopper; also runs on the CPU in recent PyTorch) and "reference" (dequantize, then an ordinary matmul
in the input dtype), which any device runs and which the tests compare against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

E4M3 = torch.float8_e4m3fn
E4M3_MAX = torch.finfo(E4M3).max  # 448
FP8_KERNELS = ("auto", "scaled_mm", "reference")


def quantize_e4m3(x: Tensor) -> tuple[Tensor, Tensor]:
    """x -> (q e4m3, scale fp32 scalar) with x ≈ scale · q and |q| <= 448 (per-tensor, symmetric)."""
    scale = (x.detach().abs().amax().float() / E4M3_MAX).clamp_min(1e-12)
    return (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), scale


class Fp8Linear(nn.Module):
    """Drop-in for an inference nn.Linear: e4m3 weight (out, in) + fp32 scale, bias kept in its dtype."""

    def __init__(self, linear: nn.Linear, kernel: str = "auto") -> None:
        super().__init__()
        if kernel not in FP8_KERNELS:
            raise ValueError(f"fp8 kernel {kernel!r}: choose from {', '.join(FP8_KERNELS)}")
        self.in_features, self.out_features, self.kernel = linear.in_features, linear.out_features, kernel
        weight, scale = quantize_e4m3(linear.weight)
        self.register_buffer("weight", weight)
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def uses_scaled_mm(self, x: Tensor) -> bool:
        """ "auto": `_scaled_mm` on CUDA when in/out features are multiples of 16 (its layout rule)."""
        if self.kernel != "auto":
            return self.kernel == "scaled_mm"
        return x.is_cuda and self.in_features % 16 == 0 and self.out_features % 16 == 0

    def forward(self, x: Tensor) -> Tensor:
        """x (..., in) -> (..., out) in x's dtype; activation quantized per call (one scale per tensor)."""
        flat = x.reshape(-1, self.in_features)  # (M, in)
        xq, x_scale = quantize_e4m3(flat)
        if self.uses_scaled_mm(x):  # fp32 accumulation; weight.t() is the column-major operand it wants
            out = torch._scaled_mm(
                xq, self.weight.t(), scale_a=x_scale, scale_b=self.weight_scale, out_dtype=x.dtype
            )
        else:
            out = F.linear(xq.to(x.dtype) * x_scale.to(x.dtype), self.dequantized_weight(x.dtype))
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def dequantized_weight(self, dtype: torch.dtype) -> Tensor:
        return self.weight.to(dtype) * self.weight_scale.to(dtype)

    @torch.no_grad()
    def add_to_weight(self, delta: Tensor) -> None:
        """weight += delta (out, in), quantized again with a new scale (a LoRA merged after `--fp8`)."""
        weight, scale = quantize_e4m3(self.dequantized_weight(torch.float32) + delta.to(self.weight.device))
        self.weight.copy_(weight)
        self.weight_scale.copy_(scale)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel={self.kernel}"


def quantize_linears(model: nn.Module, kernel: str = "auto") -> int:
    """Replace every nn.Linear inside `model` by an Fp8Linear (in place, one-way); returns how many.
    For a VideoDiT pass `dit.transformer_blocks`: the embedders and projections in/out stay exact."""
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    for name, linear in targets:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, Fp8Linear(linear, kernel))
    return len(targets)
