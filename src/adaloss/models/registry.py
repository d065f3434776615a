"""Name-based registry of model factories, and the input-shape checks the factories share.

A factory is any callable ``factory(input_shape, num_outputs, *, **options) -> nn.Module`` whose
options are keyword-only parameters; :func:`create_model` checks option names against that
signature so that a misspelt option fails loudly instead of being ignored.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from torch import nn

from adaloss._validation import float_note, unknown_name_error

__all__ = [
    "ModelFactory",
    "as_image_shape",
    "as_sizes",
    "create_model",
    "flat_size",
    "list_models",
    "model_options",
    "positive_int",
    "register_model",
]

#: ``factory(input_shape, num_outputs, **options) -> nn.Module``.
ModelFactory = Callable[..., nn.Module]
F = TypeVar("F", bound=ModelFactory)

_MODELS: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[F], F]:
    """Decorator that registers a model factory (function or ``nn.Module`` class) under ``name``.

    Raises:
        ValueError: if ``name`` is empty or already registered.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"Expected `name` to be a non-empty string, but got {name!r}.")

    def decorator(factory: F) -> F:
        if name in _MODELS:
            raise ValueError(
                f"Model name {name!r} is already registered (by {_MODELS[name]!r}); "
                "choose another name."
            )
        _MODELS[name] = factory
        return factory

    return decorator


def list_models() -> list[str]:
    """Return the registered model names, sorted."""
    return sorted(_MODELS)


def model_options(name: str) -> list[str]:
    """Return the sorted keyword options that the model ``name`` accepts."""
    if name not in _MODELS:
        raise unknown_name_error("model", name, list_models())
    params = inspect.signature(_MODELS[name]).parameters.values()
    return sorted(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def create_model(name: str, input_shape: Sequence[int], num_outputs: int, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` for inputs of shape ``input_shape`` (no batch dim).

    Args:
        name: a name from :func:`list_models`.
        input_shape: ``(C, H, W)`` for images or ``(D,)`` for tables; fully connected models
            accept any shape and flatten it.
        num_outputs: width of the output layer (classes, regression targets or embedding size).
        **kwargs: model-specific options; see :func:`model_options`.

    Raises:
        ValueError: for an unknown name or an input shape the model cannot take.
        TypeError: for an option the model does not accept.
    """
    if name not in _MODELS:
        raise unknown_name_error("model", name, list_models())
    factory = _MODELS[name]
    params = inspect.signature(factory).parameters.values()
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        accepted = model_options(name)
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            hints = [h for u in unknown for h in difflib.get_close_matches(u, accepted, n=1)]
            tail = f" Did you mean {hints[0]!r}?" if hints else ""
            raise TypeError(
                f"Model {name!r} got unknown option(s) {unknown}; "
                f"accepted options are {accepted}.{tail}"
            )
    shape = _as_shape(input_shape)
    return factory(shape, positive_int("num_outputs", num_outputs), **kwargs)


def _as_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = ()
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(
            "Expected `input_shape` to be a non-empty sequence of positive ints "
            f"(without the batch dimension), but got {input_shape!r}."
        )
    return shape


def as_image_shape(model: str, input_shape: Sequence[int], *, min_size: int = 1) -> tuple[int, int, int]:
    """Validate that ``input_shape`` is ``(C, H, W)`` with ``H, W >= min_size`` for ``model``."""
    shape = _as_shape(input_shape)
    if len(shape) != 3:
        raise ValueError(
            f"Model {model!r} is convolutional: expected `input_shape` to be (C, H, W) image "
            f"dimensions without the batch dimension, but got {tuple(input_shape)!r}."
        )
    if min(shape[1:]) < min_size:
        raise ValueError(
            f"Model {model!r} needs images of at least {min_size}x{min_size}: expected "
            f"`input_shape` (C, H, W) with H, W >= {min_size}, but got {shape!r}."
        )
    return shape  # type: ignore[return-value]


def flat_size(input_shape: Sequence[int]) -> int:
    """Number of features after flattening an input of shape ``input_shape``."""
    return math.prod(_as_shape(input_shape))


def as_sizes(name: str, value: Sequence[int], *, allow_empty: bool = True) -> tuple[int, ...]:
    """Validate a sequence of layer widths (e.g. ``hidden``) and return it as a tuple."""
    try:
        sizes = tuple(value)
    except TypeError:
        sizes = None
    if (
        sizes is None
        or (not sizes and not allow_empty)
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes)
    ):
        what = "a sequence" if allow_empty else "a non-empty sequence"
        raise ValueError(f"Expected `{name}` to be {what} of positive ints, but got {value!r}.{float_note(sizes)}")
    return sizes


def positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is an int >= 1, else raise a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Expected `{name}` to be a positive int, but got {value!r}.{float_note(value)}")
    return value
