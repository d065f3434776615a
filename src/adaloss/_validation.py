"""Argument checks that raise errors naming the argument, what is allowed and what was received."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = [
    "call_with_options",
    "check_choice",
    "check_fraction",
    "check_int",
    "check_positive",
    "unknown_name_error",
]


def unknown_name_error(kind: str, received: object, allowed: Iterable[str]) -> ValueError:
    """Build the error for a name that is not registered, with the closest match as a hint."""
    names = sorted(allowed)
    hint = difflib.get_close_matches(str(received), names, n=1)
    tail = f" Did you mean {hint[0]!r}?" if hint else ""
    return ValueError(f"Expected `{kind}` to be one of {names}, but got {received!r}.{tail}")


def check_choice(name: str, value: T, allowed: Iterable[T]) -> T:
    """Return ``value`` if it is one of ``allowed``, else raise a ``ValueError`` naming ``name``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise unknown_name_error(name, value, [str(a) for a in allowed])
    return value


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> Any:
    """Raise unless ``value`` is a number > 0 (or >= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Expected `{name}` to be a number, but got {value!r} ({type(value).__name__}).")
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"Expected `{name}` to be {bound}, but got {value!r}.")
    return value


def check_int(name: str, value: Any, *, minimum: int) -> int:
    """Return ``value`` if it is an int ``>= minimum``, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Expected `{name}` to be an integer, but got {value!r} ({type(value).__name__}).")
    if value < minimum:
        raise ValueError(f"Expected `{name}` to be >= {minimum}, but got {value!r}.")
    return value


def check_fraction(name: str, value: Any, *, low_open: bool = True, high_open: bool = True) -> float:
    """Raise unless ``value`` lies in the interval (0, 1) (ends closed when the flags say so)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Expected `{name}` to be a number, but got {value!r} ({type(value).__name__}).")
    lo_ok = value > 0 if low_open else value >= 0
    hi_ok = value < 1 if high_open else value <= 1
    if not (lo_ok and hi_ok):
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"Expected `{name}` to be in {lo}0, 1{hi}, but got {value!r}.")
    return float(value)


def call_with_options(what: str, factory: Callable[..., T], options: Mapping[str, Any]) -> T:
    """Call ``factory(**options)`` after checking every option name against its signature.

    An unknown option raises a ``TypeError`` naming ``what``, the option and the accepted options,
    instead of Python's bare "unexpected keyword argument".
    """
    params = inspect.signature(factory).parameters
    takes_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not takes_var_kw:
        accepted = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise TypeError(
                f"Unknown option(s) {unknown} for {what}; accepted options: {sorted(accepted)}."
            )
    return factory(**options)
