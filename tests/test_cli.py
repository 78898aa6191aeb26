"""The `ltxv` entry point, run as a subprocess: help, info, convert, and exit code 2 on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import randomize_

import ltxv
from ltxv.presets import PRESETS
from ltxv.weights import save_checkpoint


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ltxv", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def native_file(tmp_path_factory):
    spec = PRESETS["tiny"]
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(
        path, spec, randomize_(ltxv.VideoVAE(spec.vae)), randomize_(ltxv.VideoDiT(spec.dit)), "native"
    )
    return path


def test_help_lists_subcommands():
    out = run("--help")
    assert out.returncode == 0 and "info" in out.stdout and "convert" in out.stdout


def test_help_states_each_default_once_and_no_empty_ones():
    out = run("eval", "--help")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())  # argparse wraps lines
    assert "(default: the checkpoint's)" in text and "(default: 8)" in text and "noise (default: 0)" in text
    assert "(default: None)" not in text and "(default: the checkpoint's) (default" not in text


def test_info_text_and_json(native_file):
    out = run("info", str(native_file))
    assert out.returncode == 0, out.stderr
    assert "format:   native" in out.stdout and "transformer:" in out.stdout and "dtype F32" in out.stdout
    data = json.loads(run("info", str(native_file), "--json").stdout)
    n_params = sum(p.numel() for p in ltxv.VideoDiT(PRESETS["tiny"].dit).parameters())
    assert data["components"]["transformer"]["params"] == n_params
    assert data["spec"]["dit"]["num_layers"] == 2


def test_reader_gone_away_is_a_quiet_exit_141(native_file):
    # `ltxv info FILE | head -1`: the pipe closes before everything is written
    proc = subprocess.Popen(
        [sys.executable, "-m", "ltxv", "info", str(native_file), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.close()  # before the child writes anything: every write of it meets a closed pipe
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_convert_to_every_format(native_file, tmp_path):
    for fmt, dst in (
        ("ltxv", tmp_path / "a.safetensors"),
        ("diffusers", tmp_path / "b"),
        ("native", tmp_path / "c.safetensors"),
    ):
        out = run("convert", str(native_file), str(dst), "--to", fmt)
        assert out.returncode == 0, out.stderr
        assert run("info", str(dst)).returncode == 0


@pytest.mark.parametrize("make", ["junk", "missing", "folder"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(make, tmp_path, native_file):
    src = tmp_path / "src.safetensors"
    if make == "junk":
        src.write_text("not a checkpoint")
    elif make == "folder":
        src = tmp_path / "empty_folder"
        src.mkdir()
    dst = tmp_path / "out.safetensors"
    for args in (("info", str(src)), ("convert", str(src), str(dst), "--to", "ltxv")):
        out = run(*args)
        assert out.returncode == 2, out
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
        assert str(src) in out.stderr
    assert not dst.exists() and [p.name for p in tmp_path.iterdir()] == ([src.name] if src.exists() else [])


def test_unknown_format_is_an_argparse_error(native_file, tmp_path):
    out = run("convert", str(native_file), str(tmp_path / "x"), "--to", "pickle")
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_data_synth_subcommand(tmp_path):
    out = run("data", "synth", str(tmp_path / "shapes"), "--clips", "2", "--size", "32", "--frames", "9")
    assert out.returncode == 0, out.stderr
    assert len((tmp_path / "shapes" / "captions.jsonl").read_text().splitlines()) == 2
    bad = run("data", "synth", str(tmp_path / "bad"), "--clips", "0")
    assert (
        bad.returncode == 2 and "clips" in bad.stderr and not (tmp_path / "bad" / "captions.jsonl").exists()
    )


def test_eval_size_0_is_refused_not_replaced_by_the_default():
    out = run("eval", "--size", "0", "--clips", "1")
    assert out.returncode == 2 and "multiple of 32" in out.stderr and "got 0" in out.stderr, out.stderr


def test_eval_checks_its_arguments_before_rendering(tmp_path):
    """A bad --seed or an unwritable --json is refused before any clip is rendered or generated."""
    out = run("eval", "--clips", "1", "--seed", "-1")
    assert out.returncode == 2 and "seed must be an integer in [0, 2**64 - 1], got -1" in out.stderr
    for target in (tmp_path, tmp_path / "file.txt" / "e.json"):
        (tmp_path / "file.txt").write_text("x")
        out = run("eval", "--clips", "1", "--json", str(target))
        assert out.returncode == 2 and "cannot write" in out.stderr, out.stderr
        assert "[1/1]" not in out.stderr and out.stdout == ""  # no clip was generated
    bad = run("data", "synth", str(tmp_path / "s"), "--clips", "1", "--seed", "-1")
    assert bad.returncode == 2 and "seed must be" in bad.stderr


def test_usage_errors_are_one_line():
    """argparse's own errors (a non-number, an unknown command) in one line naming the flag, exit code 2."""
    for args, message in (
        (("generate", "x", "--height", "nan"), "argument --height: invalid int value: 'nan'"),
        (("nosuch",), "invalid choice: 'nosuch'"),
    ):
        out = run(*args)
        assert out.returncode == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1


