"""Camera frames of a log: decoding a step's JPEG mosaic, and the decoded-frame cache.

Training draws steps at random, so without a cache every sample reads a 16-step row group and decodes a JPEG
mosaic: on a 2-core machine the DataLoader workers then take the cores the network trains on. The cache decodes
each episode once, at the model's resolution, into a memory-mapped array, so a sample is a copy of
8 x h x w x 3 bytes (49 KB at 32x64, three times the JPEG log; 9 GB for a 2.6-hour train suite, which the page
cache keeps in memory on a 24 GB machine).

A cache file is named by its episode's file, sha256 and size (`<stem>.<sha16>.<h>x<w>.npy` under
`<root>/.frames/`), so a re-collected episode never reads a stale cache; it is written under a temporary name
and renamed when complete, so a killed build leaves no half file behind. Its pixels are exactly those of
`decode_cameras` at the same size.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from training.logs.schema import LogFormatError, read_file_metadata

CACHE_DIR = ".frames"


def decode_cameras(jpeg, layout: dict, size: tuple[int, int] | None = None) -> np.ndarray:
    """(N, h, w, 3) uint8 RGB from one step's JPEG mosaic, resized (cv2.INTER_AREA) to size=(h, w) unless equal."""
    n, H, W = layout["cameras"], layout["height"], layout["width"]
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise LogFormatError("a camera JPEG does not decode")
    h, w = size if size is not None else (H, W)
    if (h, w) != (H, W):
        if H % h == 0 and W % w == 0:  # integer factor: INTER_AREA of the mosaic = per camera, one call
            img = cv2.resize(img, (w, n * h), interpolation=cv2.INTER_AREA)
        else:
            img = np.concatenate([cv2.resize(c, (w, h), interpolation=cv2.INTER_AREA)
                                  for c in img.reshape(n, H, W, 3)])
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img.reshape(n, h, w, 3)


def cache_path(root: Path, entry: dict, size: tuple[int, int]) -> Path:
    return root / CACHE_DIR / f"{Path(entry['file']).stem}.{entry['sha256'][:16]}.{size[0]}x{size[1]}.npy"


def _build(root: Path, entry: dict, size: tuple[int, int]) -> int:
    """Decode one (already verified) episode into its cache file, in a worker process; returns its steps."""
    cv2.setNumThreads(1)
    source = root / entry["file"]
    file = pq.ParquetFile(source, memory_map=True)
    _, layout = read_file_metadata(file.schema_arrow.metadata, str(source))
    jpegs = file.read(columns=["cameras"]).column(0).combine_chunks()
    path = cache_path(root, entry, size)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    frames = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(jpegs), layout["cameras"], *size, 3))
    for row in range(len(jpegs)):
        frames[row] = decode_cameras(jpegs[row].as_buffer(), layout, size)
    frames.flush()
    del frames
    os.replace(tmp, path)
    for stale in path.parent.glob(f"{Path(entry['file']).stem}.*.{size[0]}x{size[1]}.npy"):
        if stale != path:  # an earlier recording under the same episode key
            stale.unlink(missing_ok=True)
    return len(jpegs)


def ensure_cached(root: Path, entries: list[dict], size: tuple[int, int], workers: int = 2) -> list[Path]:
    """The cache file of each entry, decoding those not cached yet in `workers` spawned processes (0: here)."""
    paths = [cache_path(root, e, size) for e in entries]
    todo = [e for e, p in zip(entries, paths) if not p.exists()]
    if not todo:
        return paths
    folder = paths[0].parent
    folder.mkdir(exist_ok=True)
    for tmp in folder.glob("*.tmp*"):  # left by a killed build; another live run's build keeps its file
        if not _alive(int(tmp.name.rsplit(".tmp", 1)[1] or 0)):
            tmp.unlink(missing_ok=True)
    bar = tqdm(total=sum(e["steps"] for e in todo), desc=f"decoding frames {size[0]}x{size[1]} into {folder}",
               unit="step")
    if workers > 0:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for steps in pool.map(_build, [root] * len(todo), todo, [size] * len(todo)):
                bar.update(steps)
    else:
        for entry in todo:
            bar.update(_build(root, entry, size))
    bar.close()
    return paths


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


def open_frames(path: Path, steps: int) -> np.ndarray:
    """The memory-mapped (steps, cameras, h, w, 3) array of one cache file; refuses one of another length."""
    frames = np.load(path, mmap_mode="r")
    if frames.ndim != 5 or frames.shape[0] != steps:
        raise LogFormatError(f"{path}: cached frames of shape {frames.shape}, the episode has {steps} steps; delete "
                             "the file and the next run rebuilds it")
    return frames
