"""The `slimdrive` command: one subcommand per job, each configured by a Hydra config under `conf/`.

    slimdrive server port=2000 map=town
    slimdrive bench server vehicles=50 walkers=50
    slimdrive bench policy out=bench.json

Every argument after the subcommand is a Hydra override (`key=value`, `+key=value`, `group=option`), except
bare paths, which fill the command's `paths` (or single `path`) field: `slimdrive scenario validate a.yaml dir/`.
Commands that write files print where they wrote them.
"""
from __future__ import annotations

import importlib
import sys

# subcommand words -> (config name under conf/, "module:function" taking the composed DictConfig)
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("server",): ("server", "envs.server.__main__:run"),
    ("bench", "server"): ("bench/server", "bench.server:run"),
    ("bench", "policy"): ("bench/policy", "bench.policy:run"),
    ("bench", "train"): ("bench/train", "bench.train:run"),
    ("scenario", "validate"): ("scenario/validate", "scenarios.cli:validate"),
    ("scenario", "preview"): ("scenario/preview", "evaluation.preview:run"),
    ("scenario", "search"): ("scenario/search", "evaluation.search:run"),
    ("scenario", "generate"): ("scenario/generate", "scenarios.generate:run"),
    ("eval",): ("eval", "evaluation.evaluate:run"),
    ("report",): ("report", "evaluation.report:run"),
    ("report", "compare"): ("report/compare", "evaluation.report:run_compare"),
    ("collect",): ("collect", "training.collect:run"),
    ("train",): ("train", "training.train:run"),
    ("dagger",): ("dagger", "training.dagger:run"),
    ("render",): ("render", "envs.render_cli:run"),
    ("dataset", "info"): ("dataset/info", "training.dataset_cli:info"),
    ("dataset", "verify"): ("dataset/verify", "training.dataset_cli:verify"),
    ("dataset", "view"): ("dataset/view", "training.dataset_cli:view"),
    ("dataset", "rerender"): ("dataset/rerender", "training.rerender:run"),
    ("bench", "data"): ("bench/data", "bench.data:run"),
    ("bench", "sim"): ("bench/sim", "bench.sim:run"),
    ("bench", "env"): ("bench/env", "bench.env:run"),
    ("bench", "sensors"): ("bench/sensors", "bench.sensors:run"),
    ("table",): ("table", "bench.table:run"),
}


def load_config(config_name: str, overrides: list[str]):
    """Compose `conf/<config_name>.yaml` with Hydra overrides (`envs.config.compose`, the one composer)."""
    from envs.config import compose

    return compose(config_name, overrides)


def _is_override(argument: str) -> bool:
    return "=" in argument or argument.startswith("~")  # `~key` is Hydra's deletion of a key


def _positional_paths(config_name: str, arguments: list[str]) -> list[str]:
    """Turn bare arguments into the `paths=[...]` (or `path=...`) override of commands that take files."""
    from hydra.errors import HydraException

    bare = [a for a in arguments if not _is_override(a)]
    if not bare:
        return arguments
    keys = load_config(config_name, [])
    rest = [a for a in arguments if _is_override(a)]
    if "paths" in keys:
        return rest + [f"paths=[{','.join(bare)}]"]
    if "path" in keys and len(bare) == 1:
        return rest + [f"path={bare[0]}"]
    raise HydraException(f"unexpected argument(s) {' '.join(bare)}: use key=value")


def _usage() -> str:
    names = "\n".join("  slimdrive " + " ".join(words) + " [key=value ...]" for words in COMMANDS)
    return f"usage:\n{names}\n\nArguments after the command are Hydra overrides of conf/<command>.yaml."


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for n_words in (2, 1):
        key = tuple(argv[:n_words])
        if key in COMMANDS:
            config_name, target = COMMANDS[key]
            overrides = argv[n_words:]
            break
    else:
        print(_usage(), file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    from hydra.errors import HydraException

    try:
        overrides = _positional_paths(config_name, overrides)
        cfg = load_config(config_name, overrides)
    except HydraException as exc:
        print(f"slimdrive {' '.join(key)}: bad override: {exc}\n(see conf/{config_name}.yaml)", file=sys.stderr)
        return 2
    module_name, func_name = target.split(":")
    result = getattr(importlib.import_module(module_name), func_name)(cfg)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
