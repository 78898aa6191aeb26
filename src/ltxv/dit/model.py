"""VideoDiT (LTX-Video `Transformer3DModel`): latents + per-sample or per-token t + T5 text -> velocity."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..config import STG_MODES, DiTConfig
from ..layers.attention import attention, self_attention
from ..layers.embed import AdaLNSingle, TextProjection
from ..layers.init import normal_parameter
from ..layers.norm import RMSNorm, modulate, rms_norm
from ..layers.rope import apply_rope, latent_pixel_coords, rope_cos_sin
from .cache import FirstBlockCache


@dataclass(frozen=True)
class SkipLayers:
    """Spatiotemporal guidance (STG) perturbation: in `blocks`, for batch elements where `batch_mask` is True,
    replace the self-attention output by its values ("attention_values"), by its input ("attention_skip"), or
    the whole block output by its input ("transformer_block")."""

    blocks: tuple[int, ...]
    batch_mask: Tensor  # (B,) bool
    mode: str = "attention_values"

    def __post_init__(self) -> None:
        if self.mode not in STG_MODES:
            raise ValueError(f"STG mode {self.mode!r}: choose from {', '.join(STG_MODES)}")


@dataclass(frozen=True)
class TextContext:
    """What cross-attention needs from the prompt, which is the same at every denoising step, so
    `VideoDiT.prepare_text` computes it once per generation: per block the normalized keys and the values
    (B, L, D) of the projected text, and the additive mask bias (B, 1, 1, L) or None. Without precomputed
    keys (`keys == ()`, training), each block computes its own from `projected` inside its forward, where
    FSDP has gathered its weights."""

    keys: tuple[Tensor, ...]
    values: tuple[Tensor, ...]
    bias: Tensor | None
    projected: Tensor | None = None  # (B, L, D) caption_projection(text_emb)


class Attention(nn.Module):
    """Multi-head attention with RMSNorm on q and k across all heads (before the split), optional RoPE."""

    def __init__(self, dim: int, heads: int, eps: float, bias: bool, out_bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, dim, bias=bias) for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(dim, dim, bias=out_bias)])
        self.q_norm, self.k_norm = RMSNorm(dim, eps), RMSNorm(dim, eps)

    def key_value(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """context (B, L, D) -> normalized keys and values (B, L, D) each."""
        return self.k_norm(self.to_k(context)), self.to_v(context)

    def forward(
        self,
        x: Tensor,
        kv: tuple[Tensor, Tensor] | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
        bias: Tensor | None = None,
        skip: SkipLayers | None = None,
    ) -> Tensor:
        """x (B, N, D); kv = `key_value(context)` (cross-attn) or None (self-attn); additive bias (B, 1, 1, L)
        -> (B, N, D)."""
        q = self.q_norm(self.to_q(x))
        k, v = self.key_value(x) if kv is None else kv
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if kv is None:
            out = self_attention(q, k, v, self.heads)  # (B, N, D)
        else:
            out = attention(q, k, v, self.heads, bias)  # (B, N, D)
        if skip is not None and skip.mode != "transformer_block":
            replacement = v if skip.mode == "attention_values" else x
            out = torch.where(skip.batch_mask[:, None, None], replacement, out)
        return self.to_out[0](out)


class FeedForward(nn.Module):
    """Linear(D, 4D) -> GELU(tanh) -> Linear(4D, D); keys ff.net.0.proj / ff.net.2 as in the checkpoints."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        proj = nn.Module()
        proj.proj = nn.Linear(dim, mult * dim)
        self.net = nn.ModuleList([proj, nn.Identity(), nn.Linear(mult * dim, dim)])

    def forward(self, x: Tensor) -> Tensor:
        return self.net[2](F.gelu(self.net[0].proj(x), approximate="tanh"))


