"""Writing files so that no reader ever sees half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_file(target: Path, prefix: str = ".tmp-", suffix: str = "") -> Iterator[IO[bytes]]:
    """A file opened for writing that appears under `target`'s name only when the block ends without error:
    written to a temporary file in the same folder (mode 0600), flushed to the disk (fsync), then renamed into
    place; on an error the temporary file is removed and `target` is untouched."""
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=prefix, suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_atomically(target: Path, body: bytes) -> None:
    """Write `body` to `target` through a temporary file in the same folder renamed into place. The
    file is readable and writable by this user only (mkstemp creates it 0600), which the service's
    address file (api/internal_store.py) relies on: it holds a secret. The data reaches the disk (fsync)
    before the rename, so a crash or power cut never leaves an empty file under the target's name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(target) as handle:
        handle.write(body)
