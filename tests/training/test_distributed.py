"""`slimdrive train` under `torchrun --nproc_per_node 2` (gloo, CPU): two processes, each training on its half
of every global batch, reach the weights of one process at the same global batch; only rank 0 writes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import slimdrive

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = shutil.which("torchrun", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
# The tolerance on every weight (float32). DDP averages the two half-batch gradients where one process takes the
# mean of the whole batch: the same sum in another order, so the weights differ by rounding only (measured
# 1.2e-7 for the full-precision tiny policy after 96 steps, 1.7e-7 for the ternary one after 16). A ternary run
# stays there only for a while: once a rounding-level difference moves a latent weight across a ternary
# threshold, the forward passes differ and the runs part (0.027 after 96 steps; docs/scale.md).
WEIGHT_ATOL = 1e-6


def tiny_run(data: Path, out: Path, *extra: str, samples_per_epoch: int = 512) -> list[str]:
    """test_train.py's tiny run (global batch 32, 16 batches an epoch) on the four short episodes."""
    return [f"data={data}", f"out={out}", "model=bitnet_tiny", f"samples_per_epoch={samples_per_epoch}",
            "batch_size=32",
            "workers=0", "threads=1", "val_fraction=0.34", "split_seed=2", "val_samples=200", "log_every=4",
            "checkpoint_every=7", "device=cpu", *extra]


# The 4-step run is the default-run check that torchrun trains the weights of one process (under a minute on the
# 2-core machine); the 96- and 16-step runs, about 2 minutes together, are slow (-m slow).
@pytest.mark.parametrize("recipe,samples_per_epoch", [
    pytest.param(("model.net.quant=none", "epochs=1"), 128, id="full-precision-4-steps"),
    pytest.param(("model.net.quant=none", "epochs=6"), 512, id="full-precision-96-steps", marks=pytest.mark.slow),
    pytest.param(("model.net.quant=ternary", "epochs=1"), 512, id="ternary-16-steps", marks=pytest.mark.slow),
])
def test_torchrun_two_processes_train_the_weights_of_one(short_dataset, tmp_path, recipe, samples_per_epoch):
    one, two = tmp_path / "one", tmp_path / "two"
    assert slimdrive.main(["train", *tiny_run(short_dataset, one, *recipe, samples_per_epoch=samples_per_epoch)]) == 0
    assert TORCHRUN, "torchrun (installed with torch) is not on PATH"
    result = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "slimdrive", "train",
                             *tiny_run(short_dataset, two, *recipe, samples_per_epoch=samples_per_epoch)], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 processes" in result.stdout

    single, distributed = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert single.keys() == distributed.keys()
    worst = max(float((single[k] - distributed[k]).abs().max()) for k in single)
    print(f"largest weight difference, torchrun x2 against one process ({' '.join(recipe)}): {worst:.3g}")
    for name in single:
        torch.testing.assert_close(distributed[name], single[name], rtol=0, atol=WEIGHT_ATOL)

    # written once, by rank 0: one TensorBoard file, the same files, the same validation curve and checkpoint
    assert len(list((two / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    curve_one = json.loads((one / "summary.json").read_text())["val"]
    curve_two = json.loads((two / "summary.json").read_text())["val"]
    assert [p["step"] for p in curve_two] == [p["step"] for p in curve_one]
    assert curve_two[-1]["total"] == pytest.approx(curve_one[-1]["total"], rel=1e-4)
    steps = json.loads((one / "checkpoint" / "state.json").read_text())["step"]
    assert json.loads((two / "checkpoint" / "state.json").read_text())["step"] == steps


def test_a_batch_that_does_not_divide_among_the_processes_is_refused(tmp_path):
    result = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "slimdrive", "train",
                             *tiny_run(tmp_path / "data", tmp_path / "odd", "batch_size=31")], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "batch_size=31 is the global batch and must divide among the 2 processes" in result.stdout
