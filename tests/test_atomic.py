"""The atomic writer: old file or new, never half, and the permissions a plain `open` would give."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from vae_core import VAE, RunSpec, VAEConfig, atomic
from vae_core.checkpoint import save_checkpoint

pytestmark = pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX permissions")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_a_new_file_gets_the_mode_open_would_give(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask: int, expected: int
) -> None:
    """mkstemp's private 0600 is not passed on: a new file is 0666 less the umask, as with open()."""
    monkeypatch.setattr(atomic, "UMASK", umask)
    path = atomic.atomic_write_text(tmp_path / "card.json", "{}")
    assert path.read_text() == "{}" and mode(path) == expected


def test_a_replaced_file_keeps_its_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(atomic, "UMASK", 0o022)
    path = tmp_path / "model.pt"
    path.write_bytes(b"old")
    path.chmod(0o640)
    atomic.atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new" and mode(path) == 0o640


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"old")

    def fail(f: object) -> None:
        f.write(b"half")  # type: ignore[attr-defined]
        raise OSError("interrupted")

    with pytest.raises(OSError, match="interrupted"):
        atomic.atomic_write(path, fail)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_a_saved_checkpoint_is_readable_by_other_accounts_under_umask_022(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint trained by one account opens in an app run by another (it was 0600)."""
    monkeypatch.setattr(atomic, "UMASK", 0o022)
    config = VAEConfig(arch="mlp", latent_dim=2, hidden=(8,))
    save_checkpoint(tmp_path / "ck", VAE(config), spec=RunSpec(model=config), metrics={}, epoch=0, step=0)
    assert mode(tmp_path / "ck" / "model.pt") == 0o644


def test_the_umask_read_at_import_is_the_process_umask() -> None:
    current = os.umask(0o022)
    os.umask(current)
    assert current == atomic.UMASK
