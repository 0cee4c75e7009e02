"""Evaluation: the suite runner (`slimdrive eval`), scenario previews, reports. It sits on top of the env,
the agents and the scenarios, beside `training/` and below the CLI (see docs/architecture.md)."""
