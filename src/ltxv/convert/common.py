"""What every foreign format shares: the conversion error and key-renaming helpers."""

from __future__ import annotations

from typing import TypeVar

V = TypeVar("V")  # state-dict values: tensors, or foreign key names when only the mapping is wanted


class ConversionError(ValueError):
    """A config or state dict that cannot be expressed in the requested format."""


def replace_all(key: str, pairs: tuple[tuple[str, str], ...]) -> str:
    """Apply substring renames in order."""
    for a, b in pairs:
        key = key.replace(a, b)
    return key


def names(keys: list[str], limit: int = 8) -> str:
    """Up to `limit` sorted key names for an error message."""
    shown = ", ".join(sorted(keys)[:limit])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")
