"""LoRA for the transformer: read peft / diffusers / ComfyUI / kohya safetensors and merge (W += s·B·A).

Accepted key layouts, for any linear layer of the DiT: `<prefix><module>.lora_A.weight` / `.lora_B.weight`
(peft, diffusers, LTX-Video-Trainer) and `.lora_down.weight` / `.lora_up.weight` (kohya's suffixes, with
dotted module names as ComfyUI saves them), with the prefixes `transformer.`, `diffusion_model.`,
`model.diffusion_model.`, `base_model.model.` or none; module names in the official layout or diffusers'
(`proj_in`, `time_embed`, ...). A per-module `.alpha` scales by alpha/rank; otherwise the scale is 1 (peft's
default when alpha == rank). Kohya's underscore-joined names (`lora_unet_transformer_blocks_0_...`) are
refused by name: their dots cannot be told from the underscores inside module names."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .convert import dit_keys_from_diffusers
from .layers.fp8 import Fp8Linear

PREFIXES = ("base_model.model.", "model.diffusion_model.", "diffusion_model.", "transformer.")
_PATTERN = re.compile(r"^(?P<module>.+)\.(?P<part>lora_A|lora_B|lora_down|lora_up)(?:\.[^.]+)?\.weight$")


@dataclass(frozen=True)
class LoraLayer:
    down: Tensor  # (r, in)
    up: Tensor  # (out, r)
    alpha: float | None = None

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.down.shape[0]


def read_lora(path: str | os.PathLike[str]) -> dict[str, LoraLayer]:
    """LoRA file -> {our module name: LoraLayer}. One-line ValueErrors for unreadable or foreign files."""
    from .weights import CheckpointError, open_safetensors, read_header

    keys, _ = read_header(str(path))
    with open_safetensors(str(path)) as f:
        tensors = {k: f.get_tensor(k) for k in keys}
    parts: dict[str, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        name = next((key[len(p) :] for p in PREFIXES if key.startswith(p)), key)
        if name.endswith(".alpha"):
            parts.setdefault(name[: -len(".alpha")], {})["alpha"] = value
            continue
        if name.startswith(("lora_unet_", "lora_te")):
            raise CheckpointError(
                f"{path}: {key!r} uses kohya's underscore-joined module names, which are not supported; "
                "convert the file to the peft / diffusers layout (transformer.<module>.lora_A.weight)"
            )
        m = _PATTERN.match(name)
        if m is None:
            raise CheckpointError(
                f"{path}: {key!r} is not a LoRA tensor (expected *.lora_A/B or lora_down/up)"
            )
        parts.setdefault(m["module"], {})["down" if m["part"] in ("lora_A", "lora_down") else "up"] = value
    layers = {}
    renamed = dit_keys_from_diffusers({module: module for module in parts})  # diffusers names -> ours
    for ours, module in renamed.items():
        p = parts[module]
        if "down" not in p or "up" not in p:
            raise CheckpointError(
                f"{path}: LoRA for {module!r} lacks its {'up' if 'down' in p else 'down'} matrix"
            )
        if p["down"].ndim != 2 or p["up"].ndim != 2:
            shapes = f"down {tuple(p['down'].shape)}, up {tuple(p['up'].shape)}"
            raise CheckpointError(f"{path}: LoRA for {module!r} is not two matrices ({shapes})")
        if "alpha" in p and p["alpha"].numel() != 1:
            raise CheckpointError(
                f"{path}: {module!r}.alpha must be one number, got shape {tuple(p['alpha'].shape)}"
            )
        alpha = float(p["alpha"]) if "alpha" in p else None
        layers[ours] = LoraLayer(p["down"], p["up"], alpha)
    if not layers:
        raise CheckpointError(f"{path}: no LoRA tensors found")
    return layers


@torch.no_grad()
def merge_lora(model: nn.Module, layers: dict[str, LoraLayer], scale: float = 1.0) -> int:
    """Add scale · (alpha/r) · B·A to each target Linear's weight in place (an fp8 one is quantized again);
    returns the number of layers merged. Unknown module names or shape mismatches raise a ValueError naming
    them (nothing is changed then)."""
    modules = dict(model.named_modules())
    missing = [name for name in layers if not isinstance(modules.get(name), (nn.Linear, Fp8Linear))]
    if missing:
        shown = ", ".join(sorted(missing)[:5]) + (f" ... ({len(missing)} in all)" if len(missing) > 5 else "")
        raise ValueError(f"LoRA targets modules this transformer does not have: {shown}")
    for name, layer in layers.items():
        weight = modules[name].weight
        if (layer.up.shape[0], layer.down.shape[1]) != tuple(weight.shape) or layer.up.shape[
            1
        ] != layer.down.shape[0]:
            raise ValueError(
                f"LoRA for {name}: up {tuple(layer.up.shape)} x down {tuple(layer.down.shape)} does not fit "
                f"the weight {tuple(weight.shape)}"
            )
    for name, layer in layers.items():
        target = modules[name]
        delta = layer.up.float() @ layer.down.float() * (layer.scale * scale)  # (out, in)
        if isinstance(target, Fp8Linear):
            target.add_to_weight(delta)
        else:
            weight = target.weight
            weight.copy_((weight.float() + delta.to(weight.device)).to(weight.dtype))
    return len(layers)


# ---------------------------------------------------------------------------------------------------------
# Training: trainable low-rank adapters on the transformer's Linear layers, saved in the peft layout
# ---------------------------------------------------------------------------------------------------------


class LoraLinear(nn.Module):
    """y = base(x) + (alpha / r) · B(A(x)); the base layer is frozen, B starts at zero (the identity)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.lora_A = nn.Linear(base.in_features, rank, bias=False, device=base.weight.device)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False, device=base.weight.device)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=5**0.5)  # peft's default init
        nn.init.zeros_(self.lora_B.weight)
        self.scale = alpha / rank
        self.alpha = alpha

    def forward(self, x: Tensor) -> Tensor:
        return (
            self.base(x) + self.lora_B(self.lora_A(x.to(self.lora_A.weight.dtype))).to(x.dtype) * self.scale
        )


