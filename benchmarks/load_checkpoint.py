"""Load time and peak RSS of synthetic official-format 2B / 13B checkpoints, each load in a fresh process.

    python benchmarks/load_checkpoint.py --preset 2b --preset 13b --dtype bf16 --dir /tmp/ltxv-bench [--keep]

The file is streamed to disk one seeded `torch.randn` tensor at a time (memory stays ~one tensor), then each
component is loaded in its own subprocess twice: "cold" (file evicted from the page cache with
posix_fadvise) and "warm" (straight after). The loaders may return tensors that map the file lazily
(safetensors mmap), so after the load every weight page is read once ("read s") and peak RSS is taken both
after the load and after that read. GB = 1e9 bytes; loaded GB = the component's bytes in the file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open

import ltxv
from ltxv import convert

DTYPES = {"bf16": (torch.bfloat16, "BF16"), "fp16": (torch.float16, "F16"), "fp32": (torch.float32, "F32")}
LOADERS = {"transformer": ltxv.load_transformer, "vae": ltxv.load_vae}
RAM_HEADROOM = 1 << 30  # bytes kept free besides one copy of the loaded component
GB = 1e9


def native_shapes(preset: str) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
    """Official tensor names -> shapes (models built on meta), and the element count of each component."""
    spec = ltxv.PRESETS[preset]
    with torch.device("meta"):
        vae = {k: tuple(v.shape) for k, v in ltxv.VideoVAE(spec.vae).state_dict().items()}
        dit = {k: tuple(v.shape) for k, v in ltxv.VideoDiT(spec.dit).state_dict().items()}
    numel = {"vae": sum(map(math.prod, vae.values())), "transformer": sum(map(math.prod, dit.values()))}
    return convert.ltxv_to_native(vae, dit), numel


def native_config(preset: str) -> str:
    """The official `config` metadata: JSON of the native VAE, transformer and scheduler configs."""
    spec = ltxv.PRESETS[preset]
    vae, dit = convert.vae_config_to_native(spec.vae), convert.dit_config_to_native(spec.dit)
    return json.dumps(
        {"vae": vae, "transformer": dit, "scheduler": convert.scheduler_to_native(spec.scheduler)}
    )


def write_safetensors(
    path: Path, shapes: dict[str, tuple[int, ...]], dtype: str, meta: dict[str, str]
) -> None:
    """Stream safetensors: u64 LE header length, JSON header padded to 8, then tensors in header order."""
    torch_dtype, st_dtype = DTYPES[dtype]
    nbytes = torch_dtype.itemsize
    header: dict[str, object] = {"__metadata__": meta}
    offset = 0
    for name, shape in shapes.items():
        size = math.prod(shape) * nbytes
        header[name] = {"dtype": st_dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    gen = torch.Generator().manual_seed(0)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for shape in shapes.values():
            tensor = torch.randn(shape, generator=gen, dtype=torch_dtype)
            f.write(tensor.reshape(-1).view(torch.uint8).numpy().data)  # (numel * itemsize,) bytes, LE
        f.flush()
        os.fsync(f.fileno())


def verify(path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """The file opens with safetensors, lists every tensor, and the first / last have the right shapes."""
    names = list(shapes)
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == set(names), "tensor names differ from the header written"
        assert "config" in (f.metadata() or {}), "config metadata missing"
        for name in (names[0], names[-1]):
            got = tuple(f.get_slice(name).get_shape())
            assert got == shapes[name], f"{name}: shape {got} != {shapes[name]}"


def evict(path: Path) -> None:
    """Drop the file's clean pages from the page cache so the next load reads from disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def child(component: str, path: str, dtype: str) -> None:
    """Runs in a fresh process: load one component, read every weight page, print one JSON line."""
    out = {"base_kib": rss_kib()}
    start = time.perf_counter()
    model = LOADERS[component](path, dtype=DTYPES[dtype][0])
    out |= {"load_s": time.perf_counter() - start, "load_kib": peak_kib()}
    assert not any(p.is_meta for p in model.parameters()), "parameters left on the meta device"
    start = time.perf_counter()
    for t in model.state_dict().values():  # one element per 4 KiB page faults in a lazily mapped tensor
        t.reshape(-1)[:: max(1, 4096 // t.element_size())].sum()
    out |= {"read_s": time.perf_counter() - start, "read_kib": peak_kib()}
    print(json.dumps(out))


def row(label: list[str], file: int, loaded: int, r: dict[str, float]) -> list[str]:
    base, load, read = (r[k] * 1024 for k in ("base_kib", "load_kib", "read_kib"))
    values = [file / GB, loaded / GB, r["load_s"], r["read_s"], base / GB, load / GB, read / GB]
    ratios = [(load - base) / file, (read - base) / file, (read - base) / loaded]
    return label + [f"{x:.2f}" for x in values + ratios]


def measure(component: str, path: Path, dtype: str) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", component, "--path", str(path), "--dtype", dtype]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:  # the child's last error line (e.g. a CheckpointError), not its traceback
        raise RuntimeError((out.stderr.strip().splitlines() or [f"exit code {out.returncode}"])[-1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))


def device_info() -> str:
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"device: {cpu}, {os.cpu_count()} cores, {ram:.1f} GiB RAM; torch {torch.__version__}, "
        f"python {platform.python_version()}"
    )


def fits_in_ram(preset: str, numel: dict[str, int], itemsize: int, component: str) -> list[str]:
    """The requested components whose weights plus headroom fit in MemAvailable; the others print a SKIP."""
    out = []
    for comp in ["transformer", "vae"] if component == "both" else [component]:
        need, avail = numel[comp] * itemsize + RAM_HEADROOM, mem_available()
        if need <= avail:
            out.append(comp)
        else:
            print(
                f"SKIP {preset} {comp}: loading needs ~{need / GB:.1f} GB RAM, {avail / GB:.1f} GB available"
            )
    return out


def bench_preset(preset: str, args: argparse.Namespace) -> list[list[str]]:
    """Write, verify and load one preset; returns table rows (skips are printed, not raised)."""
    shapes, numel = native_shapes(preset)
    itemsize = DTYPES[args.dtype][0].itemsize
    file_bytes = sum(numel.values()) * itemsize
    loadable = fits_in_ram(preset, numel, itemsize, args.component)
    free = shutil.disk_usage(args.dir).free
    if not loadable or file_bytes + RAM_HEADROOM > free:
        reason = "nothing left to load" if not loadable else f"{free / GB:.1f} GB free on {args.dir}"
        print(f"SKIP {preset}: file {file_bytes / GB:.1f} GB ({reason})")
        return []
    path = Path(args.dir) / f"ltxv-{preset}-{args.dtype}-synthetic.safetensors"
    rows = []
    try:
        start = time.perf_counter()
        write_safetensors(path, shapes, args.dtype, {"config": native_config(preset)})
        print(f"wrote {path} ({file_bytes / GB:.2f} GB) in {time.perf_counter() - start:.0f} s")
        try:  # a RuntimeError here means safetensors cannot open the file at all (e.g. mmap refused)
            verify(path, shapes)
        except RuntimeError as err:
            print(f"FAIL {preset}: safe_open: {err}")
        for comp in loadable:
            for cache in ("cold", "warm"):
                if cache == "cold":
                    evict(path)
                try:
                    r = measure(comp, path, args.dtype)
                except RuntimeError as err:
                    print(f"FAIL {preset} {comp} load ({cache} cache): {err}")
                    break
                rows.append(row([preset, comp, args.dtype, cache], file_bytes, numel[comp] * itemsize, r))
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)
    return rows


