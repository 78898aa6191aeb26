"""Load and save checkpoints (official single file, diffusers folders, ours): strict, safetensors only,
models built on the meta device and filled with `assign=True` so peak memory is ~one copy of the weights."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from . import convert
from .config import DiTConfig, ModelSpec, VAEConfig, from_dict, to_dict
from .dit.model import VideoDiT
from .files import atomic_file, atomic_folder, check_writable
from .presets import PRESETS
from .vae.model import VideoVAE

FORMATS = ("ltxv", "native", "diffusers")
LTXV_FORMAT_VERSION = "1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not match the model (one-line message naming the problem)."""


@dataclass(frozen=True)
class Component:
    """Where one model's tensors live: our key -> (file, key in that file), plus its config."""

    config: Any  # VAEConfig | DiTConfig | UpsamplerConfig: what the model class is built from
    tensors: dict[str, tuple[str, str]]


@dataclass(frozen=True)
class Checkpoint:
    """What a path holds, read from headers only (no tensor data)."""

    path: str
    format: str
    version: str
    spec: ModelSpec
    vae: Component | None = None
    dit: Component | None = None
    notes: tuple[str, ...] = field(default=())


# ----------------------------------------------------------------------------------------------------------
# Reading headers
# ------------------------------------------------------------------------------------------------------------


def open_safetensors(path: str, device: str = "cpu"):  # noqa: ANN201 - safetensors' safe_open handle
    """safe_open, falling back to read() instead of mmap when the kernel refuses to map a file larger than RAM
    (seen with the 28.6 GB 13B file on a 24 GiB machine without swap; needs safetensors >= 0.7)."""
    try:
        return safe_open(path, framework="pt", device=device)
    except Exception as err:
        if "mmap" not in str(err):
            raise
        try:
            return safe_open(path, framework="pt", device=device, backend="pread")
        except TypeError:
            raise err from None


def read_header(path: str) -> tuple[list[str], dict[str, str]]:
    """Tensor names and metadata of a safetensors file, with one-line errors for anything unreadable."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file")
    try:
        with open_safetensors(path) as f:
            return list(f.keys()), dict(f.metadata() or {})
    except Exception as err:  # safetensors raises its own error types for bad headers / truncation
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({str(err).splitlines()[0]})"
        ) from None


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable JSON ({err})") from None


def open_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Identify the format of `path` (file or folder) and map every tensor to our names."""
    p = Path(path)
    if p.is_dir() and (p / "model.safetensors").is_file():
        config = p / "config.json"  # absent in our model folders; a training run's config has its stage
        if not config.is_file() or "stage" in _json(config):
            return open_checkpoint(p / "model.safetensors")  # a model folder, or a finished run's folder
    if p.is_dir() and (p / "lora.safetensors").is_file():
        raise CheckpointError(
            f"{p}: a LoRA run's folder; pass its base model as the model and --lora {p / 'lora.safetensors'}"
        )
    if p.is_dir():
        return _open_diffusers(p)
    keys, meta = read_header(str(p))
    if meta.get("format") == "ltxv":
        return _open_ltxv(str(p), keys, meta)
    run_config = p.parent.parent.parent / "config.json"  # RUN/checkpoints/step_N/{model,ema}.safetensors
    if (p.parent / "state.json").is_file() and run_config.is_file():
        model = _json(run_config).get("model")
        if model is not None:
            meta = {"format_version": LTXV_FORMAT_VERSION, "spec": json.dumps(model)}
            return _open_ltxv(str(p), keys, meta)  # a training checkpoint: the run's config describes it
    return _open_native(str(p), keys, meta)


def _open_ltxv(path: str, keys: list[str], meta: dict[str, str]) -> Checkpoint:
    if meta.get("format_version") != LTXV_FORMAT_VERSION:
        raise CheckpointError(f"{path}: ltxv format version {meta.get('format_version')!r} is not supported")
    try:
        spec = from_dict(ModelSpec, json.loads(meta["spec"]))
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: bad ltxv metadata ({err})") from None
    parts = {c: {k[len(c) + 1 :]: (path, k) for k in keys if k.startswith(c + ".")} for c in ("vae", "dit")}
    vae = Component(spec.vae, parts["vae"]) if parts["vae"] else None
    dit = Component(spec.dit, parts["dit"]) if parts["dit"] else None
    return Checkpoint(path, "ltxv", spec.version or guess_version(vae, dit), spec, vae, dit)


