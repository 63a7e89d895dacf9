"""Replace a file atomically: after a crash it holds either the old bytes or the new ones.

The one file writer of the project (the state file of
``scaffold up``): write a temporary file next to the target, fsync it, rename it over the
target, then fsync the directory so that the rename itself survives a power loss.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Make ``path`` hold ``data``, creating its directory if needed.

    Raises:
        OSError: the directory or the file cannot be written (the old file is left as it was).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
