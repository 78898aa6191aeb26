"""ltxv.files: atomic writes beside the target with the umask's mode, parents made and cleaned up, clear
errors; and the package's writers (weights, train state) that go through it."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from ltxv.files import atomic_file, atomic_folder, check_writable, write_text_atomic
from ltxv.train import state


@pytest.fixture
def umask_027():
    """A umask other than the usual 022, so the test sees it respected rather than a hard-coded 0644."""
    old = os.umask(0o027)
    yield
    os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mode & 0o777 for p in sorted(root.rglob("*"))}


def test_files_and_folders_get_the_umask_mode_even_from_private_writers(tmp_path, umask_027):
    from safetensors.torch import save_file  # replaces its output with a 0600 file

    with atomic_file(tmp_path / "a.safetensors") as tmp:
        save_file({"x": torch.zeros(1)}, tmp)
    write_text_atomic(tmp_path / "sub" / "b.json", "{}")
    with atomic_folder(tmp_path / "folder") as tmp:
        (tmp / "inner").mkdir(mode=0o700)
        save_file({"x": torch.zeros(1)}, tmp / "inner" / "c.safetensors")
    assert _modes(tmp_path) == {
        "a.safetensors": 0o640,
        "folder": 0o750,
        "folder/inner": 0o750,
        "folder/inner/c.safetensors": 0o640,
        "sub": 0o750,
        "sub/b.json": 0o640,
    }


def test_package_writers_give_the_umask_mode(tmp_path, umask_027):
    from ltxv.weights import atomic_save

    atomic_save({"x": torch.zeros(1)}, tmp_path / "w.safetensors", {})
    state.write_json_atomic(tmp_path / "config.json", {"a": 1})
    state.save_training_checkpoint(tmp_path, 5, {"x": torch.zeros(1)}, {}, None, keep_last=2)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 9}\n')
    state.truncate_metrics(tmp_path, 5)
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1}\n'
    modes = _modes(tmp_path)
    assert modes.pop("checkpoints") == modes.pop("checkpoints/step_00000005") == 0o750
    assert set(modes.values()) == {0o640}, modes


def test_a_step_folder_is_replaced_whole(tmp_path):
    first = state.save_training_checkpoint(tmp_path, 5, {"x": torch.zeros(1)}, {}, {"x": torch.ones(1)}, 2)
    again = state.save_training_checkpoint(tmp_path, 5, {"x": torch.ones(1)}, {}, None, 2)
    assert first == again and sorted(p.name for p in again.iterdir()) == ["model.safetensors", "state.json"]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000005"]


def test_failures_leave_nothing_and_keep_the_old_file(tmp_path):
    (tmp_path / "old.txt").write_text("before")
    for target in (tmp_path / "old.txt", tmp_path / "new" / "deeper" / "x.txt"):
        with pytest.raises(RuntimeError, match="died"), atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer died")
    with pytest.raises(RuntimeError, match="died"), atomic_folder(tmp_path / "a" / "b" / "folder") as tmp:
        (tmp / "part").write_text("half")
        raise RuntimeError("writer died")
    assert [p.name for p in tmp_path.iterdir()] == ["old.txt"]  # no temporaries, no empty parent folders
    assert (tmp_path / "old.txt").read_text() == "before"


def test_the_temporary_is_beside_the_target_so_no_rename_crosses_filesystems(tmp_path):
    target = tmp_path / "missing" / "parents" / "out"
    with atomic_folder(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".out.")
    with atomic_file(tmp_path / "f.txt") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".f.txt.")


@pytest.mark.skipif(
    not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == os.stat(tempfile.gettempdir()).st_dev,
    reason="needs /dev/shm on another filesystem than the temporary folder",
)
def test_a_folder_on_another_filesystem_with_missing_parents():
    root = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        with atomic_folder(root / "x" / "sub" / "dif") as tmp:
            (tmp / "model_index.json").write_text("{}")
        assert (root / "x" / "sub" / "dif" / "model_index.json").is_file()
    finally:
        shutil.rmtree(root)


def test_bad_targets_are_refused_up_front_naming_the_path(tmp_path):
    (tmp_path / "t.txt").write_text("a file")
    (tmp_path / "d").mkdir()
    cases = [
        (lambda: check_writable(tmp_path / "t.txt" / "x.mp4"), r"t\.txt' is a file, not a folder"),
        (lambda: check_writable(tmp_path / "d"), r"d': it is a folder"),
        (lambda: check_writable(tmp_path / "d", folder=True), r"d': it already exists"),
        (lambda: check_writable(tmp_path / "t.txt", folder=True), r"t\.txt': it already exists"),
    ]
    if Path("/proc/self").is_dir():  # /proc takes no new files, even for root
        cases.append(
            (lambda: check_writable("/proc/x.mp4"), r"'/proc/x\.mp4'.*cannot create anything in '/proc'")
        )
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    assert check_writable(tmp_path / "new" / "deep" / "x.mp4") == tmp_path / "new" / "deep" / "x.mp4"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "t.txt"]  # the probes left nothing
