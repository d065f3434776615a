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
    "check_int_list",
    "check_positive",
    "float_note",
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def float_note(value: Any) -> str:
    """The sentence that error messages about integers add when a float was given (``value`` or
    an item of it): floats are refused, whole ones such as ``2.0`` too, never truncated."""
    items = value if isinstance(value, (list, tuple)) else [value]
    if any(isinstance(v, float) for v in items):
        return " Floats are not accepted, not even whole ones such as 2.0."
    return ""


def check_int(name: str, value: Any, *, minimum: int) -> int:
    """Return ``value`` if it is an int ``>= minimum``, else raise naming ``name``.

    A bool, or a float (even a whole one such as ``2.0``), raises ``TypeError``: an integer
    option is never silently truncated.
    """
    if not _is_int(value):
        raise TypeError(
            f"Expected `{name}` to be an integer, but got {value!r} ({type(value).__name__}).{float_note(value)}"
        )
    if value < minimum:
        raise ValueError(f"Expected `{name}` to be >= {minimum}, but got {value!r}.")
    return value


def check_int_list(name: str, value: Any, *, minimum: int = 1) -> list[int]:
    """Return ``value`` (a list or tuple of ints ``>= minimum``) as a list, else raise naming ``name``.

    Floats (even whole ones such as ``2.0``), bools and non-sequences raise ``TypeError``; an
    int below ``minimum`` raises ``ValueError``. The message names the argument, what is
    allowed and the value received, e.g. "Expected `hidden` to be a list of positive
    integers, but got [0.5]."
    """
    what = {1: "positive integers", 0: "non-negative integers"}.get(minimum, f"integers >= {minimum}")
    message = f"Expected `{name}` to be a list of {what}, but got {value!r}.{float_note(value)}"
    if not isinstance(value, (list, tuple)) or not all(_is_int(v) for v in value):
        raise TypeError(message)
    if any(v < minimum for v in value):
        raise ValueError(message)
    return list(value)


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


def check_known_options(what: str, given: Iterable[str], accepted: Iterable[str]) -> None:
    """A ``TypeError`` naming ``what``, the unknown option names among ``given`` and the accepted
    ones, instead of Python's bare "unexpected keyword argument"."""
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise TypeError(f"Unknown option(s) {unknown} for {what}; accepted options: {sorted(set(accepted))}.")


def call_with_options(what: str, factory: Callable[..., T], options: Mapping[str, Any]) -> T:
    """Call ``factory(**options)`` after checking every option name against its signature.

    An unknown option raises a ``TypeError`` naming ``what``, the option and the accepted options,
    instead of Python's bare "unexpected keyword argument".
    """
    params = inspect.signature(factory).parameters
    takes_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not takes_var_kw:
        accepted = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
        check_known_options(what, options, accepted)
    return factory(**options)
