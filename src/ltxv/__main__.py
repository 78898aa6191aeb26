"""`python -m ltxv` -> the `ltxv` command."""

from .cli import console

console()
