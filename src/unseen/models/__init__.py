"""Models: logistic regression, MLP, LeNet-5, the classic MNIST CNN, a small DP-SGD CNN, an HE-friendly CNN,
and linear, small and CNN models on wavelet scattering features for DP.

``build_model(name, input_shape, n_classes)`` returns a fresh ``torch.nn.Module``. No model here has
BatchNorm or dropout: their state would need extra care under DP and encryption.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

import torch
from torch import nn

from unseen.errors import ModelError

MODELS = ("logreg", "mlp", "lenet", "cnn", "dp_cnn", "he_cnn", "scatter_cnn", "scatter_small",
          "scatter_linear")


class Square(nn.Module):
    """x -> x^2: a degree-2 activation that homomorphic encryption can evaluate (CryptoNets)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


def logistic_regression(input_shape: Sequence[int], n_classes: int) -> nn.Module:
    """Multinomial logistic regression (softmax over one linear layer)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(prod(input_shape), n_classes))


def mlp(input_shape: Sequence[int], n_classes: int, hidden: Sequence[int] = (200, 200)) -> nn.Module:
    """Fully connected network with ReLU activations (McMahan et al. 2017 use 2 x 200)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = prod(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)


def _image_shape(input_shape: Sequence[int], model: str) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ModelError(
            f"model.name = {model!r} needs image input (channels, height, width); this dataset has "
            f"{len(input_shape)}-d features {tuple(input_shape)}. Use 'logreg' or 'mlp' for tabular data."
        )
    c, h, w = input_shape
    return c, h, w