class _BadClips:  # a dataset whose clips fail to decode (module level: DataLoader workers pickle it)
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int):
        raise ValueError("clip.mp4: decoded 3 frames; re-encode the file")


def test_an_error_in_a_dataloader_worker_is_one_line(capsys):
    """torch re-raises a worker's error with the worker's whole traceback in its message: the CLI prints the
    original message only."""
    import argparse

    import torch

    from ltxv.cli import run_handler

    def handler(_: argparse.Namespace) -> int:
        return len(list(torch.utils.data.DataLoader(_BadClips(), num_workers=1)))

    assert run_handler(handler, argparse.Namespace(command="preprocess")) == 2
    assert (
        capsys.readouterr().err == "ltxv preprocess: error: clip.mp4: decoded 3 frames; re-encode the file\n"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "a red circle", "--steps", "4", "--seed", "3"],
        ["train", "dit", "--data", "cache", "--out", "runs/x", "--steps", "5"],
        ["data", "synth", "out", "--clips", "2"],
        ["eval", "--clips", "3"],
        ["convert", "a.safetensors", "b", "--to", "native"],
    ],
)
def test_one_subcommand_parser_parses_as_the_whole_one(argv):
    from ltxv.cli import COMMANDS, _parser

    whole, only = _parser(COMMANDS).parse_args(argv), _parser(argv[:1]).parse_args(argv)
    assert vars(only) == vars(whole) and only.handler is not None
    for other in set(COMMANDS) - {argv[0]}:  # the others are there, without their arguments
        assert _parser(argv[:1]).parse_args([other]).command == other


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "a red circle"],
        ["train", "dit", "--data", "cache"],
        ["preprocess", "clips", "--model", "m"],
    ],
)
def test_short_o_is_out(argv):
    from ltxv.cli import _parser

    parser = _parser(argv[:1])
    assert parser.parse_args([*argv, "-o", "x/y"]).out == "x/y"
    assert vars(parser.parse_args([*argv, "-o", "x/y"])) == vars(parser.parse_args([*argv, "--out", "x/y"]))


def test_version_and_help_import_no_torch_and_generate_no_other_subcommand():
    for argv in (["--version"], ["--help"]):
        code = (
            "import sys\nfrom ltxv.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and out.stdout.strip().endswith("False"), (argv, out.stdout, out.stderr)
    code = (
        "import sys; from ltxv.cli import _parser; _parser(['generate']).parse_args(['generate', 'x']); "
        "print(sorted(m for m in ('ltxv.serve', 'ltxv.evaluate', 'ltxv.train.command', 'ltxv.data.cache') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
