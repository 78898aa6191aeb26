"""When the package began loading (imported first by `ltxv/__init__`): `ltxv generate`'s clock where its
process is older than Python (`generate_cli.program_seconds`)."""

import time

STARTED = time.perf_counter()
