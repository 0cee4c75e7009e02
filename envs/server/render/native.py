"""The compiled part of the renderer: `zbuffer.c` (the box rasterizer and the colour pass), built with the
system C compiler on first use and loaded with ctypes, which releases the GIL while it runs, so cameras render
on several threads.

The shared library is cached by the source's digest in `native.cache_dir()` (``$SLIMDRIVE_KERNEL_DIR``, default
``<tmp>/slimdrive-kernels-<uid>``, where the policy's kernel is cached too); building takes about a second.
Threads wait for one build; processes that start at once each build under a private name and rename it in.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

from native import cache_dir  # the one private cache for all compiled code (the policy's kernel too)

SOURCE = Path(__file__).with_name("zbuffer.c")
# -ffast-math vectorises the fog pass's expf. It is given when compiling only: linking a shared library with it
# would add crtfastmath.o, which flushes denormals to zero in the whole process that loads the library.
CFLAGS = ["-O3", "-ffast-math", "-fPIC", "-std=c11"]
_LOCK = threading.Lock()
_LIBRARY: ctypes.CDLL | None = None


def _build(target: Path) -> None:
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        raise RuntimeError(f"the embedded simulator's renderer builds {SOURCE} with a C compiler, and {compiler!r} "
                           "is not on PATH: install one (e.g. `apt-get install gcc`) or set CC")
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        obj, lib = Path(scratch) / "zbuffer.o", Path(scratch) / "zbuffer.so"
        for command in ([compiler, *CFLAGS, "-c", str(SOURCE), "-o", str(obj)],
                        [compiler, "-shared", str(obj), "-o", str(lib), "-lm"]):
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"building {SOURCE} failed ({' '.join(command)} exited {done.returncode}):\n"
                                   f"{done.stderr[-4000:]}")
        os.replace(lib, target)


class _OptionalArray:
    """A ctypes argument type: a C-contiguous array of `dtype`, checked like `np.ctypeslib.ndpointer`, or None
    (NULL)."""

    def __init__(self, dtype) -> None:
        self.array = np.ctypeslib.ndpointer(dtype, flags="C_CONTIGUOUS")

    def from_param(self, value):
        return None if value is None else self.array.from_param(value)


def library() -> ctypes.CDLL:
    """The compiled renderer (built on first use; safe to call from several threads at once)."""
    global _LIBRARY
    with _LOCK:
        if _LIBRARY is None:
            _LIBRARY = _load()
        return _LIBRARY


def _load() -> ctypes.CDLL:
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
        _OptionalArray(np.uint8), ctypes.c_int, ctypes.c_int,  # ground tags (None when dry), road, road-line tag
        floats, floats, floats, floats, ctypes.c_double,  # up, ray norm, ground depth, depth, far
        doubles, doubles, ctypes.c_int, doubles,  # camera position, rotation, beam count, beams
        ctypes.c_float, ctypes.c_float, floats, ctypes.c_float, floats,  # headlight, range, tint, wet, reflect
        doubles, floats, floats, ctypes.c_float,  # sun in the camera frame, horizon, zenith, glow
        ctypes.c_float, ctypes.c_float, ctypes.c_float, floats,  # fog per metre, start, sky distance, colour
        np.ctypeslib.ndpointer(np.uint8, flags="C_CONTIGUOUS,WRITEABLE"),  # out BGRA
    ]
    return lib
