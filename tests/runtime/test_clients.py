"""Where clients train is a speed setting: vectorized, forked workers and Ray give the same run."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from unseen.errors import SpecError
from unseen.experiment import parse_spec, run
from unseen.federated import get_flat
from unseen.models import init_model

# Vectorized training sums in another order; three rounds of an MLP stay well inside this.
ATOL = 1e-5


def _run(tmp_path, name, runtime, **extra):
    raw = {"name": name, "data": {"name": "breast_cancer"}, "model": {"name": "mlp", "hidden": [16]},
           "federated": {"clients": 6, "rounds": 3, "fraction": 0.67}, "train": {"momentum": 0.5},
           "runtime": runtime, "output": {"dir": str(tmp_path)}, **extra}
    return run(parse_spec(raw))


def test_vectorized_and_forked_workers_match_the_sequential_run(tmp_path):
    base = _run(tmp_path, "seq", {"vectorize": "off"})
    vec = _run(tmp_path, "vec", {"vectorize": "on"})
    forked = _run(tmp_path, "forked", {"vectorize": "off", "workers": 2})
    both = _run(tmp_path, "both", {"vectorize": "on", "workers": 2, "chunk": 2})
    # Same code and streams; only the thread count differs (1 per worker), which may reorder float sums.
    torch.testing.assert_close(forked.params, base.params, atol=1e-6, rtol=0)
    torch.testing.assert_close(vec.params, base.params, atol=ATOL, rtol=0)
    torch.testing.assert_close(both.params, vec.params, atol=ATOL, rtol=0)
    assert [m["clients"] for m in forked.results["rounds"]] == [m["clients"] for m in base.results["rounds"]]
    start = get_flat(init_model("mlp", (30,), 2, seed=0, hidden=(16,)))
    assert (base.params - start).abs().max() > 1e-3  # it trained


def test_dp_sgd_clients_and_adversaries_behave_the_same_in_workers(tmp_path):
    extra = {"privacy": {"mechanism": "dp_sgd", "noise_multiplier": 1.0, "clip": 1.0, "delta": 1e-3},
             "federated": {"clients": 4, "rounds": 2, "adversary": {"count": 1, "kind": "noise", "factor": 5.0},
                           "max_update_norm": 50.0}}
    base = _run(tmp_path, "seq", {}, **extra)
    forked = _run(tmp_path, "forked", {"workers": 2}, **extra)
    torch.testing.assert_close(forked.params, base.params, atol=1e-6, rtol=0)
    assert forked.results["privacy"] == base.results["privacy"]
    rejected = [m["rejected"] for m in base.results["rounds"]]
    assert sum(rejected) >= 1 and rejected == [m["rejected"] for m in forked.results["rounds"]]


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install 'unseen[ray]')")
def test_ray_actors_match_the_in_process_run(tmp_path):
    base = _run(tmp_path, "local", {"vectorize": "on"})
    on_ray = _run(tmp_path, "ray", {"vectorize": "on", "backend": "ray", "workers": 2, "worker_threads": 1})
    torch.testing.assert_close(on_ray.params, base.params, atol=ATOL, rtol=0)
    assert on_ray.results["final"] == base.results["final"]


def test_runtime_settings_are_checked():
    with pytest.raises(SpecError, match="runtime.backend = 'ray'"):
        parse_spec({"runtime": {"address": "ray://head:10001"}})
    with pytest.raises(SpecError, match="cannot share a CUDA context"):
        parse_spec({"runtime": {"workers": 2, "device": "cuda"}})
