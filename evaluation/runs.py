"""An evaluation's run folder as `slimdrive eval` leaves it (`episodes.jsonl`, `results.json`, `traces/`,
`videos/`), read back by the eval's resume, the report and the comparison of runs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


class EvalLogError(ValueError):
    """episodes.jsonl holds a line that is not an episode record, other than a torn last one."""


def read_log(log: Path) -> list[dict]:
    """The records of `log` (episodes.jsonl). A run killed while appending leaves a last line without its
    newline, possibly cut short: a cut line is dropped (its episode runs again) and a whole one gets its
    newline, so that the next append starts a line of its own; either repair is printed, naming the file."""
    if not log.exists():
        return []
    data = log.read_bytes()
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with its newline, as every complete write leaves it
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise EvalLogError(f"{log}:{number}: not an episode record ({exc.msg}); delete that line (its "
                               "episode runs again) or the whole file, and rerun") from exc
    if torn.strip():
        try:
            records.append(json.loads(torn))
            with log.open("ab") as f:
                f.write(b"\n")
            print(f"repaired {log}: its last record had no newline (a run stopped while writing it); added one")
        except json.JSONDecodeError:
            with log.open("r+b") as f:
                f.truncate(len(data) - len(torn))
            print(f"repaired {log}: dropped its torn last line ({len(torn)} bytes of an episode record cut off "
                  "while being written); that episode runs again")
    return records


class RunError(ValueError):
    """A folder that is not a finished evaluation run."""


@dataclass
class Run:
    folder: Path
    results: dict  # results.json
    records: list[dict]  # the episode records results.json summarises, in suite order

    @property
    def name(self) -> str:
        return self.folder.name


def key(record: dict) -> str:
    return f"{record['scenario']}#{record['seed']}"


def load_run(folder: str | Path) -> Run:
    """The run in `folder`: its results.json and the records it summarises (its `episode_keys`, in order)."""
    folder = Path(folder)
    results_file = folder / "results.json"
    if not results_file.is_file():
        raise RunError(f"{folder}: no results.json; give a folder `slimdrive eval` wrote (its out=), or finish "
                       "the run by rerunning its eval")
    results = json.loads(results_file.read_text())
    by_key = {key(r): r for r in read_log(folder / "episodes.jsonl")}
    keys = results.get("episode_keys")
    if keys is None:
        raise RunError(f"{results_file}: no episode_keys (written by an older slimdrive eval); rerun the eval "
                       "on this folder to summarise it again (nothing is driven again)")
    missing = [k for k in keys if k not in by_key]
    if missing:
        raise RunError(f"{folder / 'episodes.jsonl'}: results.json summarises {missing[:3]}"
                       f"{' ...' if len(missing) > 3 else ''} but the log lacks them; rerun the eval on this folder")
    return Run(folder, results, [by_key[k] for k in keys])
