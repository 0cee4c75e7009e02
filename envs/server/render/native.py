"""The compiled part of the renderer: `zbuffer.c` (the box rasterizer and the colour pass), built with the system C compiler on first use and loaded with
ctypes (which releases the GIL while it runs, so cameras can render on several threads).

The shared library is cached by the source's digest in ``$SLIMDRIVE_KERNEL_DIR`` (default
``<tmp>/slimdrive-kernels-<uid>``, where the policy's kernel is cached too); building takes about a second.
Several server processes may start at once: each builds under a private name and renames it into place.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

SOURCE = Path(__file__).with_name("zbuffer.c")
CFLAGS = ["-O3", "-ffast-math", "-fPIC", "-shared", "-std=c11"]  # fast-math: vectorised expf in the fog pass


def cache_dir() -> Path:
    default = Path(tempfile.gettempdir()) / f"slimdrive-kernels-{os.getuid()}"
    return Path(os.environ.get("SLIMDRIVE_KERNEL_DIR", default))


def _build(target: Path) -> None:
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        raise RuntimeError(f"the embedded simulator's renderer builds {SOURCE} with a C compiler, and {compiler!r} "
                           "is not on PATH: install one (e.g. `apt-get install gcc`) or set CC")
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f"{target.stem}.{os.getpid()}.tmp.so")
    done = subprocess.run([compiler, *CFLAGS, str(SOURCE), "-o", str(scratch), "-lm"], capture_output=True, text=True)
    if done.returncode != 0:
        scratch.unlink(missing_ok=True)
        raise RuntimeError(f"building {SOURCE} failed ({compiler} exited {done.returncode}):\n{done.stderr[-4000:]}")
    os.replace(scratch, target)


@lru_cache(maxsize=1)
def library() -> ctypes.CDLL:
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(CFLAGS).encode()).hexdigest()[:12]
    target = cache_dir() / f"zbuffer-{digest}.so"
    if not target.exists():
        _build(target)
    lib = ctypes.CDLL(str(target))
    doubles = np.ctypeslib.ndpointer(np.float64, flags="C_CONTIGUOUS")
    lib.draw_boxes.restype = ctypes.c_int
    lib.draw_boxes.argtypes = [
        ctypes.c_int, doubles, doubles, doubles, doubles, doubles,  # n, center, rot, extent, cam_pos, cam_rot
        ctypes.c_int, ctypes.c_int, ctypes.c_double, ctypes.c_double, ctypes.c_double, ctypes.c_double,
        np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS"),  # ground depth
        np.ctypeslib.ndpointer(np.int32, flags="C_CONTIGUOUS,WRITEABLE"),  # ids
        np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS,WRITEABLE"),  # depth
    ]
    floats = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
    lib.shade.restype = None
    lib.shade.argtypes = [
        ctypes.c_int, ctypes.c_int, ctypes.c_double,  # width, height, focal
        np.ctypeslib.ndpointer(np.int32, flags="C_CONTIGUOUS"),  # ids
        floats, floats, np.ctypeslib.ndpointer(np.uint8, flags="C_CONTIGUOUS"),  # face light, colour, emissive
        np.ctypeslib.ndpointer(np.uint8, flags="C_CONTIGUOUS"),  # ground BGRA
        ctypes.c_void_p, ctypes.c_int, ctypes.c_int,  # ground tags (NULL when dry), road and road-line tag
        floats, floats, floats, floats, ctypes.c_double,  # up, ray norm, ground depth, depth, far
        doubles, doubles, ctypes.c_int, doubles,  # camera position, rotation, beam count, beams
        ctypes.c_float, ctypes.c_float, floats, ctypes.c_float, floats,  # headlight, range, tint, wet, reflect
        doubles, floats, floats, ctypes.c_float,  # sun in the camera frame, horizon, zenith, glow
        ctypes.c_float, ctypes.c_float, ctypes.c_float, floats,  # fog per metre, start, sky distance, colour
        np.ctypeslib.ndpointer(np.uint8, flags="C_CONTIGUOUS,WRITEABLE"),  # out BGRA
    ]
    return lib
