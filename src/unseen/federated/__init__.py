"""Federated algorithms as pure functions: client update, screening, aggregation, server optimizers."""

from unseen.federated.aggregate import RULES, aggregate, coordinate_median, krum, trimmed_mean, weighted_mean
from unseen.federated.client import ClientResult, LocalTraining, evaluate, local_update
from unseen.federated.params import get_flat, num_params, set_flat
from unseen.federated.server import OPTIMIZERS, ServerOptimizer, init_state, server_step
from unseen.federated.validate import Rejection, check_update, screen_updates

__all__ = [
    "OPTIMIZERS", "RULES", "ClientResult", "LocalTraining", "Rejection", "ServerOptimizer", "aggregate",
    "check_update", "coordinate_median", "evaluate", "get_flat", "init_state", "krum", "local_update",
    "num_params", "screen_updates", "server_step", "set_flat", "trimmed_mean", "weighted_mean",
]
