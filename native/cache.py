"""The private cache folder for compiled code."""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    """Where compiled code is cached: ``$SLIMDRIVE_KERNEL_DIR`` or ``<tmp>/slimdrive-kernels-<uid>``, created
    private to this user; a folder that another user owns or can write to is refused (it could plant code)."""
    default = Path(tempfile.gettempdir()) / f"slimdrive-kernels-{os.getuid()}"
    path = Path(os.environ.get("SLIMDRIVE_KERNEL_DIR", default))
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise RuntimeError(f"the compiled-code cache {path} is not private to this user (owner uid {info.st_uid}, "
                           f"mode {oct(info.st_mode & 0o777)}): remove it, or set SLIMDRIVE_KERNEL_DIR to a folder "
                           "of your own")
    return path