def inject_lora(model: nn.Module, targets: tuple[str, ...], rank: int, alpha: float) -> list[str]:
    """Freeze `model` and wrap every Linear whose name ends with one of `targets` (e.g. "to_q", "to_out.0")
    in a LoraLinear; returns the wrapped module names. ValueError when nothing matches."""
    model.requires_grad_(False)
    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets)
    ]
    if not names:
        raise ValueError(f"no Linear layer of the model matches the LoRA targets {list(targets)}")
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoraLinear(getattr(parent, child), rank, alpha))
    return names


def lora_tensors(state: dict[str, Tensor], alpha: float, prefix: str = "") -> dict[str, Tensor]:
    """The adapters in a (LoRA-injected) transformer state dict, keys under `prefix`, in the peft layout
    read by `read_lora`: `transformer.<module>.lora_A.weight`, `.lora_B.weight` and `.alpha`."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith(prefix) and key.endswith((".lora_A.weight", ".lora_B.weight")):
            name = key[len(prefix) :]
            out[f"transformer.{name}"] = value.detach().float().cpu()
            out[f"transformer.{name.rsplit('.', 2)[0]}.alpha"] = torch.tensor(float(alpha))
    if not out:
        raise ValueError("the state dict holds no LoRA adapters (was inject_lora called?)")
    return out


@torch.no_grad()
def unwrap_lora(model: nn.Module) -> None:
    """Merge every LoraLinear back into a plain Linear in place (inverse of `inject_lora`)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLinear):
            base = module.base
            delta = module.lora_B.weight.float() @ module.lora_A.weight.float() * module.scale
            base.weight.copy_((base.weight.float() + delta).to(base.weight.dtype))
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, base)
