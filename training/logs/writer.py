"""Write one episode's steps to one Parquet file and commit it to the folder's manifest (docs/data.md).

    writer = EpisodeWriter(root, key, metadata)
    for step in steps: writer.add(step)          # validated, images JPEG-encoded as they come
    writer.commit()                              # tmp file -> fsync -> rename -> manifest line (fsync)

Commit protocol: the file is written to `<key>.parquet.tmp` in the same folder, flushed and fsynced, renamed
to `<key>.parquet` (the folder fsynced), then committed by one JSON line appended to `manifest.jsonl` (under
an flock, fsynced) with its file name, sha256, step count, scenario, seed, key and bytes. A file that no
manifest line names is a leftover of a killed writer: `cleanup_leftovers(root)` removes them. A torn last
manifest line (a kill mid-append) is ignored and reported by `read_manifest`; the next commit starts a new line.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from envs.provenance import sha256_file
from training.logs.schema import (
    FILE_SUFFIX,
    META_EPISODE,
    META_LAYOUT,
    META_VERSION,
    SCHEMA_VERSION,
    LogFormatError,
    arrow_schema,
    check_metadata,
    check_step,
    layout_of,
)

MANIFEST = "manifest.jsonl"
TMP_SUFFIX = ".tmp"
DEFAULT_JPEG_QUALITY = 90
DEFAULT_ROW_GROUP_SIZE = 16   # steps per row group: a random read decodes one group's camera column
KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]{0,200}$")


@dataclass
class Manifest:
    entries: dict[str, dict] = field(default_factory=dict)   # key -> its (last) manifest line
    problems: list[str] = field(default_factory=list)        # torn or unreadable lines, reported not fatal


def read_manifest(root: str | Path) -> Manifest:
    """The committed episodes of `root` by key; a torn or malformed line is skipped and reported."""
    path = Path(root) / MANIFEST
    out = Manifest()
    if not path.exists():
        return out
    data = path.read_bytes()
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        torn = number == len(lines)  # no newline after it: the append was cut
        try:
            entry = json.loads(raw)
            if not isinstance(entry, dict) or not {"key", "file", "sha256", "steps", "bytes"} <= set(entry):
                raise ValueError("missing key/file/sha256/steps/bytes")
        except ValueError as exc:
            kind = "torn last line (a writer was killed mid-commit)" if torn else f"malformed line ({exc})"
            out.problems.append(f"{path}:{number}: {kind}, ignored")
            continue
        out.entries[entry["key"]] = entry
    return out


def committed_keys(root: str | Path) -> set[str]:
    """Keys of the episodes committed in `root` (for resuming a collection)."""
    return set(read_manifest(root).entries)


def episode_path(root: str | Path, key: str) -> Path:
    return Path(root) / f"{key}{FILE_SUFFIX}"


def cleanup_leftovers(root: str | Path) -> list[Path]:
    """Remove episode and temporary files that no manifest line commits; returns what was removed.

    Run it when no writer is writing into `root` (a collector at its start): a live writer's temporary file
    is a leftover too.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    committed = {e["file"] for e in read_manifest(root).entries.values()}
    removed = []
    for p in sorted(root.iterdir()):
        if p.is_file() and (p.name.endswith(FILE_SUFFIX) or p.name.endswith(FILE_SUFFIX + TMP_SUFFIX)) \
                and p.name not in committed:
            p.unlink()
            removed.append(p)
    return removed


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_manifest(root: str | Path, entry: dict) -> None:
    """Append one JSON line to `root/manifest.jsonl` under an exclusive flock, and fsync it."""
    line = json.dumps(entry, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    fd = os.open(Path(root) / MANIFEST, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size:  # a torn last line has no newline: start ours on a fresh line
            with open(Path(root) / MANIFEST, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock


def encode_cameras(cameras: np.ndarray, quality: int) -> bytes:
    """(N, H, W, 3) uint8 RGB -> one JPEG of the cameras stacked vertically (N*H x W)."""
    n, h, w, _ = cameras.shape
    bgr = cv2.cvtColor(np.ascontiguousarray(cameras).reshape(n * h, w, 3), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise LogFormatError("cameras: JPEG encoding failed")
    return buf.tobytes()


class EpisodeWriter:
    """Collect one episode's steps and commit them as `<root>/<key>.parquet` plus a manifest line.

    `key` names the episode (e.g. "jaywalker_parked_van-s3"; letters, digits, `_.=+-`); it must not be
    committed already (delete its manifest line to re-collect it). `metadata` is the episode's JSON dict
    (docs/data.md). Use as a context manager to drop the temporary file when the episode fails.
    """

    def __init__(self, root: str | Path, key: str, metadata: dict, *, jpeg_quality: int = DEFAULT_JPEG_QUALITY,
                 row_group_size: int = DEFAULT_ROW_GROUP_SIZE):
        if not isinstance(key, str) or not KEY_PATTERN.match(key) or key.endswith(TMP_SUFFIX):
            raise ValueError(f"episode key {key!r}: use letters, digits and _.=+- (it names the file)")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.key = key
        if key in committed_keys(self.root):
            raise FileExistsError(f"episode {key!r} is already committed in {self.root / MANIFEST}; "
                                  "delete its manifest line (and file) to re-collect it")
        self.metadata = check_metadata(metadata)
        self.jpeg_quality = int(jpeg_quality)
        self.row_group_size = int(row_group_size)
        self.layout: dict | None = None
        self.rows: list[dict] = []
        self.path = episode_path(self.root, key)
        self.tmp_path = self.path.with_name(self.path.name + TMP_SUFFIX)
        self.committed = False

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, step: dict) -> None:
        """Validate one step (a NaN or wrong shape raises LogFormatError naming the field and step) and keep it."""
        if self.committed:
            raise RuntimeError(f"episode {self.key!r} is already committed")
        index = len(self.rows)
        row = check_step(step, index, self.layout)
        if self.layout is None:
            names = [c.get("name", f"camera{i}") for i, c in enumerate(self.metadata["rig"]["cameras"])]
            if len(names) != row["cameras"].shape[0]:
                raise LogFormatError(f"step 0, field 'cameras': {row['cameras'].shape[0]} cameras, the metadata's "
                                     f"rig lists {len(names)}")
            self.layout = layout_of(row, self.jpeg_quality, names)
        lights = len(self.metadata.get("traffic_lights", []))
        if len(row["light_states"]) != lights:
            raise LogFormatError(f"step {index}, field 'light_states': {len(row['light_states'])} states, the "
                                 f"metadata lists {lights} traffic lights")
        if self.rows and row["frame"] <= self.rows[-1]["frame"]:
            previous = self.rows[-1]["frame"]
            raise LogFormatError(f"step {index}, field 'frame': {row['frame']} does not follow {previous}")
        row["cameras"] = encode_cameras(row["cameras"], self.jpeg_quality)
        self.rows.append(row)

    def table(self) -> pa.Table:
        schema = arrow_schema(self.layout["waypoints_k"]).with_metadata({
            META_VERSION: str(SCHEMA_VERSION).encode(),
            META_EPISODE: json.dumps(self.metadata, sort_keys=True).encode(),
            META_LAYOUT: json.dumps(self.layout, sort_keys=True).encode(),
        })
        return pa.Table.from_pylist(self.rows, schema=schema)

    def commit(self) -> dict:
        """Write, fsync, rename and commit; returns the manifest entry."""
        if self.committed:
            raise RuntimeError(f"episode {self.key!r} is already committed")
        if not self.rows:
            raise LogFormatError(f"episode {self.key!r}: no steps to commit")
        table = self.table()
        try:
            with open(self.tmp_path, "wb") as f:
                # JPEG bytes do not compress: stored plain, so a read costs no inflate; the rest zstd
                compression = {name: ("NONE" if name == "cameras" else "ZSTD") for name in table.column_names}
                pq.write_table(table, f, row_group_size=self.row_group_size, compression=compression,
                               use_dictionary=["hazard_kind", "light_state", "events", "infractions"],
                               write_statistics=False)
                f.flush()
                os.fsync(f.fileno())
            sha = sha256_file(self.tmp_path)
            size = self.tmp_path.stat().st_size
            os.replace(self.tmp_path, self.path)
            _fsync_dir(self.root)
        except BaseException:
            self.tmp_path.unlink(missing_ok=True)
            raise
        meta = self.metadata
        entry = {"key": self.key, "file": self.path.name, "sha256": sha, "steps": len(self.rows), "bytes": size,
                 "scenario": meta.get("scenario"), "seed": meta.get("seed"),
                 "weather": (meta.get("weather") or {}).get("name") if isinstance(meta.get("weather"), dict)
                 else meta.get("weather"),
                 "schema_version": SCHEMA_VERSION, "committed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        append_manifest(self.root, entry)
        self.committed = True
        self.rows = []
        return entry

    def abort(self) -> None:
        self.tmp_path.unlink(missing_ok=True)
        self.rows = []

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and not self.committed:
            self.abort()


def write_episode(root: str | Path, key: str, metadata: dict, steps, **options) -> dict:
    """Write a whole episode (an iterable of step dicts) and commit it; returns the manifest entry."""
    with EpisodeWriter(root, key, metadata, **options) as writer:
        for step in steps:
            writer.add(step)
        return writer.commit()
