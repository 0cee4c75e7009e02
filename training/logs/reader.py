"""Read recorded episodes: checks (`verify_file`, `verify_dir`), an episode reader and `DrivingLogDataset`.

The dataset's index comes from the manifest (keys sorted), never from file positions, so a missing episode
never misaligns the others. Labels of every step (small columns) load once at construction; camera JPEGs are
read per sample from the episode's row group (16 steps by default) through a per-worker cache of open files
and recently read row groups, then decoded (one JPEG per step) and resized with cv2.INTER_AREA, or, with
`frame_cache=True`, copied from the decoded-frame cache (`training.logs.frames`).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from envs.provenance import sha256_file
from training.logs.frames import decode_cameras, ensure_cached, open_frames
from training.logs.schema import LABEL_COLUMNS, LogFormatError, arrow_schema, read_file_metadata
from training.logs.writer import MANIFEST, read_manifest

_HASHED: dict[tuple, str] = {}  # (path, size, mtime_ns) -> sha256, once per file per process


class EpisodeRefused(LogFormatError):
    """An episode file that does not match its manifest line or the schema."""


def _fix(root: Path, key: str) -> str:
    return (f"run `slimdrive dataset verify data={root}`, then re-collect the episode: delete its line "
            f"(key {key!r}) from {root / MANIFEST} and its file, and rerun collect")


def check_file(root: str | Path, entry: dict, checksum: bool = True) -> tuple[pq.ParquetFile, dict, dict]:
    """Open one committed episode, refusing it (EpisodeRefused naming the file and the fix) when its size,
    Parquet footer, schema or step count does not match, or (checksum=True) its sha256, hashed once per
    process unless the file changes."""
    root = Path(root)
    path = root / entry["file"]
    fix = _fix(root, entry["key"])
    try:
        st = path.stat()
    except FileNotFoundError:
        raise EpisodeRefused(f"{path}: missing (committed in the manifest); {fix}") from None
    if st.st_size != entry["bytes"]:
        raise EpisodeRefused(f"{path}: {st.st_size} bytes, the manifest committed {entry['bytes']} "
                             f"(truncated or rewritten); {fix}")
    if checksum:
        stamp = (str(path), st.st_size, st.st_mtime_ns)
        if stamp not in _HASHED:
            _HASHED[stamp] = sha256_file(path)
        if _HASHED[stamp] != entry["sha256"]:
            raise EpisodeRefused(f"{path}: sha256 {_HASHED[stamp][:16]}... does not match the manifest's "
                                 f"{entry['sha256'][:16]}... (corrupted); {fix}")
    try:
        pf = pq.ParquetFile(path, memory_map=True)
    except (pa.ArrowException, OSError) as exc:
        raise EpisodeRefused(f"{path}: not a readable Parquet file ({exc}); {fix}") from None
    metadata, layout = read_file_metadata(pf.schema_arrow.metadata, str(path))
    version = metadata["schema_version"]
    if not pf.schema_arrow.remove_metadata().equals(arrow_schema(layout["waypoints_k"], version)):
        raise EpisodeRefused(f"{path}: columns differ from schema version {version} ({pf.schema_arrow.names}); {fix}")
    if pf.metadata.num_rows != entry["steps"]:
        raise EpisodeRefused(f"{path}: {pf.metadata.num_rows} steps, the manifest committed {entry['steps']}; {fix}")
    return pf, metadata, layout


@dataclass
class VerifyReport:
    ok: list[str]
    failures: list[str]
    warnings: list[str]


def verify_dir(root: str | Path) -> VerifyReport:
    """Checksum and schema of every committed file (each decoded fully), torn manifest lines and leftovers."""
    root = Path(root)
    manifest = read_manifest(root)
    report = VerifyReport([], [], list(manifest.problems))
    if not (root / MANIFEST).exists():
        report.failures.append(f"{root / MANIFEST}: no manifest (not a slimdrive log folder?)")
        return report
    for key in sorted(manifest.entries):
        entry = manifest.entries[key]
        path = root / entry["file"]
        try:
            _HASHED.pop(next((s for s in _HASHED if s[0] == str(path)), None), None)  # hash afresh
            pf, _, layout = check_file(root, entry, checksum=True)
            table = pf.read()  # every page decodes
            first = table.column("cameras")[0].as_py()
            img = cv2.imdecode(np.frombuffer(first, np.uint8), cv2.IMREAD_COLOR)
            if img is None or img.shape[:2] != (layout["cameras"] * layout["height"], layout["width"]):
                raise EpisodeRefused(f"{path}: step 0's camera JPEG does not decode to the layout's size; "
                                     f"{_fix(root, key)}")
            report.ok.append(str(path))
        except (LogFormatError, pa.ArrowException, OSError) as exc:
            report.failures.append(str(exc))
    committed = {e["file"] for e in manifest.entries.values()}
    for p in sorted(root.glob("*.parquet*")):
        if p.name not in committed:
            report.warnings.append(f"{p}: leftover (in no manifest line); cleanup_leftovers or the next collect "
                                   "removes it")
    return report


class EpisodeReader:
    """One episode file: metadata, layout, label columns, and camera images by row."""

    def __init__(self, root: str | Path, entry: dict, checksum: bool = True):
        self.root, self.entry = Path(root), entry
        self.file, self.metadata, self.layout = check_file(root, entry, checksum)
        self.row_group_size = self.file.metadata.row_group(0).num_rows
        self._group: tuple[int, pa.Array] | None = None

    def __len__(self) -> int:
        return self.entry["steps"]

    def labels(self, columns=LABEL_COLUMNS) -> dict[str, np.ndarray]:
        table = self.file.read(columns=list(columns))
        out = {}
        for name in columns:
            col = table.column(name).combine_chunks()
            if pa.types.is_fixed_size_list(col.type):
                out[name] = col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)
            else:
                out[name] = col.to_numpy(zero_copy_only=False)
        return out

    def read(self, columns=None) -> pa.Table:
        return self.file.read(columns=columns)

    def jpeg(self, row: int) -> bytes:
        group, offset = divmod(row, self.row_group_size)
        if self._group is None or self._group[0] != group:
            col = self.file.read_row_group(group, columns=["cameras"]).column(0).combine_chunks()
            self._group = (group, col)
        return self._group[1][offset].as_buffer()

    def cameras(self, row: int, size: tuple[int, int] | None = None) -> np.ndarray:
        """(N, h, w, 3) uint8 RGB of step `row`, resized (cv2.INTER_AREA) to size=(h, w) unless equal."""
        return decode_cameras(self.jpeg(row), self.layout, size)


def split_of(key: str, val_fraction: float, seed: int = 0) -> str:
    """'val' or 'train' for an episode, from a hash of its key: stable whatever else is in the folder."""
    u = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2 ** 64
    return "val" if u < val_fraction else "train"


class DrivingLogDataset(Dataset):
    """Steps of the committed episodes of `root` as tensors, random access by index.

    split: "train", "val" or "all"; episodes are split by a hash of their key (`val_fraction`, `split_seed`).
    image_size: (h, w) per camera at the model's resolution (None: as stored). context_frames: N previous
    frames' cameras (every `context_stride` steps, repeating the first frame at the episode start) under key
    "context" (N, 8, h, w, 3), oldest first. checksum: verify each file's sha256 once per process (a size,
    footer, schema and step-count check is always made). frame_cache: decode every episode's cameras once at
    `image_size` into memory-mapped files under `<root>/.frames/` (`training.logs.frames`, built with
    `cache_workers` processes on first use) and read samples from them; the items are identical either way.
    Items are a pure function of the index.
    """

    def __init__(self, root: str | Path, split: str = "train", *, image_size: tuple[int, int] | None = (32, 64),
                 context_frames: int = 0, context_stride: int = 1, val_fraction: float = 0.1, split_seed: int = 0,
                 scenarios: list[str] | None = None, checksum: bool = True, cache_files: int = 64,
                 frame_cache: bool = False, cache_workers: int = 2):
        if split not in ("train", "val", "all"):
            raise ValueError(f"split {split!r}: use train, val or all")
        if frame_cache and image_size is None:
            raise ValueError("frame_cache needs image_size (the resolution the frames are decoded to)")
        self.root = Path(root)
        manifest = read_manifest(self.root)
        if not (self.root / MANIFEST).exists():
            raise FileNotFoundError(f"{self.root / MANIFEST}: no manifest; is {self.root} a slimdrive log folder?")
        self.manifest_problems = manifest.problems
        self.image_size = tuple(image_size) if image_size is not None else None
        self.context_frames, self.context_stride = int(context_frames), int(context_stride)
        self.checksum, self.cache_files = checksum, cache_files
        self.entries: list[dict] = []
        self.layouts: list[dict] = []
        self.episode_metadata: list[dict] = []
        labels: list[dict] = []
        k = None
        for key in sorted(manifest.entries):
            entry = manifest.entries[key]
            if split != "all" and split_of(key, val_fraction, split_seed) != split:
                continue
            if scenarios is not None and entry.get("scenario") not in scenarios:
                continue
            reader = EpisodeReader(self.root, entry, checksum)
            if k is not None and reader.layout["waypoints_k"] != k:
                raise EpisodeRefused(f"{reader.entry['file']}: {reader.layout['waypoints_k']} waypoints, earlier "
                                     f"episodes have {k}; read them as separate datasets")
            k = reader.layout["waypoints_k"]
            self.entries.append(entry)
            self.layouts.append(reader.layout)
            self.episode_metadata.append(reader.metadata)
            labels.append(reader.labels())
        n = [len(lab["frame"]) for lab in labels]
        self.episode_of = np.repeat(np.arange(len(n)), n).astype(np.int64)
        self.row_of = np.concatenate([np.arange(m) for m in n]).astype(np.int64) if n else np.zeros(0, np.int64)
        self.labels = {c: np.concatenate([lab[c] for lab in labels]) for c in LABEL_COLUMNS} if labels else {}
        self.waypoints_k = k or 0
        self._readers: OrderedDict[int, EpisodeReader] = OrderedDict()
        self._pid = os.getpid()
        self.frame_paths = (ensure_cached(self.root, self.entries, self.image_size, cache_workers)
                            if frame_cache else None)
        self._frames: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.episode_of)

    def __getstate__(self):  # to DataLoader workers: no open files
        state = dict(self.__dict__)
        state["_readers"], state["_frames"] = OrderedDict(), {}
        state["_hashed"] = {s: h for s, h in _HASHED.items() if s[0].startswith(str(self.root))}
        return state

    def __setstate__(self, state):  # a spawned worker: files hashed by the parent are not hashed again
        _HASHED.update(state.pop("_hashed", {}))
        self.__dict__.update(state)

    def _reader(self, episode: int) -> EpisodeReader:
        if self._pid != os.getpid():  # a forked worker: its own file handles, cv2 on one thread
            self._readers, self._pid = OrderedDict(), os.getpid()
            cv2.setNumThreads(1)
        reader = self._readers.get(episode)
        if reader is None:
            # the checksum was verified at construction in this or the parent process; a worker checks the
            # size, footer and schema again (cheap) and hashes only if the file changed since
            reader = EpisodeReader(self.root, self.entries[episode], self.checksum)
            self._readers[episode] = reader
            if len(self._readers) > self.cache_files:
                self._readers.popitem(last=False)
        else:
            self._readers.move_to_end(episode)
        return reader

    def _cameras(self, episode: int, row: int) -> np.ndarray:
        if self.frame_paths is None:
            return self._reader(episode).cameras(row, self.image_size)
        frames = self._frames.get(episode)
        if frames is None:  # memory maps are shared through the page cache, so every one stays open
            frames = self._frames[episode] = open_frames(self.frame_paths[episode], self.entries[episode]["steps"])
        return np.array(frames[row])

    def scenario_of(self) -> np.ndarray:
        names = [e.get("scenario") or "" for e in self.entries]
        return np.asarray(names, dtype=object)[self.episode_of]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} steps")
        episode, row = int(self.episode_of[index]), int(self.row_of[index])
        lab = self.labels
        item = {
            "cameras": torch.from_numpy(self._cameras(episode, row)),
            "speed": torch.tensor([lab["speed"][index]], dtype=torch.float32),
            "target_point": torch.from_numpy(lab["target_point"][index].astype(np.float32)),
            "command": torch.tensor(int(lab["command"][index]), dtype=torch.int64),
            "waypoints": torch.from_numpy(lab["waypoints"][index].astype(np.float32).reshape(-1, 2)),
            "target_speed": torch.tensor(float(lab["target_speed"][index]), dtype=torch.float32),
            "brake": torch.tensor(bool(lab["brake"][index])),
            "expert": torch.from_numpy(lab["expert"][index].astype(np.float32)),
            "perturbed": torch.tensor(bool(lab["perturbed"][index])),
            "episode": torch.tensor(episode, dtype=torch.int64),
            "frame": torch.tensor(int(lab["frame"][index]), dtype=torch.int64),
        }
        if self.context_frames:
            rows = [max(0, row - self.context_stride * j) for j in range(self.context_frames, 0, -1)]
            item["context"] = torch.from_numpy(np.stack([self._cameras(episode, r) for r in rows]))
        return item


def balanced_weights(dataset: DrivingLogDataset, by: tuple[str, ...] = ("command", "scenario", "brake")) -> np.ndarray:
    """Per-step drawing weights, summing to 1: the product of inverse frequencies of each factor in `by`
    (command, scenario, brake, perturbed), so rare commands, scenarios and braking steps are drawn as often as
    common ones per factor."""
    factors = {"command": dataset.labels["command"], "brake": dataset.labels["brake"],
               "scenario": dataset.scenario_of(), "perturbed": dataset.labels["perturbed"]}
    weights = np.ones(len(dataset))
    for name in by:
        _, inverse, counts = np.unique(factors[name], return_inverse=True, return_counts=True)
        weights /= counts[inverse] / len(dataset) * len(counts)
    return weights / weights.sum()


def balanced_sampler(dataset: DrivingLogDataset, seed: int = 0, num_samples: int | None = None,
                     by: tuple[str, ...] = ("command", "scenario", "brake")) -> WeightedRandomSampler:
    """A seeded WeightedRandomSampler over `balanced_weights`."""
    generator = torch.Generator().manual_seed(int(seed))
    return WeightedRandomSampler(torch.as_tensor(balanced_weights(dataset, by), dtype=torch.double),
                                 num_samples or len(dataset), replacement=True, generator=generator)


def make_loader(dataset: Dataset, batch_size: int, *, sampler=None, workers: int = 0,
                drop_last: bool = False) -> DataLoader:
    """The one way to batch logs: worker processes are spawned, not forked, because a fork of a process whose
    torch, OpenCV or Arrow thread pools are running can deadlock in the child."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=drop_last,
                      multiprocessing_context="spawn" if workers else None, persistent_workers=False)


def episode_summary(root: str | Path) -> list[dict]:
    """Per committed episode: its manifest entry, metadata and labels (for `dataset info`)."""
    root = Path(root)
    out = []
    for _, entry in sorted(read_manifest(root).entries.items()):
        reader = EpisodeReader(root, entry, checksum=False)
        out.append({"entry": entry, "metadata": reader.metadata, "layout": reader.layout, "labels": reader.labels()})
    return out


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=float)
