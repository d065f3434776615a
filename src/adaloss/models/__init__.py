"""Model zoo of the AdaLFL / EvoMAL experiments, built by name with :func:`create_model`.

Every model takes ``(input_shape, num_outputs, **options)``, where ``input_shape`` has no batch
dimension: ``(C, H, W)`` for the convolutional models, any shape for the fully connected ones
(which flatten their input). Registered names: ``logistic``, ``mlp``, ``mlp_regressor``,
``lenet5``, ``allcnn_c``, ``vgg16``, ``resnet18``, ``wideresnet``, ``squeezenet``,
``pyramidnet`` and ``embedding``.

Example:
    >>> from adaloss.models import create_model
    >>> model = create_model("lenet5", (1, 28, 28), 10)
"""

from __future__ import annotations

from adaloss.models.allcnn import AllCNNC
from adaloss.models.embedding import EmbeddingNet
from adaloss.models.lenet import LeNet5
from adaloss.models.linear import MLP
from adaloss.models.pyramidnet import PyramidNet
from adaloss.models.registry import create_model, list_models, model_options, register_model
from adaloss.models.resnet import ResNet
from adaloss.models.squeezenet import SqueezeNet
from adaloss.models.vgg import VGG
from adaloss.models.wideresnet import WideResNet

__all__ = [
    "MLP",
    "VGG",
    "AllCNNC",
    "EmbeddingNet",
    "LeNet5",
    "PyramidNet",
    "ResNet",
    "SqueezeNet",
    "WideResNet",
    "create_model",
    "list_models",
    "model_options",
    "register_model",
]
