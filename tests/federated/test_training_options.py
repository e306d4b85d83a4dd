"""Training options: AdamW, cosine learning-rate decay, image shifts and SAM, and where they are refused."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from tests.conftest import run_and_interrupt
from unseen.errors import SpecError
from unseen.experiment import parse_spec, resume, run
from unseen.federated import LocalTraining, get_flat, local_update
from unseen.federated.client import make_optimizer
from unseen.models import init_model
from unseen.privacy.dpsgd import DPSGD, dp_sgd_update
from unseen.runtime.checkpoint import load_latest
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


@pytest.mark.parametrize("change", [{"momentum": 0.9, "weight_decay": 1e-3}, {"optimizer": "adamw"}],
                         ids=["sgd-momentum", "adamw"])
def test_carried_optimizer_state_continues_training_like_one_loop(change):
    # Central training calls local_update once per epoch: with the optimizer state carried, two calls
    # must take exactly the steps one optimizer takes over both epochs' batches.
    model = init_model("lenet", (1, 28, 28), 10, seed=0)
    start = get_flat(model)
    x, y = _images()
    config = dataclasses.replace(LocalTraining(epochs=1, batch_size=32, lr=0.01), **change)
    gens = [client_generator(0, r, 0) for r in (1, 2)]
    orders = [torch.randperm(len(y), generator=client_generator(0, r, 0)) for r in (1, 2)]

    first = local_update(model, start, x, y, config, gens[0], optimizer_state={})
    assert first.optimizer_state  # momentum_buffer, or Adam's moments and step
    second = local_update(model, start + first.delta, x, y, config, gens[1], optimizer_state=first.optimizer_state)
    fresh = local_update(model, start + first.delta, x, y, config, client_generator(0, 2, 0))

    reference = init_model("lenet", (1, 28, 28), 10, seed=0)
    optimizer = make_optimizer(reference.parameters(), config)
    for order in orders:
        for s in range(0, len(y), config.batch_size):
            idx = order[s : s + config.batch_size]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(reference(x[idx]), y[idx]).backward()
            optimizer.step()
    carried = start + first.delta + second.delta
    assert torch.allclose(carried, get_flat(reference), atol=1e-6)
    assert not torch.allclose(start + first.delta + fresh.delta, get_flat(reference), atol=1e-4)
    assert second.optimizer_state is not None and fresh.optimizer_state is None


def test_central_run_carries_momentum_across_epochs_and_resumes_it(tmp_path):
    raw = {"mode": "central", "data": {"name": "digits"}, "model": {"name": "mlp", "hidden": [32]},
           "train": {"epochs": 4, "batch_size": 64, "lr": 0.05, "momentum": 0.9}}
    full = run(parse_spec(raw), output_dir=tmp_path / "a")
    interrupted = run_and_interrupt(raw, tmp_path / "b", after_round=2)
    resumed = resume(interrupted)
    assert torch.equal(resumed.params, full.params)
    state = load_latest(full.run_dir / "checkpoints")["state"]  # type: ignore[index]
    assert set(state["optimizer_state"]) == {"param/momentum_buffer"}
    assert state["optimizer_state"]["param/momentum_buffer"].numel() == full.params.numel()


def test_sam_steps_with_the_gradient_at_the_ascended_weights():
    # One full batch: SAM's step is -lr * grad L(w + rho g / ||g||), with g = grad L(w). The reference
    # takes both gradients with torch.func, apart from the library's backward passes.
    model = init_model("mlp", (10,), 2, seed=0, hidden=(8,))
    start = get_flat(model)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 10, generator=g)
    y = (x[:, 0] > 0).long()
    names = [name for name, _ in model.named_parameters()]

    def loss(flat):
        pieces = torch.split(flat, [p.numel() for p in model.parameters()])
        weights = {n: piece.view_as(p) for n, piece, p in zip(names, pieces, model.parameters(), strict=True)}
        return torch.nn.functional.cross_entropy(torch.func.functional_call(model, weights, (x,)), y)

    lr, rho = 0.5, 0.2
    grad = torch.func.grad(loss)(start)
    expected = -lr * torch.func.grad(loss)(start + rho * grad / grad.norm())
    config = LocalTraining(epochs=1, batch_size=64, lr=lr, sam_rho=rho)
    sam = local_update(model, start, x, y, config, torch.Generator().manual_seed(1)).delta
    plain = local_update(model, start, x, y, dataclasses.replace(config, sam_rho=0.0),
                         torch.Generator().manual_seed(1)).delta
    assert torch.allclose(sam, expected, atol=1e-6)
    assert torch.allclose(plain, -lr * grad, atol=1e-6)
    assert not torch.allclose(sam, plain, atol=1e-3)


def test_sam_under_dp_fedavg_keeps_the_guarantee_and_trains_one_by_one(tmp_path):
    def go(sam_rho, vectorize="auto"):
        raw = {"name": f"sam{sam_rho}{vectorize}", "data": {"name": "breast_cancer"},
               "model": {"name": "mlp", "hidden": [8]}, "federated": {"clients": 5, "rounds": 2},
               "train": {"sam_rho": sam_rho}, "runtime": {"vectorize": vectorize},
               "privacy": {"mechanism": "dp_fedavg", "epsilon": 8.0, "delta": 1e-3, "clip": 0.5},
               "output": {"dir": str(tmp_path)}}
        return run(parse_spec(raw))
    plain, sam, sam_on = go(0.0), go(0.05), go(0.05, "on")
    # Local training is inside what the update clip bounds: the guarantee is the same object.
    assert sam.results["privacy"]["guarantees"] == plain.results["privacy"]["guarantees"]
    assert not torch.allclose(sam.params, plain.params)
    assert torch.equal(sam_on.params, sam.params)  # 'on' falls back to one by one: SAM is not vectorized


def test_sam_with_dp_sgd_is_refused():
    # DP-SGD's ascent step would use the unclipped batch gradient, outside the accounting.
    with pytest.raises(SpecError, match="train.sam_rho"):
        parse_spec({"privacy": {"mechanism": "dp_sgd", "noise_multiplier": 1.0}, "train": {"sam_rho": 0.05}})
    model = init_model("mlp", (10,), 2, seed=0, hidden=(8,))
    with pytest.raises(ValueError, match="sam_rho = 0"):
        dp_sgd_update(model, get_flat(model), torch.zeros(4, 10), torch.zeros(4, dtype=torch.long),
                      LocalTraining(sam_rho=0.05), DPSGD(1.0, 1.0, 0.5), torch.Generator())
