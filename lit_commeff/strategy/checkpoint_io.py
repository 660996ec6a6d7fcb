"""Checkpoint files written atomically: a crash during a save leaves the previous checkpoint intact."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override

log = logging.getLogger(__name__)

TMP_MARK = ".tmp-"


class AtomicCheckpointIO(TorchCheckpointIO):
    """:class:`~lightning.pytorch.plugins.io.TorchCheckpointIO` whose local writes are all-or-nothing.

    Lightning's own writer goes through an fsspec transaction whose temporary file lives in the system
    temp directory; committing it to another file system is a copy, and a crash during that copy leaves
    a truncated file where ``last.ckpt`` was. Here the bytes go to a hidden temporary file in the
    checkpoint's own directory, are flushed and ``fsync``-ed, and replace the target with ``os.replace``
    (atomic on POSIX), after which the directory is ``fsync``-ed too. A reader therefore sees the old
    file or the new one, never a part. Remote paths (``s3://`` …) keep Lightning's behaviour.
    """

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or get_filesystem(path).protocol not in ("file", ("file", "local")):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # serialise first: a failure here touches no file at all
        tmp = target.with_name(f".{target.name}{TMP_MARK}{os.getpid()}")
        try:
            with open(tmp, "wb") as fh:
                fh.write(buffer.getbuffer())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
        _fsync_dir(target.parent)
        log.debug("checkpoint written atomically: %s (%d bytes)", target, buffer.tell())

    @override
    def remove_checkpoint(self, path: Any) -> None:
        super().remove_checkpoint(path)
        target = Path(path)
        if target.parent.is_dir():  # temporaries left by a process killed mid-write
            for stale in target.parent.glob(f".{target.name}{TMP_MARK}*"):
                stale.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory file descriptors
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