def _open_native(path: str, keys: list[str], meta: dict[str, str]) -> Checkpoint:
    if not any(k.startswith((convert.NATIVE_VAE_PREFIX, convert.NATIVE_DIT_PREFIX)) for k in keys):
        kind = "LTX latent upsampler" if "initial_conv.weight" in keys else "model"
        raise CheckpointError(
            f"{path}: not an LTX-Video VAE/transformer checkpoint (looks like another {kind})"
        )
    try:
        vae_map, dit_map = convert.native_to_ltxv({k: k for k in keys})
    except convert.ConversionError as err:
        raise CheckpointError(f"{path}: {err}") from None
    version = convert.guess_native_version(set(keys))
    notes: tuple[str, ...] = ()
    try:
        config = json.loads(meta["config"]) if "config" in meta else None
        if config is None:
            preset = {"0.9.0": "ltxv-2b-0.9", "0.9.1": "ltxv-2b-0.9.1", "0.9.5+": "ltxv-2b-0.9.5"}
            spec = PRESETS[preset.get(version, "ltxv-13b-0.9.7")]
            notes = (f"no config in metadata: configs taken from the {version} preset",)
        else:
            spec = ModelSpec(
                vae=convert.vae_config_from_native(config["vae"]) if "vae" in config else ModelSpec().vae,
                dit=convert.dit_config_from_native(config["transformer"])
                if "transformer" in config
                else ModelSpec().dit,
                scheduler=convert.scheduler_from_native(config.get("scheduler")),
            )
    except (KeyError, ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: bad official config metadata ({err})") from None
    vae = Component(spec.vae, {k: (path, v) for k, v in vae_map.items()}) if vae_map else None
    dit = Component(spec.dit, {k: (path, v) for k, v in dit_map.items()}) if dit_map else None
    if config is not None:
        version = guess_version(vae, dit)
    return Checkpoint(path, "native", version, replace(spec, version=version), vae, dit, notes)


def _diffusers_tensors(folder: Path) -> dict[str, tuple[str, str]]:
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    if index.is_file():
        weight_map = _json(index).get("weight_map", {})
        if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
            raise CheckpointError(f"{index}: 'weight_map' must map tensor names to shard file names")
        shards = {f: set(read_header(str(folder / f))[0]) for f in set(weight_map.values())}  # each readable
        missing = [k for k, f in weight_map.items() if k not in shards[f]]
        if missing:
            raise CheckpointError(
                f"{index}: {len(missing)} tensors it lists are not in their shard (e.g. {missing[0]!r} in "
                f"{weight_map[missing[0]]}); the folder is incomplete or mixed: download it again"
            )
        return {k: (str(folder / f), k) for k, f in weight_map.items()}
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickles = [f.name for f in folder.iterdir() if f.suffix in (".bin", ".pt", ".pth", ".ckpt")]
        hint = (
            f" ({', '.join(pickles)} are pickles, which ltxv never loads: convert them to safetensors)"
            if pickles
            else ""
        )
        raise CheckpointError(f"{folder}: no .safetensors weights{hint}")
    out: dict[str, tuple[str, str]] = {}
    for f in files:
        out.update({k: (str(f), k) for k in read_header(str(f))[0]})
    return out


def _open_diffusers(root: Path) -> Checkpoint:
    folders = {"vae": root / "vae", "dit": root / "transformer"}
    if (root / "config.json").is_file():  # a component folder given directly
        config = _json(root / "config.json")
        cls = config.get("_class_name") or next(iter(config.get("architectures") or []), None)
        kind = {"AutoencoderKLLTXVideo": "vae", "LTXVideoTransformer3DModel": "dit"}.get(cls)
        if kind is None:
            hint = " (a text encoder: pass it as --text-encoder)" if cls == "T5EncoderModel" else ""
            raise CheckpointError(
                f"{root}: config.json describes {cls!r}, not an LTX-Video VAE or transformer{hint}"
            )
        folders = {kind: root}
    elif not any(f.is_dir() for f in folders.values()):
        raise CheckpointError(
            f"{root}: a folder without config.json, vae/ or transformer/ is not a diffusers model"
        )
    spec, vae, dit, notes = ModelSpec(), None, None, ()
    try:
        if folders.get("vae", Path()).is_dir() and "vae" in folders:
            cfg = convert.vae_config_from_diffusers(_json(folders["vae"] / "config.json"))
            layout = convert.vae_to_diffusers_layout(cfg)
            vae = Component(cfg, convert.vae_keys_from_diffusers(_diffusers_tensors(folders["vae"]), layout))
            spec = replace(spec, vae=cfg)
        if folders.get("dit", Path()).is_dir() and "dit" in folders:
            d = _json(folders["dit"] / "config.json")
            causal = vae is not None and _vae_generation(vae.config) == "0.9.5+"
            cfg_d = convert.dit_config_from_diffusers(d, causal_default=causal)
            if causal and "causal_temporal_positioning" not in d:
                notes = (
                    "transformer config without causal_temporal_positioning: on, as the official 0.9.5+ "
                    "models (the VAE beside it is 0.9.5+; diffusers' LTXPipeline leaves it off)",
                )
            dit = Component(cfg_d, convert.dit_keys_from_diffusers(_diffusers_tensors(folders["dit"])))
            spec = replace(spec, dit=cfg_d)
        sched = root / "scheduler" / "scheduler_config.json"
        spec = replace(
            spec, scheduler=convert.scheduler_from_diffusers(_json(sched) if sched.is_file() else None)
        )
    except convert.ConversionError as err:
        raise CheckpointError(f"{root}: {err}") from None
    version = guess_version(vae, dit)
    return Checkpoint(str(root), "diffusers", version, replace(spec, version=version), vae, dit, notes)


def guess_version(vae: Component | None, dit: Component | None) -> str:
    """Release guess from the architecture (sizes other than the official ones are reported as custom)."""
    parts = []
    if dit is not None and isinstance(dit.config, DiTConfig):
        d = dit.config
        parts.append({(28, 2048): "2B", (48, 4096): "13B"}.get((d.num_layers, d.hidden_dim), "custom-size"))
    if vae is not None and isinstance(vae.config, VAEConfig):
        parts.append(f"{_vae_generation(vae.config)}-style VAE")
    return " ".join(parts) or "unknown"


def _vae_generation(c: VAEConfig) -> str:
    """ "0.9.5+" (residual compressing encoder blocks), "0.9.1" (timestep-conditioned decoder) or "0.9.0"."""
    if any(b.kind.endswith("_res") for b in c.encoder_blocks):
        return "0.9.5+"
    return "0.9.1" if c.timestep_conditioning else "0.9.0"


# ----------------------------------------------------------------------------------------------------------
# Building models
# ------------------------------------------------------------------------------------------------------------


def _by_file(comp: Component) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for ours, (file, key) in comp.tensors.items():
        out.setdefault(file, []).append((ours, key))
    return out


def _validate(model: nn.Module, comp: Component, where: str) -> None:
    """Strict check of names and shapes against `model` (usually on the meta device), from headers only."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    shapes: dict[str, tuple[int, ...]] = {}
    for file, items in _by_file(comp).items():
        with open_safetensors(file) as f:
            shapes.update({ours: tuple(f.get_slice(key).get_shape()) for ours, key in items})
    missing, unexpected = sorted(expected.keys() - shapes.keys()), sorted(shapes.keys() - expected.keys())
    bad = [
        f"{k} {shapes[k]} vs {expected[k]}"
        for k in sorted(expected.keys() & shapes.keys())
        if shapes[k] != expected[k]
    ]
    if missing or unexpected or bad:
        problems = [
            f"{label}: {convert.names(keys)}"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape (file vs model)", bad),
            )
            if keys
        ]
        raise CheckpointError(f"{where}: state dict does not match the config; " + "; ".join(problems))


def build_model(
    model_cls: type[nn.Module],
    comp: Component,
    where: str,
    device: str | torch.device | None,
    dtype: torch.dtype | None,
) -> nn.Module:
    with torch.device("meta"):
        model = model_cls(comp.config)
    _validate(model, comp, where)
    sd: dict[str, Tensor] = {}
    for file, items in _by_file(comp).items():
        try:
            with open_safetensors(file, str(torch.device(device or "cpu"))) as f:
                sd.update({ours: f.get_tensor(key) for ours, key in items})
        except Exception as err:
            raise CheckpointError(f"{file}: cannot read tensors ({str(err).splitlines()[0]})") from None
    target = dtype or _default_dtype(sd)
    sd = {k: v.to(target) if v.is_floating_point() else v for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval()


def _default_dtype(sd: dict[str, Tensor]) -> torch.dtype:
    """The file's floating dtype; fp8 storage is computed in bf16."""
    dtypes = {v.dtype for v in sd.values() if v.is_floating_point()}
    if dtypes & {torch.float8_e4m3fn, torch.float8_e5m2}:
        return torch.bfloat16
    for dt in (torch.float32, torch.bfloat16, torch.float16):
        if dt in dtypes:
            return dt
    return torch.float32


def _component(source: str | os.PathLike[str] | Checkpoint, which: str) -> tuple[Checkpoint, Component]:
    """The VAE ("vae") or transformer ("dit") of a path or an opened checkpoint, or a one-line error."""
    ckpt = source if isinstance(source, Checkpoint) else open_checkpoint(source)
    comp, other = (ckpt.vae, ckpt.dit) if which == "vae" else (ckpt.dit, ckpt.vae)
    if comp is None:
        names = {"vae": "VAE", "dit": "transformer"}
        has = names["dit" if which == "vae" else "vae"] if other is not None else "nothing usable"
        raise CheckpointError(f"{ckpt.path}: holds no {names[which]} (it has: {has})")
    return ckpt, comp


def load_vae(
    path: str | os.PathLike[str] | Checkpoint,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> VideoVAE:
    """Load the Video-VAE from an official file, a diffusers root or vae/ folder, or an ltxv checkpoint
    (or from a Checkpoint already returned by `open_checkpoint`, to read the headers once)."""
    ckpt, comp = _component(path, "vae")
    return build_model(VideoVAE, comp, f"{ckpt.path} (VAE)", device, dtype)  # type: ignore[return-value]


def load_transformer(
    path: str | os.PathLike[str] | Checkpoint,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> VideoDiT:
    """Load the diffusion transformer from an official file, diffusers root/transformer folder, ours, or an
    opened Checkpoint."""
    ckpt, comp = _component(path, "dit")
    return build_model(VideoDiT, comp, f"{ckpt.path} (transformer)", device, dtype)  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------------
# Writing (always to a temporary name, then renamed)
# ------------------------------------------------------------------------------------------------------------


def atomic_save(tensors: dict[str, Tensor], path: str | os.PathLike[str], metadata: dict[str, str]) -> None:
    """A safetensors file, written atomically (`files.atomic_file`)."""
    with atomic_file(path) as tmp:
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)


def save_checkpoint(
    path: str | os.PathLike[str],
    spec: ModelSpec,
    vae: dict[str, Tensor] | nn.Module | None = None,
    dit: dict[str, Tensor] | nn.Module | None = None,
    fmt: str = "ltxv",
) -> None:
    """Write models (or state dicts in our names) as `fmt`: ltxv / native (one file) or diffusers (folder)."""
    vae_sd = vae.state_dict() if isinstance(vae, nn.Module) else vae
    dit_sd = dit.state_dict() if isinstance(dit, nn.Module) else dit
    if vae_sd is None and dit_sd is None:
        raise ValueError("nothing to save: pass a VAE and/or a transformer")
    out = Path(path)
    if fmt == "ltxv":
        tensors = {f"vae.{k}": v for k, v in (vae_sd or {}).items()} | {
            f"dit.{k}": v for k, v in (dit_sd or {}).items()
        }
        meta = {"format": "ltxv", "format_version": LTXV_FORMAT_VERSION, "spec": json.dumps(to_dict(spec))}
        atomic_save(tensors, out, meta)
    elif fmt == "native":
        config: dict[str, Any] = {"scheduler": convert.scheduler_to_native(spec.scheduler)}
        if vae_sd is not None:
            config["vae"] = convert.vae_config_to_native(spec.vae)
        if dit_sd is not None:
            config["transformer"] = convert.dit_config_to_native(spec.dit)
        atomic_save(convert.ltxv_to_native(vae_sd, dit_sd), out, {"config": json.dumps(config)})
    elif fmt == "diffusers":
        _save_diffusers(out, spec, vae_sd, dit_sd)
    else:
        raise ValueError(f"unknown checkpoint format {fmt!r}; choose from {', '.join(FORMATS)}")


def _save_diffusers(
    out: Path, spec: ModelSpec, vae_sd: dict[str, Tensor] | None, dit_sd: dict[str, Tensor] | None
) -> None:
    with atomic_folder(out) as tmp:
        index = {"_class_name": "LTXPipeline", "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}
        if vae_sd is not None:
            layout = convert.vae_to_diffusers_layout(spec.vae)
            _write_component(tmp / "vae", layout.config, convert.vae_keys_to_diffusers(vae_sd, layout))
            index["vae"] = ["diffusers", "AutoencoderKLLTXVideo"]
        if dit_sd is not None:
            cfg = convert.dit_config_to_diffusers(spec.dit)
            _write_component(tmp / "transformer", cfg, convert.dit_keys_to_diffusers(dit_sd))
            index["transformer"] = ["diffusers", "LTXVideoTransformer3DModel"]
        (tmp / "scheduler").mkdir()
        (tmp / "scheduler" / "scheduler_config.json").write_text(
            json.dumps(convert.scheduler_to_diffusers(spec.scheduler), indent=2)
        )
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2))


def _write_component(folder: Path, config: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_file(
        {k: v.detach().contiguous() for k, v in tensors.items()},
        str(folder / "diffusion_pytorch_model.safetensors"),
    )


def read_state_dicts(ckpt: Checkpoint) -> tuple[dict[str, Tensor] | None, dict[str, Tensor] | None]:
    """All tensors of a checkpoint in our names, unchanged (dtype and bits kept), strictly checked."""

    def read(comp: Component | None, model_cls: type[nn.Module]) -> dict[str, Tensor] | None:
        if comp is None:
            return None
        with torch.device("meta"):
            _validate(model_cls(comp.config), comp, ckpt.path)
        out: dict[str, Tensor] = {}
        for file, items in _by_file(comp).items():
            with open_safetensors(file) as f:
                out.update({ours: f.get_tensor(key) for ours, key in items})
        return out

    return read(ckpt.vae, VideoVAE), read(ckpt.dit, VideoDiT)


def convert_checkpoint(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], fmt: str, dtype: torch.dtype | None = None
) -> Checkpoint:
    """Convert between formats without changing any tensor (bit-identical round trips), or with `dtype`
    cast every floating tensor (e.g. bf16 to halve a file). `dst` must be new: nothing is overwritten."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown target format {fmt!r}; choose from {', '.join(FORMATS)}")
    check_new_target(src, dst, fmt)  # before any tensor is read
    ckpt = open_checkpoint(src)
    vae_sd, dit_sd = read_state_dicts(ckpt)
    if dtype is not None:
        vae_sd, dit_sd = (
            None if sd is None else {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
            for sd in (vae_sd, dit_sd)
        )
    save_checkpoint(dst, ckpt.spec, vae_sd, dit_sd, fmt)
    return ckpt


def check_new_target(src: str | os.PathLike[str], dst: str | os.PathLike[str], fmt: str) -> None:
    """A target written from `src` is a new .safetensors file (ltxv, native) or a new folder (diffusers)."""
    out = Path(dst)
    folder = fmt == "diffusers"
    if out.resolve() == Path(src).resolve():
        raise ValueError(
            f"cannot write {str(src)!r} onto itself; give a new {'folder' if folder else 'file'}"
        )
    if out.exists() and not out.is_dir():
        raise ValueError(f"{str(out)!r} already exists; give a new name or remove it first")
    if folder and out.suffix.lower() == ".safetensors":
        raise ValueError(
            f"{str(out)!r}: a diffusers checkpoint is a folder; give a name without .safetensors"
        )
    if not folder and out.suffix.lower() != ".safetensors":
        raise ValueError(
            f"{str(out)!r}: a {fmt} checkpoint is one .safetensors file; give a path ending in .safetensors"
        )
    check_writable(out, folder)


def summarize(ckpt: Checkpoint) -> dict[str, Any]:
    """Parameter counts, dtypes and configs per component, from the headers (no tensor data read)."""
    out: dict[str, Any] = {
        "path": ckpt.path,
        "format": ckpt.format,
        "version": ckpt.version,
        "components": {},
    }
    for name, comp in (("vae", ckpt.vae), ("transformer", ckpt.dit)):
        if comp is None:
            continue
        params, dtypes = 0, set()
        for file, items in _by_file(comp).items():
            with open_safetensors(file) as f:
                for _, key in items:
                    sl = f.get_slice(key)
                    params += math.prod(sl.get_shape())
                    dtypes.add(sl.get_dtype())
        out["components"][name] = {
            "params": params,
            "tensors": len(comp.tensors),
            "dtypes": ",".join(sorted(dtypes)),
            "config": to_dict(comp.config),
        }
    return out
