"""The test suite runs from a user's clone alone: nothing the project tracks
reaches outside the repository, and the tiny models for the real
llama-server tests come from the project's own maker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import gguf

from conftest import REPO

# A relative path a tracked file names, as `../` segments and a name.
RELATIVE = re.compile(rb"(?:\.\./)+[\w.-]+")


def outside(path: Path) -> bool:
    """Whether `path` (resolved without touching the disk) is beyond the repository."""
    resolved = os.path.normpath(path)
    return resolved != str(REPO) and not resolved.startswith(str(REPO) + os.sep)


def test_no_tracked_file_reaches_outside_the_repository():
    """No tracked file names a place beside the clone: no `../` path that
    leaves the repository from the file naming it, no absolute path into
    the directory holding the clone. Nothing is spelled out here: what is
    beside the repository is read from where it stands."""
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True
    ).stdout.split(b"\0")
    beside = (str(REPO.parent).rstrip("/") + "/").encode()
    offenders = []
    for name in filter(None, tracked):
        path = REPO / name.decode()
        if not path.is_file():
            continue
        text = path.read_bytes()
        offenders += [
            f"{name.decode()}: {m.decode()}"
            for m in RELATIVE.findall(text)
            if outside(path.parent / m.decode())
        ]
        if beside != b"/" and beside in text:
            offenders.append(f"{name.decode()}: {beside.decode()}")
    assert offenders == []


def test_the_project_writes_its_own_tiny_models(tmp_path):
    out = tmp_path / "tiny.gguf"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "tiny_gguf.py"), str(out), "--name", "tiny-x", "--ctx", "2048"],
        check=True,
        capture_output=True,
    )
    reader = gguf.GGUFReader(out)
    fields = reader.fields

    def scalar(key):
        field = fields[key]
        return field.parts[field.data[0]]

    assert bytes(scalar("general.name")).decode() == "tiny-x"
    assert int(scalar("llama.context_length")[0]) == 2048
    names = {tensor.name for tensor in reader.tensors}
    assert {"token_embd.weight", "output.weight", "blk.1.ffn_down.weight"} <= names
    # The same arguments give the same file: the models are a cache key.
    again = tmp_path / "again.gguf"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "tiny_gguf.py"), str(again), "--name", "tiny-x", "--ctx", "2048"],
        check=True,
        capture_output=True,
    )
    assert out.read_bytes() == again.read_bytes()