class DiTBlock(nn.Module):
    """Modulated self-attention (RoPE) -> cross-attention to text (no norm, no gate) -> modulated FFN."""

    # the linears whose outputs are added to the residual stream: with them zero the block is the identity
    OUTPUT_PROJECTIONS = ("attn1.to_out.0", "attn2.to_out.0", "ff.net.2")

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        d = cfg.hidden_dim
        self.eps = cfg.norm_eps
        self.scale_shift_table = normal_parameter(6, d, std=d**-0.5)
        self.attn1 = Attention(d, cfg.num_heads, cfg.qk_norm_eps, cfg.attention_bias, cfg.attention_out_bias)
        self.attn2 = Attention(d, cfg.num_heads, cfg.qk_norm_eps, cfg.attention_bias, cfg.attention_out_bias)
        self.ff = FeedForward(d)

    def forward(
        self,
        x: Tensor,
        temb: Tensor,
        text_kv: tuple[Tensor, Tensor] | Tensor,
        text_bias: Tensor | None,
        rope: tuple[Tensor, Tensor],
        skip: SkipLayers | None = None,
    ) -> Tensor:
        """x (B, N, D); temb (B, T, 6D) with T = 1 or N (per-token t); text_kv = attn2.key_value(text), or the
        projected text (B, L, D) itself."""
        if isinstance(text_kv, Tensor):
            text_kv = self.attn2.key_value(text_kv)
        ada = self.scale_shift_table[None, None] + temb.unflatten(-1, (6, -1))  # (B, T, 6, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = ada.unbind(2)
        h = modulate(rms_norm(x, self.eps), shift_msa, scale_msa)
        out = x + gate_msa * self.attn1(h, rope=rope, skip=skip)
        out = out + self.attn2(out, kv=text_kv, bias=text_bias)
        h = modulate(rms_norm(out, self.eps), shift_mlp, scale_mlp)
        out = out + gate_mlp * self.ff(h)
        if skip is not None and skip.mode == "transformer_block":
            out = torch.where(skip.batch_mask[:, None, None], x, out)
        return out


