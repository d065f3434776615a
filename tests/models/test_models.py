"""Tests for the model registry and every registered architecture (small, CPU only)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.func import functional_call, jvp
from torch.nn import functional as F

from adaloss.models import EmbeddingNet, create_model, list_models, model_options, register_model, registry

MNIST = (1, 28, 28)
CIFAR = (3, 32, 32)
DIGITS = (1, 8, 8)

NATURAL_SHAPES: dict[str, tuple[int, ...]] = {
    "logistic": MNIST,
    "mlp": MNIST,
    "lenet5": MNIST,
    "mlp_regressor": (13,),
    "allcnn_c": CIFAR,
    "vgg16": CIFAR,
    "resnet18": CIFAR,
    "wideresnet": CIFAR,
    "squeezenet": CIFAR,
    "pyramidnet": CIFAR,
    "embedding": CIFAR,
}

# Known parameter counts of the default configurations with 10 outputs.
PARAM_COUNTS = {
    "resnet18": 11_173_962,
    "wideresnet": 10_961_370,  # WRN-16-8
    "vgg16": 14_724_042,  # VGG-16-BN, bias-free convolutions
    "pyramidnet": 1_772_706,  # PyramidNet-110, alpha 48 ("1.7M" in the paper)
}

# Small configurations of every family for the training and functional tests (16x16 images).
SMALL: dict[str, tuple[tuple[int, ...], dict[str, Any]]] = {
    "logistic": (MNIST, {}),
    "mlp": (MNIST, {"hidden": (32, 32)}),
    "mlp_regressor": ((13,), {"hidden": (16, 16)}),
    "lenet5": (MNIST, {}),
    "allcnn_c": ((3, 16, 16), {"channels": (8, 16), "dropout": 0.0}),
    "vgg16": ((3, 16, 16), {"width": 8}),
    "resnet18": ((3, 16, 16), {"width": 8}),
    "wideresnet": ((3, 16, 16), {"depth": 10, "widen_factor": 1}),
    "squeezenet": ((3, 16, 16), {"dropout": 0.0}),
    "pyramidnet": ((3, 16, 16), {"depth": 8, "alpha": 12}),
    "embedding": ((3, 16, 16), {"channels": 8, "normalize": False}),
}


# torch's forward-mode AD loads TorchScript decompositions on first use, which warns in torch 2.13.
ignore_jit_deprecation = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_list_models_has_every_family() -> None:
    assert list_models() == sorted(NATURAL_SHAPES)
    assert set(SMALL) == set(NATURAL_SHAPES)


@pytest.mark.parametrize("name", sorted(NATURAL_SHAPES))
def test_default_configuration_output_shape(name: str) -> None:
    shape = NATURAL_SHAPES[name]
    torch.manual_seed(0)
    model = create_model(name, shape, 10)
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    if name in PARAM_COUNTS:
        assert num_params(model) == pytest.approx(PARAM_COUNTS[name], rel=1e-3)


def test_mnist_mlp_is_784_1000_1000_10() -> None:
    model = create_model("mlp", MNIST, 10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 1000), (1000, 1000), (1000, 10)]
    assert all(torch.all(m.bias == 0) for m in linears)


def test_wrn_28_10_parameter_count() -> None:
    model = create_model("wideresnet", CIFAR, 10, depth=28, widen_factor=10)
    assert num_params(model) == pytest.approx(36_479_194, rel=1e-3)


@pytest.mark.parametrize("name", ["lenet5", "mlp", "logistic"])
def test_digits_input(name: str) -> None:
    model = create_model(name, DIGITS, 10)
    assert model(torch.randn(3, *DIGITS)).shape == (3, 10)


@pytest.mark.parametrize("size", [4, 8, 28, 32])
def test_lenet5_adapts_flattened_size(size: int) -> None:
    model = create_model("lenet5", (3, size, size), 7)
    assert model(torch.randn(2, 3, size, size)).shape == (2, 7)


CONV_MODELS = ["allcnn_c", "vgg16", "resnet18", "wideresnet", "squeezenet", "pyramidnet", "embedding"]


@pytest.mark.parametrize("name", CONV_MODELS)
@pytest.mark.parametrize("size", [1, 3, 8])
def test_conv_models_accept_small_images(name: str, size: int) -> None:
    _, options = SMALL[name]
    model = create_model(name, (2, size, size), 5, **options)
    assert model(torch.randn(2, 2, size, size)).shape == (2, 5)


def test_flat_input_models_accept_tables() -> None:
    assert create_model("mlp_regressor", (13,), 1)(torch.randn(4, 13)).shape == (4, 1)
    assert create_model("logistic", (5,), 3)(torch.randn(4, 5)).shape == (4, 3)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_training_steps_lower_the_loss(name: str) -> None:
    shape, options = SMALL[name]
    torch.manual_seed(0)
    regression = name == "mlp_regressor"
    model = create_model(name, shape, 1 if regression else 4, **options)
    x = torch.randn(8, *shape)
    y = torch.randn(8, 1) if regression else torch.arange(8) % 4

    def loss_fn() -> torch.Tensor:
        out = model(x)
        return F.mse_loss(out, y) if regression else F.cross_entropy(out, y)

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    initial = loss_fn().item()
    for _ in range(10):
        optimizer.zero_grad()
        loss_fn().backward()
        optimizer.step()
    assert loss_fn().item() < 0.9 * initial


@pytest.mark.parametrize("name", ["mlp", "lenet5", "resnet18", "pyramidnet"])
def test_construction_is_deterministic_under_seed(name: str) -> None:
    shape, options = SMALL[name]
    states = []
    for _ in range(2):
        torch.manual_seed(123)
        states.append(create_model(name, shape, 4, **options).state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def _jvp_output(model: nn.Module, x: torch.Tensor, *, clone_buffers: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    tangents = {k: torch.randn_like(v) for k, v in params.items()}

    def forward(p: dict[str, torch.Tensor]) -> torch.Tensor:
        # BatchNorm updates its running statistics in place, which a function transform
        # refuses on captured tensors; fresh copies made inside the function are fine.
        b = {k: v.clone() for k, v in buffers.items()} if clone_buffers else buffers
        return functional_call(model, (p, b), (x,))

    return jvp(forward, (params,), (tangents,))


@ignore_jit_deprecation
@pytest.mark.parametrize("name", ["lenet5", "mlp"])
def test_functional_call_jvp(name: str) -> None:
    shape, options = SMALL[name]
    model = create_model(name, shape, 10, **options)
    x = torch.randn(3, *shape)
    out, tangent_out = _jvp_output(model, x)
    assert out.shape == tangent_out.shape == (3, 10)
    assert torch.allclose(out, model(x))


@ignore_jit_deprecation
def test_functional_call_jvp_through_batch_norm_with_cloned_buffers() -> None:
    shape, options = SMALL["resnet18"]
    model = create_model("resnet18", shape, 10, **options)
    _, tangent_out = _jvp_output(model, torch.randn(3, *shape), clone_buffers=True)
    assert tangent_out.shape == (3, 10)


def test_second_order_gradients_through_lenet5() -> None:
    model = create_model("lenet5", MNIST, 10)
    loss = F.cross_entropy(model(torch.randn(4, *MNIST)), torch.arange(4))
    grads = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
    penalty = sum((g**2).sum() for g in grads)
    second = torch.autograd.grad(penalty, list(model.parameters()))
    assert all(torch.isfinite(g).all() for g in second)


def test_embedding_normalizes_and_handles_flat_inputs() -> None:
    image_model = create_model("embedding", (1, 8, 8), 16, channels=8)
    assert torch.allclose(image_model(torch.randn(5, 1, 8, 8)).norm(dim=1), torch.ones(5), atol=1e-5)
    flat_model = create_model("embedding", (20,), 16, hidden=(32,))
    out = flat_model(torch.randn(5, 20))
    assert isinstance(flat_model, EmbeddingNet)
    assert out.shape == (5, 16)
    assert torch.allclose(out.norm(dim=1), torch.ones(5), atol=1e-5)


def test_mlp_options_change_the_architecture() -> None:
    model = create_model("mlp", (10,), 2, hidden=(8,), dropout=0.25, batch_norm=True)
    kinds = [type(m) for m in model.modules() if not isinstance(m, nn.Sequential)][1:]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout, nn.Linear]


def test_unknown_model_name_lists_registered_names() -> None:
    with pytest.raises(ValueError, match="model") as info:
        create_model("resnet19", CIFAR, 10)
    message = str(info.value)
    assert "'resnet19'" in message
    assert all(name in message for name in list_models())
    assert "Did you mean 'resnet18'" in message


def test_unknown_option_names_model_option_and_accepted_ones() -> None:
    with pytest.raises(TypeError) as info:
        create_model("mlp", MNIST, 10, hiden=(10,))
    message = str(info.value)
    assert "'mlp'" in message and "'hiden'" in message
    assert all(option in message for option in model_options("mlp"))
    assert "Did you mean 'hidden'" in message
    with pytest.raises(TypeError, match="'logistic'.*'dropout'"):
        create_model("logistic", MNIST, 10, dropout=0.1)


@pytest.mark.parametrize("name", ["lenet5", "allcnn_c", "vgg16", "resnet18", "wideresnet", "squeezenet", "pyramidnet"])
def test_image_model_rejects_flat_input_shape(name: str) -> None:
    with pytest.raises(ValueError, match=r"`input_shape`.*\(C, H, W\).*\(784,\)"):
        create_model(name, (784,), 10)


@pytest.mark.parametrize("bad", [(), (0, 28, 28), (1, 28.0, 28), "abc", None])
def test_malformed_input_shape(bad: Any) -> None:
    with pytest.raises(ValueError, match="`input_shape`"):
        create_model("mlp", bad, 10)


def test_lenet5_rejects_too_small_images() -> None:
    with pytest.raises(ValueError, match=r"at least 4x4.*\(1, 3, 3\)"):
        create_model("lenet5", (1, 3, 3), 10)


@pytest.mark.parametrize(
    ("name", "options", "pattern"),
    [
        ("wideresnet", {"depth": 20}, r"\(depth - 4\) % 6 == 0.*20"),
        ("pyramidnet", {"depth": 100}, r"\(depth - 2\) % 6 == 0.*100"),
        ("mlp", {"dropout": 1.5}, "`dropout`"),
        ("mlp", {"hidden": (10, 0)}, "`hidden`"),
        ("resnet18", {"width": 0}, "`width`"),
    ],
)
def test_invalid_option_values(name: str, options: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        create_model(name, NATURAL_SHAPES[name], 10, **options)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_invalid_num_outputs(bad: Any) -> None:
    with pytest.raises(ValueError, match="`num_outputs`"):
        create_model("mlp", MNIST, bad)


def test_register_model_and_duplicate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))

    @register_model("tiny_test_model")
    def tiny(input_shape: tuple[int, ...], num_outputs: int, *, bias: bool = True) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(registry.flat_size(input_shape), num_outputs, bias=bias))

    assert "tiny_test_model" in list_models()
    assert model_options("tiny_test_model") == ["bias"]
    assert create_model("tiny_test_model", (2, 3), 4, bias=False)(torch.randn(5, 2, 3)).shape == (5, 4)
    with pytest.raises(ValueError, match="'tiny_test_model' is already registered"):
        register_model("tiny_test_model")(tiny)
    with pytest.raises(ValueError, match="'mlp' is already registered"):
        register_model("mlp")(tiny)