def print_table(rows: list[list[str]]) -> None:
    head = ["preset", "component", "dtype", "cache", "file GB", "loaded GB", "load s", "read s", "base GB",
            "peak GB load", "peak GB read", "Δload/file", "Δread/file", "Δread/loaded"]  # fmt: skip
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, ["-" * w for w in widths], *rows]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", action="append", choices=sorted(ltxv.PRESETS), help="repeatable (default: 2b)")
    p.add_argument(
        "--dtype", default="bf16", choices=sorted(DTYPES), help="file and load dtype (default: %(default)s)"
    )
    p.add_argument(
        "--component", default="both", choices=["both", "transformer", "vae"], help="default: %(default)s"
    )
    p.add_argument("--dir", default="/tmp/ltxv-bench", help="for the synthetic files (default: %(default)s)")
    p.add_argument("--keep", action="store_true", help="keep the synthetic files")
    p.add_argument("--child", choices=sorted(LOADERS), help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:  # internal: one measurement in a fresh process
        child(args.child, args.path, args.dtype)
        return
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    print(device_info())
    rows = [row for preset in args.preset or ["2b"] for row in bench_preset(preset, args)]
    print("Δ = peak RSS - base RSS (after `import torch, ltxv`), after the load / after reading every page")
    print_table(rows)


if __name__ == "__main__":
    main()
