"""The documented command lines run as written: every ``adaloss …`` line of the bash blocks of the
README and of the docs pages is run, in reading order, on a tiny budget (overrides appended), in an empty working directory with the own-data
files its examples name. A line that needs the shared datasets must say ``--data-dir`` (and is
skipped here); ``python -m adaloss …`` and torchrun lines are not ``adaloss`` lines."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from adaloss.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"```bash\n(.*?)```", re.S)
#: a line that reads the shared datasets (not in tests); the README must say so on the line
NEEDS_DATA = "--data-dir"
TINY_TRAIN = ["steps=10", "progress=off", "threads=1", "log_every=5"]


def documented_pages() -> list[Path]:
    """The README, then the docs site's pages in the order of its navigation (``mkdocs.yml``)."""
    nav = re.findall(r"^\s*-\s*(?:[^:\n]+:\s*)?([\w/.-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)
    return [README, *(ROOT / "docs" / page for page in nav)]


def readme_commands() -> list[str]:
    """The ``adaloss`` command lines of the bash blocks of the README and the docs pages
    (continuation lines joined), in reading order."""
    lines = []
    for block in (b for page in documented_pages() for b in BLOCK.findall(page.read_text())):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("adaloss "):
                lines.append(line.strip())
    return lines


def _tiny(argv: list[str]) -> list[str]:
    """``argv`` with a tiny budget appended (later overrides and options win)."""
    command, rest = argv[0], argv[1:]
    if command not in ("train", "compare"):
        return argv
    extra = list(TINY_TRAIN)
    model = next((a.split("=", 1)[1] for a in rest if a.startswith("model=")), "mlp")
    if model in ("mlp", "mlp_regressor"):
        extra.append("model_args.hidden=[16]")
    if any(a.startswith("checkpoint_every=") for a in rest):
        extra.append("checkpoint_every=10")  # the example's checkpoint, within the tiny budget
    if command == "train":
        if "method=adalfl" in rest or "method=ml3" in rest:
            extra.append("method_args.init_steps=2")
        return [command, *rest, *extra]
    extra += ["method_args.adalfl.init_steps=2", "method_args.ml3.init_steps=2", "--seeds", "0"]
    return [command, *rest, *extra]


def _run_dir(argv: list[str]) -> str:
    from adaloss.training.config import load_config
    from adaloss.training.experiment import default_run_dir

    overrides = [a for a in argv[1:] if "=" in a and not a.startswith("-")]
    cfg = load_config(None, overrides)
    return cfg.run_dir or str(default_run_dir(cfg))


def _own_data(folder: Path) -> None:
    """The files the README's own-data examples name."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    species = np.array(["setosa", "versicolor", "virginica"])[np.arange(300) % 3]
    x[:, 0] += np.arange(300) % 3  # learnable
    rows = "\n".join(",".join(f"{v:.4f}" for v in r) + f",{s}" for r, s in zip(x, species))
    (folder / "flowers.csv").write_text("a,b,c,d,species\n" + rows + "\n")
    price = x @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.1 * rng.normal(size=300)
    rows = "\n".join(",".join(f"{v:.4f}" for v in (*r, p)) for r, p in zip(x, price))
    (folder / "houses.csv").write_text("a,b,c,d,price\n" + rows + "\n")
    label = np.arange(300) % 2
    for name, part in (("train.csv", slice(0, 240)), ("test.csv", slice(240, 300))):
        rows = "\n".join(",".join(f"{v:.4f}" for v in r) + f",{lab}" for r, lab in zip(x[part], label[part]))
        (folder / name).write_text("a,b,c,d,label\n" + rows + "\n")
    np.savez(folder / "arrays.npz", x=x.astype(np.float32), y=(np.arange(300) % 3).astype(np.int64))


def test_the_readme_has_command_lines() -> None:
    pages = documented_pages()
    assert len(pages) > 5 and all(p.is_file() for p in pages), pages
    lines = readme_commands()
    assert len(lines) > 10 and any(NEEDS_DATA not in line for line in lines)


def test_every_readme_command_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    _own_data(tmp_path)
    last_run: str | None = None
    ran = []
    for line in readme_commands():
        if NEEDS_DATA in line:
            continue
        argv = shlex.split(line, comments=True)[1:]
        if "RUN_DIR" in argv:  # the placeholder of `adaloss plot RUN_DIR`: the run the README made just before
            assert last_run is not None, f"{line!r}: no run before it"
            argv = [last_run if a == "RUN_DIR" else a for a in argv]
        argv = _tiny(argv)
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 0, f"README line {line!r} (run as {argv}) exited {code}: {err[-2000:]}"
        if argv[0] == "train":
            last_run = _run_dir(argv)
        ran.append(line)
    assert any("method=learned_loss" in line for line in ran)
    assert any(line.startswith("adaloss plot RUN_DIR") for line in ran)