class VideoDiT(nn.Module):
    """Patch-size-1 video DiT with AdaLN-single, 3-D fractional RoPE and T5 cross-attention."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_dim
        self.patchify_proj = nn.Linear(cfg.in_channels, d)
        self.adaln_single = AdaLNSingle(d)
        self.caption_projection = TextProjection(cfg.caption_channels, d)
        self.transformer_blocks = nn.ModuleList([DiTBlock(cfg) for _ in range(cfg.num_layers)])
        self.scale_shift_table = normal_parameter(2, d, std=d**-0.5)
        self.proj_out = nn.Linear(d, cfg.out_channels)
        self.gradient_checkpointing = False  # training: recompute each block in backward to save memory

    def token_coords(
        self, num_frames: int, height: int, width: int, batch: int, device: torch.device
    ) -> Tensor:
        """Pixel coordinates (B, N, 3) of a latent grid, honouring `causal_temporal_positioning`."""
        coords = latent_pixel_coords(
            num_frames, height, width, self.cfg.latent_scale, self.cfg.causal_temporal_positioning, device
        )
        return coords.expand(batch, -1, -1)

    def prepare_text(
        self, text_emb: Tensor, text_mask: Tensor | None = None, per_block: bool = True
    ) -> TextContext:
        """text_emb (B, L, caption_channels), text_mask (B, L) with 1 = keep -> every block's cross-attention
        keys/values and the mask bias; pass it to `forward` in place of the embeddings to reuse it."""
        text = self.caption_projection(text_emb)  # (B, L, D)
        bias = None
        if text_mask is not None:
            bias = ((1 - text_mask.to(text.dtype)) * -10000.0)[:, None, None, :]  # (B, 1, 1, L)
        if not per_block:  # the blocks derive their keys/values from `projected` themselves
            return TextContext((), (), bias, text)
        kv = [block.attn2.key_value(text) for block in self.transformer_blocks]
        return TextContext(tuple(k for k, _ in kv), tuple(v for _, v in kv), bias, text)

    def forward(
        self,
        latents: Tensor,
        timestep: Tensor | float,
        text_emb: Tensor | TextContext,
        text_mask: Tensor | None = None,
        frame_rate: float = 25.0,
        coords: Tensor | None = None,
        skip: SkipLayers | None = None,
        block_cache: FirstBlockCache | None = None,
    ) -> Tensor:
        """Velocity for normalized latents.

        latents (B, C, F, H, W), or tokens (B, N, C) together with explicit `coords` (B, N, 3) in
        (pixel frame, pixel y, pixel x) -- e.g. for extra conditioning tokens; timestep in [0, 1] as a float,
        (B,) or per-token (B, N); text_emb (B, L, caption_channels) with text_mask (B, L), 1 = keep, or
        their `prepare_text` context (bit-identical, without recomputing the text keys/values).
        `block_cache` (inference, approximate): reuse the previous step's residual of blocks 1.. when block
        0's residual barely changed (see `ltxv.dit.cache`). Returns a velocity with the shape of `latents`.
        """
        grid = latents.ndim == 5
        if grid:
            b, _, f, h, w = latents.shape
            coords = self.token_coords(f, h, w, b, latents.device) if coords is None else coords
            tokens = rearrange(latents, "b c f h w -> b (f h w) c")
        elif coords is None:
            raise ValueError("token input (B, N, C) needs explicit coords (B, N, 3)")
        else:
            tokens = latents
        b, n, _ = tokens.shape
        if coords.shape != (b, n, 3):
            raise ValueError(f"coords must be (B, N, 3) = ({b}, {n}, 3), got {tuple(coords.shape)}")
        x = self.patchify_proj(tokens)  # (B, N, D)
        t = torch.as_tensor(timestep, dtype=torch.float32, device=x.device)
        t = t.expand(b) if t.ndim == 0 else t
        if t.shape not in ((b,), (b, n)):
            raise ValueError(f"timestep must be a float, (B,) or (B, N) = ({b}, {n}), got {tuple(t.shape)}")
        temb, emb = self.adaln_single(t.flatten() * self.cfg.timestep_scale_multiplier, x.dtype)
        temb, emb = temb.view(b, -1, temb.shape[-1]), emb.view(b, -1, emb.shape[-1])  # (B, T, 6D), (B, T, D)
        rope = rope_cos_sin(coords, frame_rate, x.shape[-1], self.cfg.rope_theta, self.cfg.rope_max_pos)
        if isinstance(text_emb, TextContext):
            if text_mask is not None:
                raise ValueError("text_mask must be None with a TextContext (prepare_text took the mask)")
            text = text_emb
        else:
            text = self.prepare_text(text_emb, text_mask, per_block=False)

        def run(x: Tensor, blocks: range) -> Tensor:
            for i in blocks:
                x = self._block(i, x, temb, text, rope, skip)
            return x

        layers = len(self.transformer_blocks)
        if block_cache is None:
            x = run(x, range(layers))
        else:
            x = block_cache(x, lambda h: run(h, range(1)), lambda h: run(h, range(1, layers)))
        shift, scale = (self.scale_shift_table[None, None] + emb[:, :, None]).unbind(2)  # (B, T, D) each
        x = modulate(F.layer_norm(x, x.shape[-1:], eps=self.cfg.norm_eps), shift, scale)
        velocity = self.proj_out(x)  # (B, N, C)
        if grid:
            return rearrange(velocity, "b (f h w) c -> b c f h w", f=f, h=h, w=w)
        return velocity

    def _block(
        self,
        i: int,
        x: Tensor,
        temb: Tensor,
        text: TextContext,
        rope: tuple[Tensor, Tensor],
        skip: SkipLayers | None,
    ) -> Tensor:
        """Block i, recomputed in backward under `gradient_checkpointing` (training)."""
        block = self.transformer_blocks[i]
        kv = (text.keys[i], text.values[i]) if text.keys else text.projected
        skip = skip if skip is not None and i in skip.blocks else None
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, temb, kv, text.bias, rope, skip, use_reentrant=False)
        return block(x, temb, kv, text.bias, rope, skip)
