"""Fully connected models: logistic regression and multilayer perceptrons."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from adaloss._validation import check_fraction
from adaloss.models.registry import as_sizes, flat_size, positive_int, register_model

__all__ = ["MLP", "logistic", "mlp", "mlp_regressor"]


class MLP(nn.Module):
    """Multilayer perceptron on the flattened input (Rumelhart et al., 1986).

    Each hidden layer is ``Linear -> [BatchNorm1d] -> ReLU -> [Dropout]``; weights are
    Xavier-uniform (Glorot & Bengio, 2010) and biases zero, as in the EvoMAL model archive.
    With ``hidden=()`` this is logistic (softmax) regression.

    Args:
        in_features: number of input features after flattening.
        num_outputs: output width.
        hidden: widths of the hidden layers.
        dropout: dropout probability after each hidden activation.
        batch_norm: insert ``BatchNorm1d`` before each hidden activation.
    """

    def __init__(
        self,
        in_features: int,
        num_outputs: int,
        *,
        hidden: Sequence[int] = (1000, 1000),
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        positive_int("in_features", in_features)
        positive_int("num_outputs", num_outputs)
        hidden = as_sizes("hidden", hidden)
        dropout = check_fraction("dropout", dropout, low_open=False)
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers.append(nn.Linear(width, size))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, num_outputs))
        self.in_features = in_features
        self.layers = nn.Sequential(*layers)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(torch.flatten(x, 1))


@register_model("logistic")
def logistic(input_shape: tuple[int, ...], num_outputs: int) -> MLP:
    """Multinomial logistic regression: one ``Linear`` layer on the flattened input."""
    return MLP(flat_size(input_shape), num_outputs, hidden=())


@register_model("mlp")
def mlp(
    input_shape: tuple[int, ...],
    num_outputs: int,
    *,
    hidden: Sequence[int] = (1000, 1000),
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> MLP:
    """The 784-1000-1000-10 ReLU classifier of the EvoMAL / AdaLFL experiments (Raymond et al., 2023)."""
    return MLP(flat_size(input_shape), num_outputs, hidden=hidden, dropout=dropout, batch_norm=batch_norm)


@register_model("mlp_regressor")
def mlp_regressor(
    input_shape: tuple[int, ...],
    num_outputs: int,
    *,
    hidden: Sequence[int] = (100, 100),
    dropout: float = 0.0,
) -> MLP:
    """Small ReLU MLP for tabular regression (Raymond et al., 2023).

    The default ``hidden=(100, 100)`` is a choice of ours: the EvoMAL regression experiments use
    a small MLP and UCI-sized tables do not need more. ``num_outputs`` is usually 1.
    """
    return MLP(flat_size(input_shape), num_outputs, hidden=hidden, dropout=dropout)
