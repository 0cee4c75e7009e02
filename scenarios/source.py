"""Load a YAML file into plain data while remembering the line of every key and list item.

PyYAML's composer gives nodes with start marks; we build the data from those nodes ourselves so that each
value's path (e.g. `("actors", 2, "place", "s")`) maps to its 1-based line. Errors name the innermost path
that exists in the file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ScenarioError

Path_ = tuple[str | int, ...]

# Scenario and suite files are about 1 kB; the cap bounds what a file can make the loader read and build (PyYAML's
# pure-Python composer takes about a second for 256 kB).
MAX_FILE_BYTES = 256 * 1024


class _NoAliasLoader(yaml.SafeLoader):
    """A safe loader that refuses aliases (`*name`): each one repeats a whole subtree, so a few lines of nested
    aliases (a "billion laughs" file) expand to gigabytes of data."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _AliasFound(event.start_mark, event.anchor)
        return super().compose_node(parent, index)


class _AliasFound(Exception):
    def __init__(self, mark: yaml.Mark, anchor: str) -> None:
        self.mark, self.anchor = mark, anchor


@dataclass
class Source:
    """A parsed file: its data and the line of every path in it."""

    file: Path
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)

    def line(self, path: Path_) -> int | None:
        """The line of `path`, or of its longest prefix present in the file."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None

    def error(self, path: Path_, problem: str, fix: str) -> ScenarioError:
        return ScenarioError(self.file, self.line(path), dotted(path), problem, fix)


def dotted(path: Path_) -> str:
    """`("actors", 2, "place", "s")` -> `actors[2].place.s`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _build(node: yaml.Node, path: Path_, lines: dict[Path_, int], file: Path,
           constructor: yaml.constructor.SafeConstructor) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node, constructor)
            if not isinstance(key, str):
                raise ScenarioError(file, key_node.start_mark.line + 1, dotted(path), f"key {key!r} is not a name",
                                    "write keys as plain words")
            if key in out:
                raise ScenarioError(file, key_node.start_mark.line + 1, dotted(path + (key,)),
                                    f"key '{key}' is given twice", "keep one of the two entries")
            out[key] = _build(value_node, path + (key,), lines, file, constructor)
            lines[path + (key,)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, path + (i,), lines, file, constructor) for i, item in enumerate(node.value)]
    return _scalar(node, constructor)


def _scalar(node: yaml.Node, constructor: yaml.constructor.SafeConstructor) -> Any:
    """Let PyYAML's safe constructor type a node (int, float, bool, null, str) by the tag the composer resolved."""
    return constructor.construct_object(node, deep=True)


def load_source(file: str | Path) -> Source:
    """Parse a YAML file; a syntax error becomes a ScenarioError at its line."""
    file = Path(file)
    try:
        with file.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)  # never more than the cap, whatever the file's size
    except OSError as exc:
        raise ScenarioError(file, None, "", f"cannot read the file ({exc.strerror})", "check the path") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise ScenarioError(file, None, "", f"the file is larger than {MAX_FILE_BYTES} bytes",
                            "a scenario or suite is a short YAML file; split it or remove what it repeats")
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise ScenarioError(file, None, "", f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})",
                            "save it as UTF-8") from exc
    lines: dict[Path_, int] = {}
    try:
        root = yaml.compose(text, Loader=_NoAliasLoader)
        if root is None:
            raise ScenarioError(file, 1, "", "the file is empty", "write a scenario (see scenarios/library/)")
        data = _build(root, (), lines, file, yaml.constructor.SafeConstructor())  # one per file: it caches nodes
    except _AliasFound as exc:
        raise ScenarioError(file, exc.mark.line + 1, "", f"YAML alias '*{exc.anchor}' (aliases are not allowed)",
                            "write the value out instead of referring to an anchor") from None
    except RecursionError:
        raise ScenarioError(file, None, "", "the YAML is nested too deeply",
                            "a scenario nests a few levels: flatten the file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScenarioError(file, mark.line + 1 if mark else None, "", f"YAML syntax error: {problem}",
                            "fix the indentation or quoting on that line (a key needs `key: value`)") from exc
    return Source(file, data, lines)
