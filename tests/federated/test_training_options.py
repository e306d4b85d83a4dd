"""Training options: AdamW, cosine learning-rate decay and image shifts, and where they are refused."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from unseen.errors import SpecError
from unseen.experiment import parse_spec, run
from unseen.federated import LocalTraining, get_flat, local_update
from unseen.models import init_model
from unseen.runtime.clients import client_generator, local_for_round
from unseen.runtime.simulation import SimulationPlan


def _images(n=96):
    g = torch.Generator().manual_seed(0)
    return torch.randn((n, 1, 28, 28), generator=g), torch.randint(0, 10, (n,), generator=g)


def test_adamw_and_shifts_change_the_update_and_stay_deterministic():
    model = init_model("lenet", (1, 28, 28), 10, seed=0)
    start = get_flat(model)
    x, y = _images()
    base = LocalTraining(epochs=1, batch_size=32, lr=0.01)
    sgd = local_update(model, start, x, y, base, client_generator(0, 1, 0)).delta
    for change in ({"optimizer": "adamw"}, {"augment": "shift"}):
        config = dataclasses.replace(base, **change)
        once = local_update(model, start, x, y, config, client_generator(0, 1, 0)).delta
        again = local_update(model, start, x, y, config, client_generator(0, 1, 0)).delta
        assert torch.equal(once, again) and not torch.allclose(once, sgd)


def test_cosine_schedule_decays_the_clients_learning_rate_over_the_rounds():
    plan = SimulationPlan(model=torch.nn.Linear(2, 2), clients=[], test=(torch.zeros(1), torch.zeros(1)),
                          local=LocalTraining(lr=0.2), server=None, rounds=4, clients_per_round=1, seed=0,  # type: ignore[arg-type]
                          lr_schedule="cosine")
    lrs = [local_for_round(plan, r).lr for r in range(1, 5)]
    assert lrs[0] == pytest.approx(0.2)
    assert lrs == pytest.approx([0.2 * 0.5 * (1 + math.cos(math.pi * (r - 1) / 4)) for r in range(1, 5)])
    assert lrs == sorted(lrs, reverse=True)
    plan.lr_schedule = "constant"
    assert local_for_round(plan, 3).lr == 0.2


def test_settings_that_would_not_do_what_they_say_are_refused(tmp_path):
    with pytest.raises(SpecError, match="train.optimizer = 'sgd'"):
        parse_spec({"privacy": {"mechanism": "dp_sgd", "noise_multiplier": 1.0}, "train": {"optimizer": "adamw"}})
    with pytest.raises(SpecError, match="train.augment"):
        parse_spec({"privacy": {"mechanism": "dp_sgd", "noise_multiplier": 1.0}, "train": {"augment": "shift"}})
    with pytest.raises(SpecError, match="translates images"):
        run(parse_spec({"data": {"name": "breast_cancer"}, "train": {"augment": "shift"},
                        "output": {"dir": str(tmp_path)}}))


def test_vectorize_on_with_adamw_trains_one_by_one_and_matches(tmp_path):
    def go(vectorize):
        raw = {"name": vectorize, "data": {"name": "breast_cancer"}, "model": {"name": "mlp", "hidden": [8]},
               "federated": {"clients": 3, "rounds": 2}, "train": {"optimizer": "adamw", "lr": 0.01,
                                                                    "lr_schedule": "cosine"},
               "runtime": {"vectorize": vectorize}, "output": {"dir": str(tmp_path)}}
        return run(parse_spec(raw)).params
    assert torch.equal(go("on"), go("off"))
