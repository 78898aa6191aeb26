"""Inference on several processes (ltxv.parallel): gloo processes under torchrun give the one-process result;
the degrees are checked against the job and the transformer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from parallel_worker import build, cases
from safetensors.torch import load_file

from ltxv import SpeedConfig
from ltxv.cli import main
from ltxv.media import read_media
from ltxv.parallel import join

TESTS = Path(__file__).parent


def _torchrun(n: int, *args: str, cwd: Path = TESTS) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n), *args]
    done = subprocess.run(cmd, capture_output=True, env=env, timeout=600, cwd=cwd)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return done


@pytest.fixture(scope="module")
def one_process():
    return cases(build(SpeedConfig()))


@pytest.mark.parametrize(("groups", "sequence", "block_cache"), [(1, 2, 0.0), (2, 2, 0.3), (4, 1, 0.0)])
def test_processes_match_one(one_process, tmp_path, groups, sequence, block_cache):
    """CFG + STG on two prompts (6 rows over the groups), a padded sequence (27 tokens over the shards),
    keyframe tokens with their own timesteps (also with keyframe guidance), a chain of two segments; every
    process ends with the same latents and drawn seed."""
    degrees = [str(groups), str(sequence), str(block_cache)]
    _torchrun(groups * sequence, "parallel_worker.py", *degrees, str(tmp_path / "o"))
    ranks = [load_file(tmp_path / f"o.{r}") for r in range(groups * sequence)]
    reference = one_process if block_cache == 0 else cases(build(SpeedConfig(block_cache=block_cache)))
    for name in ("two_prompts", "conditions", "keyframe_guidance", "chain", "chain_video"):
        torch.testing.assert_close(ranks[0][name], reference[name], rtol=0, atol=1e-5, msg=name)
    for other in ranks[1:]:
        for name, value in ranks[0].items():
            assert torch.equal(other[name], value), name  # the seed too: drawn once, by rank 0


def test_degrees_are_checked():
    pipe = build(SpeedConfig())
    assert pipe.parallel is None  # 1 x 1: no process group
    with pytest.raises(
        ValueError, match=r"needs 2 processes, this job has one process.*torchrun --nproc-per-node 2"
    ):
        join(1, 2, torch.device("cpu"), heads=2)
    with pytest.raises(ValueError, match=r"--sequence-parallel 3 splits attention heads.*has 2"):
        os.environ["WORLD_SIZE"] = "3"
        try:
            join(1, 3, torch.device("cpu"), heads=2)
        finally:
            del os.environ["WORLD_SIZE"]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(
            ValueError, match="sequence_parallel .--sequence-parallel. must be a whole number"
        ):
            SpeedConfig(sequence_parallel=bad)
    with pytest.raises(ValueError, match="cfg_parallel"):
        SpeedConfig(cfg_parallel=0)


def test_cli_refuses_degrees_that_do_not_fit_the_job(tmp_path, capsys, monkeypatch):
    out = tmp_path / "v.mp4"
    assert (
        main(["generate", "a red circle", "--sequence-parallel", "2", "--steps", "1", "--out", str(out)]) == 2
    )
    assert "needs 2 processes" in capsys.readouterr().err and not out.exists()
    assert main(["generate", "a red circle", "--cfg-parallel", "0", "--out", str(out)]) == 2
    assert (
        "cfg_parallel (--cfg-parallel) must be a whole number of processes >= 1, got 0"
        in capsys.readouterr().err
    )
    monkeypatch.setenv("WORLD_SIZE", "2")  # a job of two: the degrees fit, the comparison does not
    assert main(["bench", "--preset", "tiny", "--compare", "diffusers", "--cfg-parallel", "2"]) == 2
    assert "--compare diffusers times one process" in capsys.readouterr().err


def test_cli_under_torchrun_writes_the_one_process_video(tmp_path):
    """`torchrun -m ltxv generate` with the bundled model: sequence parallel by default, rank 0 writes.
    One frame, so the file is a lossless PNG: H.264 turns a one-level rounding difference in 0.01 % of the
    pixels into differences of up to 86 levels (measured), which says nothing about the processes."""
    args = ["generate", "a red circle moving right on a black background", "--seed", "3", "--steps", "2"]
    args += ["--frames", "1"]  # 36 tokens at 192 px, split over the two processes
    single = tmp_path / "one.png"
    assert main([*args, "--out", str(single)]) == 0
    two = _torchrun(2, "-m", "ltxv", *args, "--out", str(tmp_path / "two.png"), cwd=tmp_path)
    assert two.stdout.decode().count("wrote") == 1, two.stdout.decode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.png", "two.png"]
    a, _ = read_media(str(single))
    b, _ = read_media(str(tmp_path / "two.png"))
    assert a.shape == b.shape and a.shape[:3] == (1, 3, 1)
    assert (a - b).abs().max() <= 2 / 255 + 1e-6  # at most a rounding step (read_media's [-1, 1] scale)


def test_a_bare_cuda_under_torchrun_is_the_process_gpu(monkeypatch):
    """from_pretrained and bench under torchrun put a bare `cuda` on the process's own GPU."""
    from ltxv.parallel import local_device

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert local_device(torch.device("cuda")) == torch.device("cuda", 1)
    assert local_device(torch.device("cuda", 0)) == torch.device("cuda", 0)  # an explicit index stays
    assert local_device(torch.device("cpu")) == torch.device("cpu")


def test_bench_under_torchrun_reports_once(tmp_path):
    small = [
        "--width",
        "64",
        "--height",
        "64",
        "--frames",
        "9",
        "--steps",
        "2",
        "--repeats",
        "1",
        "--warmup",
        "0",
    ]
    out = tmp_path / "b.json"
    done = _torchrun(2, "-m", "ltxv", "bench", "--preset", "tiny", *small, "--json", str(out), cwd=tmp_path)
    printed = done.stdout.decode()
    assert printed.count("realtime factor") == 1 and "2 processes (figures of rank 0)" in printed
    assert "cfg parallel 1 x sequence parallel 2" in printed
    report = json.loads(out.read_text())
    assert report["processes"] == 2 and report["settings"]["speed"]["sequence_parallel"] == 2
