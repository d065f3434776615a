"""Run configuration: a typed dataclass filled from YAML files and ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from adaloss._validation import unknown_name_error

__all__ = ["ConfigError", "TrainConfig", "load_config", "parse_overrides"]


class _Loader(yaml.SafeLoader):
    """YAML with 1.2 booleans and floats.

    Only true/false are bools, so ``progress: on`` stays the string 'on'; and ``1e-4`` is a float
    (YAML 1.1, PyYAML's default, reads it as a string because it has no dot).
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A YAML mapping that gives one key twice (YAML forbids it; PyYAML keeps the last silently)."""

    def __init__(self, key: Any, mark: Any) -> None:
        super().__init__(None, None, f"found duplicate key {key!r}", mark)
        self.key = key


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may restate keys on purpose
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key: SafeConstructor reports it
            continue
        if duplicate:
            raise DuplicateKeyError(key, key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.construct_mapping = _construct_mapping  # type: ignore[assignment, method-assign]


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def _yaml_error(where: str, error: yaml.YAMLError, *, lines: bool = True) -> ConfigError:
    """A :class:`ConfigError` for a YAML ``error`` in ``where``: the line (``lines``), and what is
    wrong in words."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    at = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None and lines else ""
    if isinstance(error, DuplicateKeyError):
        return ConfigError(f"{where}{at}: the key {error.key!r} is given twice; a YAML mapping holds each key once "
                           "(remove one of them).")
    problem = getattr(error, "problem", None) or str(error)
    context, context_mark = getattr(error, "context", None), getattr(error, "context_mark", None)
    if context and context_mark is not None and lines and context_mark is not mark:
        problem = f"{problem} ({context} at line {context_mark.line + 1}, column {context_mark.column + 1})"
    if isinstance(error, yaml.constructor.ConstructorError) and "tag" in problem:
        tag = re.search(r"tag '([^']*)'", problem)
        name = tag.group(1).replace("tag:yaml.org,2002:", "!!") if tag else "?"
        return ConfigError(f"{where}{at}: the YAML tag {name!r} is not allowed; a config holds plain values only "
                           "(numbers, strings, true/false, null, lists and mappings), never Python objects.")
    return ConfigError(f"{where}{at}: not valid YAML: {problem}.")


class ConfigError(ValueError):
    """A configuration key or value that is not allowed; the message names key, allowed and received."""


@dataclass
class TrainConfig:
    """Everything that defines one training run. Every field is a config key.

    The defaults are the offline built-in task: digits, an MLP, cross-entropy, SGD.
    ``model_args`` and ``method_args`` are passed to the model factory and the method's learner,
    which check their own option names.
    """

    # data
    dataset: str = "digits"
    data_dir: Union[str, None] = None
    download: bool = False
    valid_fraction: float = 0.1
    #: dataset=csv or npz: your own data file — a CSV table with a header row, or an NPZ archive
    #: (numpy.savez) of arrays x, y and optionally x_test, y_test
    data_path: Union[str, None] = None
    #: dataset=csv: the name of the target column (class labels or regression targets); every
    #: other column is a numeric feature
    target: Union[str, None] = None
    #: dataset=csv: a CSV file with the same columns as the test set (``null``: a fixed 20% of
    #: data_path's rows, the same for every seed)
    test_path: Union[str, None] = None
    #: the task trained (``null``: the dataset's own); ``embedding`` turns a classification set
    #: into metric learning: split by class, the held-out classes are the retrieval (test) set
    task: Union[Literal["classification", "regression", "embedding"], None] = None
    #: embedding task: the training classes (``null``: the first half, e.g. 0-4 of 10)
    train_classes: Union[list[int], None] = None
    #: embedding task: the embedding dimension, i.e. the model's output size (``null``: 64)
    embedding_dim: Union[int, None] = None
    #: classification: an imbalanced variant — these classes keep only ``minority_fraction`` of
    #: their training and validation rows (``null``: none); the test split is unchanged
    minority_classes: Union[list[int], None] = None
    #: the share those classes keep (``null``: 0.1)
    minority_fraction: Union[float, None] = None
    #: classification: this share of the training (and validation) labels replaced at random,
    #: seeded by ``seed`` (``null``: clean labels); the test split stays clean
    label_noise: Union[float, None] = None
    #: ``symmetric`` (another class, uniformly) or ``pairflip`` (the next class) (``null``: symmetric)
    label_noise_type: Union[Literal["symmetric", "pairflip"], None] = None
    #: whether the validation labels are noisy too (``null``: true); ``false`` assumes a trusted,
    #: clean validation split (e.g. for a meta-objective on clean data)
    label_noise_valid: Union[bool, None] = None
    # model and method
    model: str = "mlp"
    model_args: dict[str, Any] = field(default_factory=dict)
    #: the training method (``null``: the task's plain loss — ``ce`` for classification, ``mse``
    #: for regression, ``contrastive`` for embedding)
    method: Union[str, None] = None
    method_args: dict[str, Any] = field(default_factory=dict)
    # base optimisation (the papers count gradient steps, not epochs)
    steps: int = 1000
    batch_size: int = 128
    #: class-balanced batches: batch_size / samples_per_class classes × samples_per_class examples
    #: each (``null``: shuffled batches)
    samples_per_class: Union[int, None] = None
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    milestones: list[int] = field(default_factory=list)
    lr_gamma: float = 0.1
    # evaluation, logging, checkpoints
    metrics: list[str] = field(default_factory=list)
    #: the metric a method optimises (ALA's reward; ``null``: the method's default). Evaluated
    #: and logged with ``metrics``; methods that do not target a metric only evaluate it.
    metric: Union[str, None] = None
    eval_every: int = 0
    eval_batch_size: int = 1000
    log_every: int = 100
    checkpoint_every: int = 0
    keep_checkpoints: bool = False
    #: divergence that stays finite: a run stops (like a non-finite loss, exit status 1) when the
    #: training loss exceeds ``divergence_factor`` × max(|its first value|, 1), or a meta-learner's
    #: task loss on the meta batch that × max(the untrained model's task loss, 1) (``null``: never).
    #: How far healthy runs stay below it: ``experiments/results/divergence_margin.md``
    divergence_factor: Union[float, None] = 1e3
    #: ... or when its magnitude exceeds this absolute bound (``null``: none)
    divergence_bound: Union[float, None] = None
    # reproducibility and placement
    seed: int = 0
    deterministic: bool = False
    device: str = "cpu"
    threads: Union[int, None] = None
    run_dir: Union[str, None] = None
    progress: Literal["auto", "on", "off"] = "auto"
    # torch.distributed (under torchrun): batch_size is the global batch, split over the ranks
    dist_backend: Literal["auto", "gloo", "nccl"] = "auto"
    dist_timeout_s: float = 300.0
    #: where the run's scalars go: ``jsonl`` (``metrics.jsonl``), ``tensorboard`` (event files in
    #: ``run_dir/tensorboard``, same scalars plus the learned-loss / Φ figures at the end; needs
    #: ``pip install 'adaloss[tensorboard]'``), or a list of both
    logger: Union[Literal["jsonl", "tensorboard"], list[Literal["jsonl", "tensorboard"]]] = "jsonl"
    #: independent workers in this process, one thread each, for methods that pool them (ALA: one
    #: shared policy); like torchrun ranks without torchrun (``null``: one)
    workers: Union[int, None] = None

    #: keys that do not change results, so resuming or reusing a run may differ in them
    RUNTIME_KEYS: typing.ClassVar[frozenset[str]] = frozenset(
        {"data_dir", "download", "run_dir", "progress", "checkpoint_every", "keep_checkpoints", "threads", "device",
         "dist_backend", "dist_timeout_s", "logger", "divergence_factor", "divergence_bound"}
    )

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), hints[f.name]))
        for name in ("steps", "batch_size", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"Expected `{name}` to be a positive integer, but got {getattr(self, name)!r}.")
        if self.metric is not None:
            from adaloss.metrics import METRICS

            if self.metric not in METRICS:
                raise ConfigError(str(unknown_name_error("metric", self.metric, METRICS)))
        for name in ("eval_every", "log_every", "checkpoint_every", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"Expected `{name}` to be a non-negative integer, but got {getattr(self, name)!r}.")
        for name in ("divergence_factor", "divergence_bound"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"Expected `{name}` to be a positive number or null (no limit), but got {value!r}.")
        if self.threads is not None and self.threads <= 0:
            raise ConfigError(f"Expected `threads` to be a positive integer (torch's intra-op threads) or null "
                              f"(torch's "
                              f"default), but got {self.threads!r}.")
        self._check_device()
        if isinstance(self.logger, list):
            if not self.logger:
                raise ConfigError("Expected `logger` to name one or more of ['jsonl', 'tensorboard'], but got [].")
            self.logger = list(dict.fromkeys(self.logger))
        self._check_embedding_keys()
        from adaloss.data.own import check_own_options

        try:
            check_own_options(self.dataset, data_path=self.data_path, target=self.target, test_path=self.test_path)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    #: device types a run may name (``device=cuda``, ``cuda:1``, ``mps``, ``xpu``, ``cpu``)
    DEVICE_TYPES: typing.ClassVar[tuple[str, ...]] = ("cpu", "cuda", "mps", "xpu")

    def _check_device(self) -> None:
        """``device`` must parse as a torch device of a known type; whether this machine has it is
        checked when the run is built (:func:`adaloss.training.experiment.check_device`)."""
        import torch

        try:
            device = torch.device(self.device)
        except (RuntimeError, ValueError, TypeError):
            device = None
        if device is None or device.type not in self.DEVICE_TYPES:
            raise ConfigError(f"Expected `device` to be a torch device of type {list(self.DEVICE_TYPES)} (e.g. 'cpu', "
                              f"'cuda', 'cuda:1'), but got {self.device!r}.")

    @property
    def loggers(self) -> list[str]:
        """``logger`` as a list."""
        return [self.logger] if isinstance(self.logger, str) else list(self.logger)

    def _check_embedding_keys(self) -> None:
        """The metric-learning keys (Huang et al., ICML 2019, metric learning; reconstructed): each fits the task and
        the batch."""
        for name in ("train_classes", "embedding_dim"):
            if getattr(self, name) is not None and self.task != "embedding":
                raise ConfigError(f"`{name}` applies to task=embedding only, but got task={self.task!r} "
                                  f"(and {name}={getattr(self, name)!r}).")
        if self.embedding_dim is not None and self.embedding_dim <= 0:
            raise ConfigError(f"Expected `embedding_dim` to be a positive integer, but got {self.embedding_dim!r}.")
        if self.train_classes is not None:
            if any(c < 0 for c in self.train_classes) or len(set(self.train_classes)) != len(self.train_classes):
                raise ConfigError(f"Expected `train_classes` to be distinct class labels >= 0, but got "
                                  f"{self.train_classes!r}.")
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or self.workers < 1):
            raise ConfigError(f"Expected `workers` to be a positive integer or null, but got {self.workers!r}.")
        if self.minority_fraction is not None:
            if self.minority_classes is None:
                raise ConfigError(f"`minority_fraction` applies with `minority_classes` only, but got "
                                  f"minority_fraction={self.minority_fraction!r} and no minority_classes.")
            if not 0.0 < self.minority_fraction <= 1.0:
                raise ConfigError(f"Expected `minority_fraction` to be in (0, 1], but got {self.minority_fraction!r}.")
        if self.minority_classes is not None and self.task == "embedding":
            raise ConfigError(f"`minority_classes` applies to classification, but got task='embedding' "
                              f"(and minority_classes={self.minority_classes!r}).")
        if self.label_noise is None:
            for key in ("label_noise_type", "label_noise_valid"):
                if getattr(self, key) is not None:
                    raise ConfigError(f"`{key}` applies with `label_noise` only, but got {key}={getattr(self, key)!r} "
                                      "and no label_noise.")
        elif not 0.0 <= self.label_noise < 1.0:
            raise ConfigError(f"Expected `label_noise` to be in [0, 1), but got {self.label_noise!r}.")
        elif self.task in ("embedding", "regression"):
            raise ConfigError(f"`label_noise` applies to classification, but got task={self.task!r}.")
        k = self.samples_per_class
        if k is not None:
            if k <= 0:
                raise ConfigError(f"Expected `samples_per_class` to be a positive integer, but got {k!r}.")
            if self.batch_size % k:
                raise ConfigError(
                    f"Expected `batch_size` to be a multiple of `samples_per_class` ({k}): a class-balanced batch is "
                    f"P classes × K examples, P = batch_size / K; but got batch_size={self.batch_size}."
                )

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML/JSON-serialisable mapping of every key."""
        return dataclasses.asdict(self)

    #: keys added after runs were recorded, left out of :meth:`identity` while unset (``None``),
    #: so that finished runs and checkpoints from before them still match
    UNSET_OMITTED_KEYS: typing.ClassVar[frozenset[str]] = frozenset(
        {"metric", "task", "train_classes", "embedding_dim", "samples_per_class", "minority_classes",
         "minority_fraction", "workers", "data_path", "target", "test_path", "label_noise", "label_noise_type",
         "label_noise_valid"}
    )

    def identity(self) -> dict[str, Any]:
        """The keys that determine the results (everything but :attr:`RUNTIME_KEYS`, and the
        :attr:`UNSET_OMITTED_KEYS` that are unset), and ``method_defaults``: the library's defaults
        of the method's options (:func:`~adaloss.learners.method_defaults`), so that a run made
        under other defaults is neither reused nor resumed."""
        ident = {k: v for k, v in self.to_dict().items()
                 if k not in self.RUNTIME_KEYS and not (k in self.UNSET_OMITTED_KEYS and v is None)}
        from adaloss.learners.registry import METHODS, method_defaults

        if self.method in METHODS:
            ident["method_defaults"] = method_defaults(self.method)
        return ident

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied and validated."""
        return from_mapping({**self.to_dict(), **changes})

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


