"""The compute device: one check of a user's `--device` / `device=` against this machine."""

from __future__ import annotations

import torch

DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The compute device: `device` checked against this machine (ValueError naming it and --device when it
    is malformed, of another kind, or not available), else cuda when available, else cpu."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        resolved = None
    if resolved is None or resolved.type not in DEVICE_TYPES:
        raise ValueError(f"device {str(device)!r} (--device): use cpu, cuda, cuda:N, mps or xpu")
    backend = getattr(torch, resolved.type, None) if resolved.type != "mps" else torch.backends.mps
    if resolved.type != "cpu" and not (backend is not None and backend.is_available()):
        raise ValueError(
            f"device {str(device)!r} (--device): {resolved.type.upper()} is not available on this machine "
            f"(torch {torch.__version__}); use --device cpu"
        )
    if resolved.type in ("cuda", "xpu") and resolved.index is not None:
        count = backend.device_count()
        if resolved.index >= count:
            raise ValueError(
                f"device {str(device)!r} (--device): this machine has {count} {resolved.type} device(s), "
                f"{resolved.type}:0 .. {resolved.type}:{count - 1}"
            )
    return resolved
