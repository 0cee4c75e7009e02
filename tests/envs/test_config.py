"""The one config loader: conf files with merged overrides, typed configs that refuse unknown keys."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
from omegaconf import OmegaConf

from envs.budget import BudgetConfig, DeviceProfile
from envs.config import CONF_DIR, load_conf, typed_config


@dataclass(frozen=True)
class Sample:
    rate: float
    name: str = "x"
    span: tuple[float, float] = (0.0, 1.0)


def test_typed_config_refuses_unknown_keys_names_missing_ones_and_makes_tuples():
    assert typed_config(Sample, {"rate": 2.0, "span": [1, 3]}, "sample") == Sample(2.0, "x", (1, 3))
    assert typed_config(Sample, OmegaConf.create({"rate": 1.5, "name": "${rate}"}), "sample").name == 1.5
    with pytest.raises(ValueError, match=r"sample: unknown keys \['rat'\]; known keys are \['name', 'rate', 'span'\]"):
        typed_config(Sample, {"rat": 2.0}, "sample")
    with pytest.raises(ValueError, match=r"sample: missing keys \['rate'\]"):
        typed_config(Sample, {}, "sample")


def test_load_conf_merges_a_config_then_dotted_overrides():
    cfg = load_conf("env/default.yaml", {"map": "junction"}, **{"server.port": 2001, "rig": None})
    assert cfg.map == "junction" and cfg.server.port == 2001 and cfg.rig is None
    assert load_conf(CONF_DIR / "env" / "default.yaml") == OmegaConf.load(CONF_DIR / "env" / "default.yaml")


def test_budget_files_load_through_the_typed_config():
    orin = DeviceProfile.load("jetson_agx_orin")
    assert BudgetConfig.from_cfg(load_conf("budget/default.yaml")) == BudgetConfig(device=orin)
    profile = BudgetConfig.from_cfg(load_conf("budget/orin_int8.yaml"))
    assert profile.latency == "profile" and profile.device == orin and profile.device.int8_ops_per_s == 85.0e12
    assert BudgetConfig.load("orin_1ms_per_frame").deadline(cameras=8) == 8.0
    with pytest.raises(ValueError, match="budget: unknown keys"):
        BudgetConfig.from_cfg({"deadline_ms": 50.0, "deadlin_ms": 40.0})
    with pytest.raises(ValueError, match="budget.fallback must be"):
        BudgetConfig(fallback="coast")
