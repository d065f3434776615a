from __future__ import annotations

import importlib

import pytest

import adaloss

SUBPACKAGES = ["data", "models", "losses", "functional", "learners", "metrics", "training", "plotting"]


def test_top_level_names_resolve() -> None:
    for name in adaloss.__all__:
        assert getattr(adaloss, name) is not None, name


@pytest.mark.parametrize("sub", SUBPACKAGES)
def test_subpackage_all_resolves(sub: str) -> None:
    mod = importlib.import_module(f"adaloss.{sub}")
    for name in mod.__all__:
        assert hasattr(mod, name), f"adaloss.{sub}.{name}"
