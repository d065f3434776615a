"""Optional dependencies: the one import helper whose error says which extra installs the package."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["import_optional", "install_command"]


def install_command(extra: str) -> str:
    """The command that installs adaloss with ``extra``, its versions pinned by ``constraints.txt``."""
    return f'pip install -c constraints.txt -e ".[{extra}]"'


def import_optional(module: str, *, needed_for: str, extra: str, error: type[Exception] = ImportError) -> Any:
    """Import ``module``, or raise ``error`` naming what needs it and the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise error(f"{needed_for} needs the package {module!r} ({e}); install it with: "
                    f"{install_command(extra)}") from None
