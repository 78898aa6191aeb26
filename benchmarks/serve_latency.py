"""Seconds per video from `ltxv serve` (the model kept loaded) against `ltxv generate` (a process per video),
in the same run on the same machine.

    python benchmarks/serve_latency.py [--model M] [--requests 10] [--commands 5] [--json out.json]

Starts `ltxv serve --port 0` on the model (default: the bundled one), sends one warm-up request, then
`--requests` requests one after the other (seeds 1, 2, ...), each timed from sending to the last byte of the
reply; stops the server, then runs `ltxv generate` `--commands` times (the same prompt, seeds 1, 2, ...), each
timed from start to exit. Prints both (median, range), the realtime factors (video seconds / wall seconds) and
the ratio of the medians. Every other setting is the model's (generation.json).
"""

from __future__ import annotations

import argparse
import http.client
import json
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT = "a red circle moving right on a black background"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model folder or checkpoint (default: the bundled demo model)")
    p.add_argument("--requests", type=int, default=10, help="timed requests to the server")
    p.add_argument("--commands", type=int, default=5, help="timed `ltxv generate` runs")
    p.add_argument("--prompt", default=PROMPT)
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    model = ["--model", args.model] if args.model else []
    served = serve_times(model, args.prompt, args.requests)
    commands = command_times(model, args.prompt, args.commands)
    seconds = video_seconds(args.model)
    report = {
        "video_seconds": seconds,
        "serve": summary(served, seconds),
        "generate": summary(commands, seconds),
    }
    report["ratio_of_medians"] = report["generate"]["median_s"] / report["serve"]["median_s"]
    for name in ("serve", "generate"):
        row = report[name]
        spread = f"range {row['min_s']:.3f}-{row['max_s']:.3f} s, n={row['n']}"
        print(
            f"{name:>8}: median {row['median_s']:.3f} s per {seconds:.2f} s video ({spread}), "
            f"realtime factor {row['realtime_factor']:.2f}"
        )
    print(f"ltxv serve makes a video {report['ratio_of_medians']:.1f}x faster than a process per video")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def serve_times(model: list[str], prompt: str, n: int) -> list[float]:
    """Seconds per request (after one warm-up) from a fresh `ltxv serve`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ltxv", "serve", *model, "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        if not select.select([proc.stdout], [], [], 600)[0]:
            raise SystemExit("ltxv serve printed no address within 600 s")
        line = proc.stdout.readline()  # "serving MODEL at http://127.0.0.1:PORT/ ..."
        if " at http://" not in line:
            raise SystemExit(f"ltxv serve did not start: {line!r}")
        port = int(line.split(" at http://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        post(port, prompt, 0)  # warm-up
        return [post(port, prompt, seed) for seed in range(1, n + 1)]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def post(port: int, prompt: str, seed: int) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    begun = time.perf_counter()
    body = json.dumps({"prompt": prompt, "seed": seed})
    conn.request("POST", "/generate", body=body, headers={"Content-Type": "application/json"})
    reply = conn.getresponse()
    data = reply.read()
    took = time.perf_counter() - begun
    conn.close()
    if reply.status != 200:
        raise SystemExit(f"request failed: {reply.status} {data[:300]!r}")
    return took


def command_times(model: list[str], prompt: str, n: int) -> list[float]:
    """Seconds from start to exit of `ltxv generate`, one process per video."""
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(1, n + 1):
            command = ["ltxv", "generate", prompt, *model, "--seed", str(seed), "--out", f"{tmp}/v.mp4"]
            begun = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            times.append(time.perf_counter() - begun)
    return times


def video_seconds(model: str | None) -> float:
    from ltxv.demo import demo_model, sample_config

    cfg = sample_config(model or demo_model(), {})
    return cfg.num_frames / cfg.frame_rate


def summary(times: list[float], seconds: float) -> dict[str, float]:
    median = statistics.median(times)
    return {
        "n": len(times),
        "median_s": median,
        "min_s": min(times),
        "max_s": max(times),
        "realtime_factor": seconds / median,
    }


if __name__ == "__main__":
    main()
