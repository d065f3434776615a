from __future__ import annotations

from pathlib import Path

import pytest

from adaloss.training.config import ConfigError, TrainConfig, load_config, parse_overrides


def test_overrides_parse_yaml_values_and_dotted_keys() -> None:
    out = parse_overrides(["lr=0.1", "steps=20", "nesterov=true", "milestones=[5,10]", "model_args.hidden=[8,8]"])
    assert out == {"lr": 0.1, "steps": 20, "nesterov": True, "milestones": [5, 10], "model_args": {"hidden": [8, 8]}}


def test_exponent_floats_are_floats_yaml_1_2() -> None:
    # PyYAML's YAML 1.1 reads "1e-4" as a string; YAML 1.2 (and every user) reads a float.
    out = parse_overrides(["method_args.meta_lr=1e-4", "lr=5E+1", "a=.5e-1", "b=1e", "c=on"])
    assert out == {"method_args": {"meta_lr": 1e-4}, "lr": 50.0, "a": 0.05, "b": "1e", "c": "on"}


def test_yaml_file_then_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("dataset: mnist\nlr: 0.05\nmodel_args:\n  hidden: [10]\n  dropout: 0.1\n")
    cfg = load_config(f, ["lr=1", "model_args.hidden=[20,20]", "milestones=5,10"])
    assert cfg.dataset == "mnist"
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.model_args == {"hidden": [20, 20], "dropout": 0.1}
    assert cfg.milestones == [5, 10]


def test_unknown_key_names_it_and_suggests() -> None:
    with pytest.raises(ConfigError, match=r"Unknown key 'stesp' in overrides.*Did you mean 'steps'"):
        load_config(None, ["stesp=10"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer=rmsprop", r"Expected `optimizer` to be one of \['sgd', 'adam', 'adamw'\], but got 'rmsprop'"),
        ("steps=ten", r"Expected `steps` to be an integer, but got 'ten'"),
        ("steps=0", r"Expected `steps` to be a positive integer, but got 0"),
        ("lr=fast", r"Expected `lr` to be a number, but got 'fast'"),
        ("nesterov=maybe", r"Expected `nesterov` to be true or false, but got 'maybe'"),
        ("milestones=[a]", r"Expected `milestones\[0\]` to be an integer, but got 'a'"),
        ("progress=yes", r"Expected `progress` to be one of \['auto', 'on', 'off'\], but got 'yes'"),
        ("lr", r"Expected an override of the form key=value, but got 'lr'"),
    ],
)
def test_bad_values_name_key_allowed_and_received(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_identity_excludes_runtime_keys() -> None:
    a = TrainConfig(run_dir="x", progress="off")
    b = TrainConfig(run_dir="y", progress="on", checkpoint_every=5)
    assert a.identity() == b.identity()
    assert a.identity() != TrainConfig(lr=0.5).identity()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task=embeding"], r"Expected `task` to be one of \['classification', 'regression', 'embedding'\], "
                            r"but got 'embeding'"),
        (["train_classes=[0,1]"], r"`train_classes` applies to task=embedding only, but got task=None"),
        (["task=classification", "embedding_dim=8"], r"`embedding_dim` applies to task=embedding only, but got "
                                                     r"task='classification'"),
        (["task=embedding", "embedding_dim=0"], r"Expected `embedding_dim` to be a positive integer, but got 0"),
        (["task=embedding", "train_classes=[0,0,1]"], r"`train_classes` to be distinct class labels >= 0, but got "
                                                      r"\[0, 0, 1\]"),
        (["task=embedding", "train_classes=[a]"], r"Expected `train_classes\[0\]` to be an integer, but got 'a'"),
        (["batch_size=30", "samples_per_class=4"], r"Expected `batch_size` to be a multiple of `samples_per_class` "
                                                   r"\(4\).*but got batch_size=30"),
        (["samples_per_class=0"], r"Expected `samples_per_class` to be a positive integer, but got 0"),
    ],
)
def test_embedding_keys_name_key_allowed_and_received(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_embedding_keys_are_left_out_of_identity_while_unset() -> None:
    """Runs and checkpoints recorded before the metric-learning keys still match."""
    plain = TrainConfig().identity()
    assert not {"task", "train_classes", "embedding_dim", "samples_per_class"} & set(plain)
    cfg = load_config(None, ["task=embedding", "train_classes=0,1,2", "embedding_dim=32", "samples_per_class=8"])
    assert cfg.train_classes == [0, 1, 2]
    assert {k: cfg.identity()[k] for k in ("task", "train_classes", "embedding_dim", "samples_per_class")} == {
        "task": "embedding", "train_classes": [0, 1, 2], "embedding_dim": 32, "samples_per_class": 8}