def lenet(input_shape: Sequence[int], n_classes: int) -> nn.Module:
    """LeNet-5 as in PyTorch's and Flower's tutorials: conv5x5(6)-pool-conv5x5(16)-pool-fc120-fc84-fc.

    44k parameters on MNIST: the model of the simulation benchmark (docs/performance.md).
    """
    c, h, w = _image_shape(input_shape, "lenet")
    side = lambda n: ((n - 4) // 2 - 4) // 2  # noqa: E731 conv5 (no padding), pool2, conv5, pool2
    return nn.Sequential(
        nn.Conv2d(c, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * side(h) * side(w), 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, n_classes),
    )


def cnn(input_shape: Sequence[int], n_classes: int) -> nn.Module:
    """The 2-conv CNN of McMahan et al. 2017: conv5x5(32)-pool-conv5x5(64)-pool-fc512-fc."""
    c, h, w = _image_shape(input_shape, "cnn")
    return nn.Sequential(
        nn.Conv2d(c, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * (h // 4) * (w // 4), 512), nn.ReLU(), nn.Linear(512, n_classes),
    )


def dp_cnn(input_shape: Sequence[int], n_classes: int) -> nn.Module:
    """The small tanh CNN of Tramer & Boneh 2021 for DP-SGD (26k parameters for MNIST).

    Few parameters and bounded activations suit DP-SGD: less noise in total, better-behaved clipping.
    """
    c, h, w = _image_shape(input_shape, "dp_cnn")
    size = lambda n: ((n + 6 - 8) // 2 + 1 - 1 - 4) // 2 + 1 - 1  # noqa: E731 conv8/2 pad3, pool2/1, conv4/2, pool2/1
    return nn.Sequential(
        nn.Conv2d(c, 16, 8, stride=2, padding=3), nn.Tanh(), nn.MaxPool2d(2, 1),
        nn.Conv2d(16, 32, 4, stride=2), nn.Tanh(), nn.MaxPool2d(2, 1),
        nn.Flatten(), nn.Linear(32 * size(h) * size(w), 32), nn.Tanh(), nn.Linear(32, n_classes),
    )


def _scattering_shape(input_shape: Sequence[int], model: str) -> tuple[int, int, int]:
    c, h, w = _image_shape(input_shape, model)
    if c % 27 and c % 9:
        raise ModelError(f"model.name = {model!r} expects scattering features (81 channels per image "
                         f"channel); got {c} channels. Set data.features = 'scattering'.")
    return c, h, w


def scatter_cnn(input_shape: Sequence[int], n_classes: int) -> nn.Module:
    """A small tanh CNN on wavelet scattering features (``data.features = "scattering"``), after
    Tramer & Boneh 2021: per-sample group normalization (no parameters, no privacy cost), two 3x3
    convolutions, a 32-unit layer. 60k parameters for MNIST's 81 x 7 x 7 features."""
    c, h, w = _scattering_shape(input_shape, "scatter_cnn")
    return nn.Sequential(
        nn.GroupNorm(27 if c % 27 == 0 else 9, c, affine=False),
        nn.Conv2d(c, 32, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.Tanh(), nn.Flatten(),
        nn.Linear(64 * (h // 2) * (w // 2), 32), nn.Tanh(), nn.Linear(32, n_classes),
    )


def scatter_small(input_shape: Sequence[int], n_classes: int) -> nn.Module:
    """A very small model on scattering features for user-level DP: group normalization, a 1x1
    convolution to 16 channels, tanh, a linear layer (9k parameters for MNIST). DP-FedAvg's noise grows
    with the number of parameters; on 100 MNIST clients this model gained 9 points over scatter_cnn."""
    c, h, w = _scattering_shape(input_shape, "scatter_small")
    return nn.Sequential(nn.GroupNorm(27 if c % 27 == 0 else 9, c, affine=False), nn.Conv2d(c, 16, 1), nn.Tanh(),
                         nn.Flatten(), nn.Linear(16 * h * w, n_classes))


def scatter_linear(input_shape: Sequence[int], n_classes: int) -> nn.Module:
    """A linear classifier on scattering features after parameter-free group normalization (Tramer &
    Boneh 2021's "ScatterNet + linear", 39.7k parameters for MNIST), started from zero weights: the
    loss is convex, so there is nothing for a random start to break. With DP-SGD at epsilons 1 and 3 it beat
    ``scatter_cnn`` here (see docs/benchmarks.md)."""
    c, h, w = _scattering_shape(input_shape, "scatter_linear")
    model = nn.Sequential(nn.GroupNorm(27 if c % 27 == 0 else 9, c, affine=False), nn.Flatten(),
                          nn.Linear(c * h * w, n_classes))
    nn.init.zeros_(model[2].weight)
    nn.init.zeros_(model[2].bias)
    return model


def he_cnn(input_shape: Sequence[int], n_classes: int) -> nn.Module:
    """CryptoNets-style CNN for encrypted inference: conv(5 maps, 5x5, stride 2)-square-fc100-square-fc.

    Multiplicative depth is small and fixed, with no max-pooling or ReLU (which HE cannot evaluate).
    """
    c, h, w = _image_shape(input_shape, "he_cnn")
    out_h, out_w = (h + 2 - 5) // 2 + 1, (w + 2 - 5) // 2 + 1
    return nn.Sequential(
        nn.Conv2d(c, 5, 5, stride=2, padding=1), Square(), nn.Flatten(),
        nn.Linear(5 * out_h * out_w, 100), Square(), nn.Linear(100, n_classes),
    )


def build_model(
    name: str, input_shape: Sequence[int], n_classes: int, *, hidden: Sequence[int] = (200, 200)
) -> nn.Module:
    """Build a freshly initialised model by name (uses torch's global RNG: seed it first)."""
    if name == "logreg":
        return logistic_regression(input_shape, n_classes)
    if name == "mlp":
        return mlp(input_shape, n_classes, hidden)
    if name == "lenet":
        return lenet(input_shape, n_classes)
    if name == "cnn":
        return cnn(input_shape, n_classes)
    if name == "dp_cnn":
        return dp_cnn(input_shape, n_classes)
    if name == "he_cnn":
        return he_cnn(input_shape, n_classes)
    if name == "scatter_cnn":
        return scatter_cnn(input_shape, n_classes)
    if name == "scatter_small":
        return scatter_small(input_shape, n_classes)
    if name == "scatter_linear":
        return scatter_linear(input_shape, n_classes)
    raise ModelError(f"model.name = {name!r} is unknown; use one of {', '.join(MODELS)}.")


def init_model(name: str, input_shape: Sequence[int], n_classes: int, *, seed: int, **kw: object) -> nn.Module:
    """Build a model whose initial weights depend only on ``seed`` (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(name, input_shape, n_classes, **kw)  # type: ignore[arg-type]


__all__ = ["MODELS", "Square", "build_model", "cnn", "dp_cnn", "he_cnn", "init_model", "lenet",
           "logistic_regression", "mlp", "scatter_cnn", "scatter_linear", "scatter_small"]
