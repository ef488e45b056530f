"""Write a file or folder beside its target and rename it into place, with ordinary permissions.

A crash never leaves a half-written file under the real name. ``tempfile.mkstemp`` creates
files with mode 0600 and ``mkdtemp`` folders with 0700 (and safetensors' ``save_file`` writes
0600 files too), and a rename keeps the mode: LoRA files
that ComfyUI / A1111 read as another user (or from a container) would be unreadable. So the
temporary file or folder gets the mode any new file gets under the process umask (0644 / 0755
under umask 022) before it is renamed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere the only way to read it is to set it and put it back
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a newly created file gets (0o666 minus the umask)."""
    return 0o666 & ~current_umask()


def folder_mode() -> int:
    """The mode a newly created folder gets (0o777 minus the umask)."""
    return 0o777 & ~current_umask()


def publish_file(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Give the finished temporary file ``tmp`` the umask's file mode and rename it to ``path`` (atomic)."""
    os.chmod(tmp, file_mode())
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it becomes ``path``.

    The parent folder is created. On an error the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        publish_file(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def make_temp_folder(target: str | os.PathLike[str]) -> Path:
    """A new hidden folder beside ``target`` with the umask's folder mode (not mkdtemp's 0700)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    os.chmod(tmp, folder_mode())
    return tmp


def give_umask_modes(folder: str | os.PathLike[str]) -> None:
    """Set every file and folder under ``folder`` (itself included) to the umask's modes."""
    files, folders = file_mode(), folder_mode()
    for root, dirs, names in os.walk(folder):
        os.chmod(root, folders)
        for name in names:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, files)
