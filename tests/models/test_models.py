"""Model builders: shapes, determinism, clear errors for the wrong input."""

from __future__ import annotations

import pytest
import torch

from unseen.errors import ModelError
from unseen.federated import get_flat
from unseen.models import MODELS, Square, build_model, init_model


@pytest.mark.parametrize("name", MODELS)
def test_image_models_output_logits(name):
    shape = (81, 7, 7) if name.startswith("scatter_") else (1, 28, 28)  # scattering features of MNIST
    model = build_model(name, shape, 10)
    assert model(torch.randn(4, *shape)).shape == (4, 10)


def test_scatter_linear_is_one_linear_layer_from_zero_weights():
    model = build_model("scatter_linear", (81, 7, 7), 10)
    assert [type(m).__name__ for m in model] == ["GroupNorm", "Flatten", "Linear"]
    assert get_flat(model).numel() == 81 * 7 * 7 * 10 + 10 and not get_flat(model).any()
    assert not any(p.requires_grad for p in model[0].parameters())  # normalization learns nothing


@pytest.mark.parametrize("name", ["logreg", "mlp"])
def test_tabular_models(name):
    assert build_model(name, (30,), 2)(torch.randn(3, 30)).shape == (3, 2)


def test_cnn_on_tabular_data_names_the_fix():
    with pytest.raises(ModelError, match="Use 'logreg' or 'mlp'"):
        build_model("cnn", (30,), 2)


def test_he_cnn_uses_only_polynomial_activations():
    model = build_model("he_cnn", (1, 28, 28), 10)
    kinds = {type(m).__name__ for m in model.modules()}
    assert "Square" in kinds and not kinds & {"ReLU", "MaxPool2d", "BatchNorm2d"}
    assert torch.equal(Square()(torch.tensor([-3.0, 2.0])), torch.tensor([9.0, 4.0]))


def test_init_depends_only_on_seed():
    torch.manual_seed(123)
    a = get_flat(init_model("cnn", (1, 28, 28), 10, seed=7))
    state = torch.get_rng_state()
    b = get_flat(init_model("cnn", (1, 28, 28), 10, seed=7))
    assert torch.equal(a, b) and torch.equal(state, torch.get_rng_state())
    assert not torch.equal(a, get_flat(init_model("cnn", (1, 28, 28), 10, seed=8)))


def test_every_model_is_a_valid_spec_choice():
    from unseen.experiment import parse_spec
    from unseen.models import MODELS

    for name in MODELS:
        assert parse_spec({"model": {"name": name}}).model.name == name
