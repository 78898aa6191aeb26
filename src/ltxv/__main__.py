"""`python -m ltxv` -> the `ltxv` command."""

from .cli import main

raise SystemExit(main())
