"""Writing files so that no reader ever sees half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(target: Path, body: bytes) -> None:
    """Write `body` to `target` through a temporary file in the same folder renamed into place. The
    file is readable and writable by this user only (mkstemp creates it 0600), which the service's
    address file (api/internal_store.py) relies on: it holds a secret. The data reaches the disk (fsync)
    before the rename, so a crash or power cut never leaves an empty file under the target's name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
