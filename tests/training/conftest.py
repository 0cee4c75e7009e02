"""A small real dataset for the training tests: the expert drives four short episodes (`scenarios/short.yaml`,
180 steps each) on the embedded simulator with eight 64x32 cameras, recorded by `slimdrive collect`."""
from __future__ import annotations

from pathlib import Path

import pytest

import slimdrive

SHORT_SUITE = Path(__file__).resolve().parent / "scenarios" / "short.yaml"
SMALL_RIG = ["env.image_size_x=64", "env.image_size_y=32"]  # the network's own resolution: no resize


@pytest.fixture(scope="session")
def short_suite() -> Path:
    return SHORT_SUITE


@pytest.fixture(scope="session")
def small_rig() -> list[str]:
    return list(SMALL_RIG)


@pytest.fixture(scope="session")
def short_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("short") / "data"
    assert slimdrive.main(["collect", f"suite={SHORT_SUITE}", f"out={out}", *SMALL_RIG]) == 0
    return out
