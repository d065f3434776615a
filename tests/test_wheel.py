"""The package as a user installs it: a wheel built from this tree, installed without the source
tree (not editable), imports, ships its type marker, trains from the Python API and runs the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SMOKE = """
import pathlib, sys
import adaloss
from adaloss.training import TrainConfig, train
assert pathlib.Path(adaloss.__file__).is_relative_to(sys.argv[1]), adaloss.__file__
assert (pathlib.Path(adaloss.__file__).parent / "py.typed").is_file()
summary = train(TrainConfig(steps=5, batch_size=32, model_args={"hidden": [8]}, progress="off", threads=1,
                            method="adalfl", method_args={"init_steps": 2}, run_dir="run"))
print("final", summary["final"]["test_error"])
"""


@pytest.mark.slow
def test_the_wheel_installs_and_runs_outside_the_source_tree(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(ROOT)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = wheels.glob("adaloss-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "adaloss/py.typed" in names and "adaloss/methods/adalfl.py" in names
    assert not any(n.startswith(("tests/", "experiments/", "benchmarks/")) for n in names)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, cwd=tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", SMOKE, str(target)], cwd=work, env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("final ")
    cli = subprocess.run([sys.executable, "-m", "adaloss", "list", "methods"], cwd=work, env=env, capture_output=True,
                         text=True)
    assert cli.returncode == 0 and "adalfl\tclassification,regression" in cli.stdout
