"""Writing generated files: all or nothing, and a read-only staleness check."""

from __future__ import annotations

import difflib
import os
import stat
import tempfile
from pathlib import Path


class WriteError(Exception):
    def __init__(self, message: str, written: list[Path]):
        super().__init__(message)
        self.written = written


def write_all(files: dict[Path, str | bytes]) -> list[Path]:
    """Write every file atomically (temporary file in the same folder, then rename).
    Text is written as UTF-8 with its newlines as given; bytes as they are.

    All contents are staged before the first rename, so a failure while
    staging (full disk, no permission) leaves every existing file untouched.
    Returns the paths whose content changed.
    """
    staged: list[tuple[Path, str]] = []
    current: Path | None = None
    try:
        for current, text in files.items():
            path = current
            data = text if isinstance(text, bytes) else text.encode("utf-8")
            # Bytes, not text: an existing file need not be UTF-8 to be replaced.
            if path.is_file() and path.read_bytes() == data:
                continue  # unchanged: keep the file and its timestamp
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(
                dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
            )
            staged.append((path, temp))
            # mkstemp makes 0600 files; give the mode a plain write would.
            os.chmod(temp, _mode(path))
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
    except BaseException as exc:
        # Whatever stopped the staging (full disk, no permission, Ctrl-C), no
        # temporary file stays behind and no target has been touched yet.
        for _, temp in staged:
            Path(temp).unlink(missing_ok=True)
        if not isinstance(exc, OSError):
            raise
        raise WriteError(
            # A failed write() carries no file name; name the file being staged.
            f"cannot write {current}: {exc.strerror or exc}; no file was changed",
            [],
        ) from exc
    written: list[Path] = []
    for path, temp in staged:
        try:
            os.replace(temp, path)
        except BaseException as exc:
            for _, rest in staged[len(written) :]:
                Path(rest).unlink(missing_ok=True)
            if not isinstance(exc, OSError):
                raise
            raise WriteError(
                f"cannot replace {path}: {exc.strerror or exc}", written
            ) from exc
        written.append(path)
    return written


def _mode(path: Path) -> int:
    """The replaced file's permissions, or the umask's default for a new one."""
    if path.is_file():
        return stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def stale(files: dict[Path, str]) -> dict[Path, str]:
    """{path: unified diff} for every file whose content differs from `files`."""
    diffs = {}
    for path, text in files.items():
        # errors="replace": a non-UTF-8 file is stale, not a crash.
        current = (
            path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        )
        if current != text:
            diff = difflib.unified_diff(
                current.splitlines(keepends=True),
                text.splitlines(keepends=True),
                f"{path} (checked in)",
                f"{path} (compiler output)",
            )
            diffs[path] = "".join(diff) or f"{path} is missing\n"
    return diffs