def from_mapping(values: Mapping[str, Any], *, source: str = "config") -> TrainConfig:
    """Build a :class:`TrainConfig` from a mapping, rejecting unknown keys by name."""
    allowed = TrainConfig.keys()
    for key in values:
        if key not in allowed:
            err = unknown_name_error("config key", key, allowed)
            raise ConfigError(f"Unknown key {key!r} in {source}. {err}") from None
    return TrainConfig(**values)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Turn ``["lr=0.1", "model_args.hidden=[100,100]"]`` into a nested dict.

    Values are read as YAML scalars/flow collections (``0.1`` is a float, ``[1,2]`` a list,
    ``true`` a bool, ``null`` None); a dotted key sets one entry of a dict-valued key.
    """
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"Expected an override of the form key=value, but got {item!r}.")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"Expected an override of the form key=value, but got {item!r} (empty key).")
        try:
            value = _yaml_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise _yaml_error(f"Cannot parse the value of {key!r} ({raw!r})", e, lines=False) from None
        target = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = target.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"Override {item!r} sets an entry of {p!r}, which is not a mapping.")
            target = node
        target[leaf] = value
    return out


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: Sequence[str] = (), **defaults: Any
) -> TrainConfig:
    """Defaults, then the YAML file at ``path``, then ``key=value`` overrides; validated."""
    values: dict[str, Any] = dict(defaults)
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"Config file {str(p)!r} does not exist.")
        try:
            loaded = _yaml_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise _yaml_error(f"Config file {str(p)!r}", e) from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"Config file {str(p)!r} is not UTF-8 text (byte {e.start}): {e.reason}.") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"Config file {str(p)!r} must hold a mapping of keys to values, "
                              f"got {type(loaded).__name__}.")
        _merge(values, loaded)
    _merge(values, parse_overrides(overrides))
    return from_mapping(values, source=str(path) if path else "overrides")


def _merge(base: dict[str, Any], new: Mapping[str, Any]) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k]}
            _merge(base[k], v)
        else:
            base[k] = v


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return f"one of {list(get_args(tp))}"
    if get_origin(tp) is list:
        return f"a list of {_type_name(get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp`` (with the few safe conversions YAML needs)."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except ConfigError as e:
                errors.append(str(e))
        if len(errors) == 1:
            raise ConfigError(errors[0])
        allowed = " or ".join(_type_name(a) for a in args if a is not type(None))
        raise ConfigError(f"Expected `{key}` to be {allowed}, but got {value!r}.")
    if origin is Literal:
        choices = list(get_args(tp))
        if value not in choices:
            raise ConfigError(f"Expected `{key}` to be one of {choices}, but got {value!r}.")
        return value
    if origin is list:
        (item_tp,) = get_args(tp)
        if isinstance(value, str):  # "0,1,2" from a shell is a convenient spelling of a list
            value = [_yaml_load(v) for v in value.split(",") if v.strip()]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"Expected `{key}` to be a list of {_type_name(item_tp)}, but got {value!r}.")
        return [_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"Expected `{key}` to be a mapping, but got {value!r}.")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"Expected `{key}` to be true or false, but got {value!r}.")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"Expected `{key}` to be an integer, but got {value!r}.")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"Expected `{key}` to be a number, but got {value!r}.")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"Expected `{key}` to be a string, but got {value!r}.")
        return value
    if tp is Any:
        return value
    raise TypeError(f"Unsupported config annotation for `{key}`: {tp!r}.")  # a bug in TrainConfig itself
