"""The experiment spec and the one place that wires a run.

An :class:`ExperimentSpec` is validated TOML (sections ``[data] [model] [train] [federated]
[privacy] [audit] [output] [runtime]`` and a ``seed``). :func:`run` turns a spec into a run folder
``<output.dir>/<name>-<timestamp>/`` holding ``spec.toml`` (the resolved spec), ``results.json``,
``checkpoints/``, ``model.pt`` and ``log.txt``; :func:`resume` continues an interrupted one.

Privacy settings live in ``[privacy]``; performance settings (threads, device, evaluation batch size)
live in ``[runtime]`` and can never change a guarantee.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import platform
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from difflib import get_close_matches
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tomli_w
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import unseen
from unseen.audit.canary import make_canaries, one_run_audit
from unseen.crypto.secagg import SecAggAbort, check_params
from unseen.data import DATASETS, Dataset, load, partition
from unseen.data.datasets import FILE_DATASET
from unseen.errors import CheckpointError, SpecError, UnseenError
from unseen.federated import LocalTraining, ServerOptimizer, evaluate, get_flat
from unseen.federated.params import set_flat, unflatten
from unseen.federated.server import DEFAULT_LR
from unseen.federated.vectorized import vectorizing_pays, why_not_vectorizable, why_not_vectorized
from unseen.models import init_model
from unseen.privacy import PrivacyGuarantee, calibrate_noise
from unseen.privacy.accounting import accountant_name
from unseen.privacy.distributed_dp import plan_distributed
from unseen.privacy.dp_fedavg import DPFedAvg
from unseen.privacy.dpsgd import DPSGD, check_model, steps_per_epoch
from unseen.report.html import write_report
from unseen.runtime.checkpoint import load_latest, save_checkpoint
from unseen.runtime.clients import default_worker_threads
from unseen.runtime.secure import SecureAggregation, secure_params
from unseen.runtime.simulation import (
    STAGES,
    Adversary,
    SimulationPlan,
    SimulationState,
    initial_state,
    simulate,
)

log = logging.getLogger("unseen")
log.propagate = False  # run logs go to the run folder's log.txt; the terminal shows progress bars

# --- The spec ---------------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PartitionSpec(_Section):
    """How training data is split across simulated clients."""

    method: Literal["iid", "dirichlet", "shards", "natural"] = "iid"
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration: smaller means more label skew")
    shards_per_client: int = Field(2, ge=1)


class DataSpec(_Section):
    name: str = "breast_cancer"
    path: str | None = Field(None, description="your CSV or Parquet file (with name = 'file')")
    target: str | None = Field(None, description="label column of your file")
    silo_column: str | None = Field(None, description="column naming the silo each row belongs to")
    test_fraction: float = Field(0.25, gt=0, lt=1)
    partition: PartitionSpec = PartitionSpec()
    samples_per_client: int | None = Field(
        None, ge=1, description="keep at most this many of each client's samples (small silos, quick sweeps)")
    features: Literal["pixels", "scattering"] = Field(
        "pixels", description="'scattering': replace images by wavelet scattering coefficients (fixed, learned "
                              "from no data, so free of privacy cost; Tramer & Boneh 2021), for DP training")

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name != FILE_DATASET and name not in DATASETS:
            near = get_close_matches(name, list(DATASETS), n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise ValueError(
                f"unknown dataset; {hint}use one of {', '.join(DATASETS)}, or 'file' with path and target "
                f"for your own CSV/Parquet"
            )
        return name

    @model_validator(mode="after")
    def _file_fields(self) -> DataSpec:
        if self.name == FILE_DATASET and (self.path is None or self.target is None):
            raise ValueError("name = 'file' needs both path (a CSV or Parquet file) and target (its label column)")
        if self.name != FILE_DATASET and (self.path or self.target or self.silo_column):
            raise ValueError(f"path/target/silo_column are for your own file: set name = 'file' (not {self.name!r})")
        return self


class ModelSpec(_Section):
    name: Literal["logreg", "mlp", "lenet", "cnn", "dp_cnn", "he_cnn", "scatter_cnn", "scatter_small", "scatter_linear"] = "logreg"
    hidden: list[int] = Field(default_factory=lambda: [200, 200], description="MLP hidden layer widths")

    @field_validator("hidden")
    @classmethod
    def _positive(cls, hidden: list[int]) -> list[int]:
        if any(h < 1 for h in hidden):
            raise ValueError("every hidden layer width must be >= 1")
        return hidden


class TrainSpec(_Section):
    """Local training: per round for federated runs, in total for central runs."""

    epochs: int = Field(1, ge=1, description="local epochs per round (federated) or total epochs (central)")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["sgd", "adamw"] = Field("sgd", description="the clients' (or central) optimizer")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="cosine: the learning rate decays to 0 over the rounds (epochs, centrally)")
    augment: Literal["none", "shift"] = Field(
        "none", description="shift: translate each image batch by up to 2 pixels (image datasets)")
    sam_rho: float = Field(0.0, ge=0, le=10, description=(
        "sharpness-aware minimization (Foret et al. 2021): each step's gradient is taken at the weights moved "
        "this far along the normalized batch gradient; 0 turns it off. Under dp_fedavg it finds flatter minima, "
        "which the server's noise disturbs less (DP-FedSAM, Shi et al. 2023)"))
    eval_every: int = Field(1, ge=1, description="evaluate on the test set every this many rounds")


class AdversarySpec(_Section):
    """Simulated malicious clients (clients 0 .. count-1), to test defences."""

    count: int = Field(0, ge=0)
    kind: Literal["scale", "nan", "wrong_shape", "noise"] = "scale"
    factor: float = 10.0


class FederatedSpec(_Section):
    clients: int | None = Field(None, ge=1, description="default: the number of natural silos, else 5")
    rounds: int = Field(10, ge=1)
    fraction: float = Field(1.0, gt=0, le=1, description="fraction of clients sampled each round")
    algorithm: Literal["fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad"] = "fedavg"
    prox_mu: float = Field(0.01, ge=0, description="FedProx proximal weight")
    server_lr: float | None = Field(None, gt=0, description="default: 1.0 for fedavg/fedprox, 0.01 for adaptive")
    server_momentum: float = Field(0.0, ge=0, lt=1, description="fedavg/fedprox: heavy-ball momentum of the server "
                                   "step (FedAvgM, Hsu et al. 2019); adaptive algorithms use beta1")
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.99, ge=0, lt=1)
    tau: float = Field(1e-3, gt=0)
    aggregation: Literal["mean", "median", "trimmed_mean", "krum", "multi_krum"] = "mean"
    trim_fraction: float = Field(0.1, ge=0, lt=0.5)
    byzantine: int = Field(0, ge=0, description="attackers Krum assumes")
    max_update_norm: float | None = Field(None, gt=0, description="reject updates with a larger L2 norm")
    max_norm_ratio: float | None = Field(100.0, gt=1, description="reject updates this many times the median norm")
    dropout: float = Field(0.0, ge=0, lt=1, description="simulated fraction of each round's clients that vanish "
                           "after training")
    adversary: AdversarySpec = AdversarySpec()


class VerticalSpec(_Section):
    """Vertical federated learning (mode = "vertical"): parties hold different columns of the same people."""

    parties: list[list[str]] = Field(default_factory=list, description=(
        "each party's columns of the table (source columns: a categorical column brings all its one-hot "
        "columns); party 0 also holds the labels"))
    overlap: float = Field(1.0, gt=0, le=1, description=(
        "the fraction of the training people each party holds, drawn independently per party; private set "
        "intersection finds the people all parties hold, and only they are trained on"))
    embedding: int = Field(16, ge=1, description="width of each party's embedding at the cut layer")
    bottom_hidden: list[int] = Field(default_factory=lambda: [32], description="hidden widths of each party's bottom MLP")
    top_hidden: list[int] = Field(default_factory=lambda: [32], description="hidden widths of the label party's top MLP")

    @field_validator("bottom_hidden", "top_hidden")
    @classmethod
    def _positive(cls, hidden: list[int]) -> list[int]:
        if any(h < 1 for h in hidden):
            raise ValueError("every hidden layer width must be >= 1")
        return hidden


class PrivacySpec(_Section):
    """Privacy mechanisms: record-level DP-SGD, user-level DP-FedAvg, or none.

    Give a target ``epsilon`` (the noise is calibrated to spend it over the planned steps), or a
    ``noise_multiplier`` (then ``epsilon``, if set, is a budget: the run stops cleanly before a
    round that would exceed it).
    """

    mechanism: Literal["none", "dp_sgd", "dp_fedavg", "randomized_response"] = Field("none", description=(
        "randomized_response: label DP for vertical runs, each training label randomized once at epsilon"))
    epsilon: float | None = Field(None, gt=0, description="target or budget epsilon")
    delta: float | None = Field(None, gt=0, lt=1, description="default: min(1e-5, 1 / (10 n))")
    noise_multiplier: float | None = Field(None, gt=0)
    clip: float = Field(1.0, gt=0, description="per-record gradient clip (dp_sgd) or per-client update clip (dp_fedavg)")
    adaptive_clip: bool = Field(False, description="dp_fedavg: track a quantile of update norms (Andrew et al. 2021)")
    augmentation_multiplicity: int = Field(
        1, ge=1, le=9, description="dp_sgd, central, images: each record's gradient is the mean over this many fixed "
        "views (the image and its one-pixel shifts), clipped once (De et al. 2022); the guarantee is unchanged")
    target_quantile: float = Field(0.5, gt=0, lt=1)
    clip_lr: float = Field(0.2, gt=0)
    accountant: Literal["pld", "rdp"] = "pld"
    secure_rng: bool = Field(False, description="draw DP noise from the OS CSPRNG instead of the seeded PRNG")
    after_queries: str | None = Field(None, description="queries.json of DP statistics already released on the same "
                                      "people (unseen query --output): their epsilon comes off privacy.epsilon")
    secure_aggregation: Literal["none", "secagg", "secagg+", "ckks"] = Field(
        "none", description="hide each client's update from the server: pairwise masking (secagg, secagg+) or CKKS")
    noise_at: Literal["server", "clients"] = Field(
        "server", description="dp_fedavg: the server adds the noise, or each client adds a share of it under secure "
        "aggregation (distributed discrete Gaussian)")
    min_survivor_fraction: float = Field(0.9, gt=0, le=1, description="distributed DP: noise is calibrated for "
                                         "this fraction of a round's clients finishing; fewer abort the round")
    secagg_clip: float = Field(10.0, gt=0, description="L2 bound clients clip their update to before secure "
                               "aggregation (dp_fedavg uses privacy.clip)")
    secagg_bits: int = Field(32, ge=8, le=62, description="modulus 2^bits of the masked integers")
    secagg_neighbours: int | None = Field(None, ge=2, description="secagg+: neighbours per client (default ~3 log2 n)")
    secagg_threshold: int | None = Field(None, ge=2, description="shares needed to recover a client's masks "
                                         "(default: two thirds of neighbours + 1)")


class AuditSpec(_Section):
    """Attacks run on the finished model; results land in results.json and the report."""

    attacks: list[Literal["loss", "margin", "rmia", "lira", "lira_offline", "gradient_inversion", "pgd"]] = Field(
        default_factory=list, description="membership inference attacks on the final model; gradient inversion "
        "of round 1's client updates")
    inversion_clients: int = Field(1, ge=1, description="gradient_inversion: round-1 clients whose update is attacked")
    inversion_images: int = Field(4, ge=1, le=64, description="gradient_inversion: images reconstructed per update")
    inversion_steps: int = Field(500, ge=10, description="gradient_inversion: attack optimisation steps")
    references: int = Field(2, ge=1, le=64, description="reference models for rmia and lira")
    max_records: int = Field(2000, ge=10, description="members and non-members scored per attack")
    canaries: int = Field(0, ge=0, description="mislabelled canaries planted, each with probability 1/2, for a "
                          "one-run audit of the privacy guarantee (Steinke et al. 2023)")


class OutputSpec(_Section):
    dir: str = "runs"
    checkpoint_every: int = Field(1, ge=1)
    keep_checkpoints: int = Field(2, ge=1)


class RuntimeSpec(_Section):
    """Performance settings: they never change a privacy guarantee, only speed (and float rounding)."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1)
    eval_batch_size: int = Field(2048, ge=1)
    grad_sample_mode: Literal["auto", "bk", "ghost", "hooks", "functorch", "ew"] = Field(
        "auto", description="how DP-SGD gets per-sample clipped gradients: bk (one backward pass, Linear/Conv2d "
                            "models), Opacus's ghost / hooks / functorch / ew; auto = bk where it applies, else ghost")
    vectorize: Literal["auto", "on", "off"] = Field(
        "auto", description="train a round's clients together with torch.func (auto: on a GPU, and on a CPU for "
                            "small dense models, where it is measured faster; see docs/performance.md)")
    chunk: int = Field(16, ge=1, description="clients per vectorized call: lower it to bound memory")
    workers: int = Field(1, ge=1, description="processes (or Ray actors) that train slices of each round in parallel")
    worker_threads: int | None = Field(None, ge=1, description="torch threads per worker (default: cores / workers)")
    backend: Literal["local", "ray"] = "local"
    address: str | None = Field(None, description="Ray cluster address for backend = 'ray' (default: a local Ray)")

    @model_validator(mode="after")
    def _runner(self) -> RuntimeSpec:
        if self.address is not None and self.backend != "ray":
            raise ValueError("runtime.address is the Ray cluster address: set runtime.backend = 'ray' too")
        if self.workers > 1 and self.device == "cuda":
            raise ValueError("runtime.workers > 1 forks processes, which cannot share a CUDA context: "
                             "use runtime.workers = 1 on a GPU (vectorized clients use it well)")
        return self


class ExperimentSpec(_Section):
    """A whole experiment. Every field has a default: an empty spec trains the demo."""

    name: str = Field("experiment", pattern=r"^[A-Za-z0-9_.-]+$")
    mode: Literal["federated", "central", "vertical"] = "federated"
    seed: int = Field(0, ge=0)
    data: DataSpec = DataSpec()
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    federated: FederatedSpec = FederatedSpec()
    vertical: VerticalSpec = VerticalSpec()
    privacy: PrivacySpec = PrivacySpec()
    audit: AuditSpec = AuditSpec()
    output: OutputSpec = OutputSpec()
    runtime: RuntimeSpec = RuntimeSpec()

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentSpec:
        if self.mode == "vertical":
            return self._vertical()
        if self.vertical.parties:
            raise ValueError("[vertical] parties are for mode = 'vertical': set mode = 'vertical', or remove them")
        if self.privacy.mechanism == "randomized_response":
            raise ValueError("privacy.mechanism = 'randomized_response' (label DP) applies to mode = 'vertical', where "
                             "the labels are what one party holds; use dp_sgd or dp_fedavg here")
        fed = self.federated
        has_silos = (self.data.silo_column is not None if self.data.name == FILE_DATASET
                     else DATASETS[self.data.name].silos)
        if self.data.partition.method == "natural" and not has_silos:
            raise ValueError(
                f"data.partition.method = 'natural' needs silos, and {self.data.name!r} has none: use a dataset "
                f"with silos (heart_disease, femnist), set data.silo_column for your own file, or use 'iid'"
            )
        if fed.aggregation in ("krum", "multi_krum") and fed.clients is not None:
            per_round = max(1, round(fed.fraction * fed.clients))
            if per_round <= 2 * fed.byzantine + 2:
                raise ValueError(
                    f"federated.aggregation = {fed.aggregation!r} needs more than 2 * byzantine + 2 = "
                    f"{2 * fed.byzantine + 2} clients per round, but {per_round} are sampled: raise "
                    f"federated.clients or federated.fraction, or lower federated.byzantine"
                )
        priv = self.privacy
        if priv.mechanism != "none":
            if priv.epsilon is None and priv.noise_multiplier is None:
                raise ValueError(f"privacy.mechanism = {priv.mechanism!r} needs privacy.epsilon (a target, the noise "
                                 f"is calibrated) or privacy.noise_multiplier")
            if priv.epsilon is not None and math.isinf(priv.epsilon):
                raise ValueError("privacy.epsilon = inf means no privacy: set privacy.mechanism = 'none' instead")
        if priv.mechanism == "dp_fedavg":
            if self.mode == "central":
                raise ValueError("privacy.mechanism = 'dp_fedavg' protects clients of a federated run: set "
                                 "mode = 'federated', or use 'dp_sgd' for central training")
            if fed.aggregation != "mean":
                raise ValueError(f"privacy.mechanism = 'dp_fedavg' needs federated.aggregation = 'mean' (its noise "
                                 f"is calibrated to the clipped sum), not {fed.aggregation!r}")
        if priv.mechanism == "dp_sgd" and self.train.augment != "none":
            raise ValueError("privacy.mechanism = 'dp_sgd' with train.augment is not supported yet: set train.augment "
                             "= 'none'")
        if priv.mechanism == "dp_sgd" and self.train.sam_rho:
            raise ValueError("privacy.mechanism = 'dp_sgd' with train.sam_rho: SAM's ascent step uses the unclipped "
                             "batch gradient, which DP-SGD's accounting does not cover. Set train.sam_rho = 0 (under "
                             "dp_fedavg, SAM in local training is covered by the client's update clip)")
        if priv.mechanism == "dp_sgd" and self.train.optimizer != "sgd":
            raise ValueError(f"privacy.mechanism = 'dp_sgd' runs DP-SGD: set train.optimizer = 'sgd' (not "
                             f"{self.train.optimizer!r}); DP-Adam is not supported yet")
        if priv.mechanism == "dp_sgd" and fed.algorithm == "fedprox" and self.mode == "federated":
            raise ValueError("privacy.mechanism = 'dp_sgd' with federated.algorithm = 'fedprox' is not supported yet: "
                             "use fedavg, fedadam or fedyogi")
        if priv.secure_aggregation != "none":
            if self.mode == "central":
                raise ValueError("privacy.secure_aggregation hides client updates in federated runs: set "
                                 "mode = 'federated', or privacy.secure_aggregation = 'none'")
            if fed.aggregation != "mean":
                raise ValueError(f"federated.aggregation = {fed.aggregation!r} needs every update in the clear, which "
                                 f"privacy.secure_aggregation = {priv.secure_aggregation!r} hides: use aggregation = "
                                 "'mean' (server optimizers such as fedadam still apply)")
            if priv.adaptive_clip:
                raise ValueError("privacy.adaptive_clip needs each client's clipping bit, which secure aggregation "
                                 "hides: set privacy.adaptive_clip = false")
        if priv.noise_at == "clients" and (priv.mechanism != "dp_fedavg"
                                           or priv.secure_aggregation not in ("secagg", "secagg+")):
            raise ValueError("privacy.noise_at = 'clients' (distributed DP) needs privacy.mechanism = 'dp_fedavg' and "
                             "privacy.secure_aggregation = 'secagg' or 'secagg+' (the sum must hide each share of noise)")
        if priv.augmentation_multiplicity > 1:
            if priv.mechanism != "dp_sgd" or self.mode != "central":
                raise ValueError("privacy.augmentation_multiplicity applies to central DP-SGD: set mode = 'central' and "
                                 "privacy.mechanism = 'dp_sgd', or leave it at 1")
            if self.runtime.grad_sample_mode not in ("auto", "bk"):
                raise ValueError("privacy.augmentation_multiplicity needs runtime.grad_sample_mode = 'auto' or 'bk' "
                                 f"(unseen's one-pass clipping), not {self.runtime.grad_sample_mode!r}")
            if self.audit.canaries or self.audit.attacks:
                raise ValueError("privacy.augmentation_multiplicity with [audit] canaries or attacks is not supported "
                                 "yet: audit a run with multiplicity 1")
        if priv.adaptive_clip and priv.mechanism != "dp_fedavg":
            raise ValueError("privacy.adaptive_clip applies to privacy.mechanism = 'dp_fedavg' only")
        if fed.server_momentum and fed.algorithm not in ("fedavg", "fedprox"):
            raise ValueError(f"federated.server_momentum applies to fedavg and fedprox (FedAvgM); {fed.algorithm} "
                             "has its own first moment: set federated.beta1 instead, or server_momentum = 0")
        if fed.adversary.count and fed.clients is not None and fed.adversary.count > fed.clients:
            raise ValueError(f"federated.adversary.count = {fed.adversary.count} exceeds federated.clients = {fed.clients}")
        return self


    def _vertical(self) -> ExperimentSpec:
        if len(self.vertical.parties) < 2:
            raise ValueError("mode = 'vertical' needs vertical.parties: two or more lists of columns, e.g. "
                             "[[\"age\", \"sex\"], [\"occupation\"]] (party 0 holds the labels too)")
        priv = self.privacy
        if priv.mechanism == "randomized_response" and (priv.epsilon is None or priv.noise_multiplier is not None):
            raise ValueError("privacy.mechanism = 'randomized_response' needs privacy.epsilon (the label-DP epsilon) "
                             "and no privacy.noise_multiplier")
        unsupported = {
            "privacy.mechanism": priv.mechanism not in ("none", "randomized_response"),
            "privacy.secure_aggregation": self.privacy.secure_aggregation != "none",
            "audit.attacks": bool(self.audit.attacks),
            "train.optimizer": self.train.optimizer != "sgd", "train.sam_rho": bool(self.train.sam_rho),
            "train.augment": self.train.augment != "none",
            "data.features": self.data.features != "pixels",
        }
        bad = [k for k, v in unsupported.items() if v]
        if bad:
            raise ValueError(f"mode = 'vertical' does not support {', '.join(bad)} yet: leave them at their defaults "
                             "(vertical runs always measure label leakage; privacy.mechanism may be "
                             "'randomized_response', label DP)")
        return self


# --- Loading specs, with errors a person can act on -------------------------------------------

_FIX = {
    "greater_than": "use a value greater than {gt}",
    "greater_than_equal": "use a value of at least {ge}",
    "less_than": "use a value less than {lt}",
    "less_than_equal": "use a value of at most {le}",
    "int_parsing": "write a whole number, e.g. 10",
    "int_type": "write a whole number, e.g. 10",
    "int_from_float": "write a whole number, e.g. 10",
    "float_parsing": "write a number, e.g. 0.1",
    "float_type": "write a number, e.g. 0.1",
    "bool_parsing": "write true or false",
    "string_type": "write a quoted string",
    "list_type": "write a list, e.g. [1, 2]",
    "model_type": "write a table (a [section])",
    "literal_error": "use one of {expected}",
    "string_pattern_mismatch": "use only letters, digits, '_', '.' and '-'",
}


def _section_fields(loc: tuple[Any, ...]) -> list[str]:
    """The valid keys of the spec section at ``loc`` (for suggesting the nearest one to a typo)."""
    cls: Any = ExperimentSpec
    for part in loc:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        cls = field.annotation
    return list(cls.model_fields)


def format_validation_error(exc: ValidationError) -> str:
    """One paragraph per problem: the field, the value, the rule and the fix."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or "spec"
        got = err.get("input")
        ctx = err.get("ctx") or {}
        kind = err["type"]
        if kind == "extra_forbidden":
            valid = _section_fields(loc[:-1])
            near = get_close_matches(str(loc[-1]), valid, n=1)
            section = ".".join(str(p) for p in loc[:-1]) or "the top level"
            fix = f"did you mean {'.'.join([*map(str, loc[:-1]), near[0]])!r}?" if near else "remove it"
            lines.append(f"{where}: unknown key in {section}. Fix: {fix} Valid keys there: {', '.join(valid)}.")
            continue
        if kind == "missing":
            lines.append(f"{where}: required but missing. Fix: add it.")
            continue
        message = err["msg"].removeprefix("Value error, ")
        fix = _FIX.get(kind, "").format(**{k: v for k, v in ctx.items()})
        shown = repr(got) if not isinstance(got, dict) else "a table"
        lines.append(f"{where} = {shown}: {message}." + (f" Fix: {fix}." if fix else ""))
    count = len(lines)
    head = "The spec has 1 problem:" if count == 1 else f"The spec has {count} problems:"
    return head + "\n" + "\n".join(f"  - {line}" for line in lines)


def parse_spec(raw: dict[str, Any]) -> ExperimentSpec:
    """Validate a spec given as nested dicts (as parsed from TOML)."""
    try:
        return ExperimentSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc)) from None


def _parse_value(text: str) -> Any:
    """A --set value: TOML syntax when it parses (numbers, booleans, lists), else a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (as given to ``--set``) to a raw spec dict, in place."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--set {item!r}: write --set section.key=value, e.g. --set federated.rounds=20.")
        set_path(raw, key.strip(), _parse_value(value.strip()))
    return raw


def set_path(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set ``raw["a"]["b"] = value`` for ``key = "a.b"``, creating sections as needed."""
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SpecError(f"{key!r}: {part!r} is a value, not a section.")
        node = child
    node[parts[-1]] = value


def load_spec(path: str | Path | None = None, overrides: Iterable[str] = ()) -> ExperimentSpec:
    """Read a TOML spec (or start from the defaults when ``path`` is None) and apply ``--set`` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise SpecError(f"spec file {str(path)!r} does not exist. Give the path of a TOML spec (see examples/).")
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise SpecError(f"{path} is not valid TOML: {exc}. Fix the syntax at that line.") from None
    return parse_spec(apply_overrides(raw, overrides))


def spec_to_toml(spec: ExperimentSpec) -> str:
    return tomli_w.dumps(spec.model_dump(mode="json", exclude_none=True))


# --- Wiring a run -----------------------------------------------------------------------------


@dataclass
class RunResult:
    """What :func:`run` returns: the run folder, the results (as in results.json) and the final weights."""

    run_dir: Path
    results: dict[str, Any]
    params: torch.Tensor

    @property
    def accuracy(self) -> float:
        return float(self.results["final"]["test_accuracy"])


@dataclass
class Hooks:
    """Optional callbacks, e.g. for progress bars: ``on_start(total_rounds, done_rounds)``,
    ``on_round(metrics)``, ``on_client(done, total)``."""

    on_start: Callable[[int, int], None] | None = None
    on_round: Callable[[dict[str, Any]], None] | None = None
    on_client: Callable[[int, int], None] | None = None


def select_device(setting: str) -> torch.device:
    if setting == "cuda" and not torch.cuda.is_available():
        raise SpecError("runtime.device = 'cuda' but no CUDA device is available here. Use 'auto' or 'cpu'.")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def load_dataset(spec: ExperimentSpec) -> Dataset:
    d = spec.data
    dataset = load(d.name, path=d.path, target=d.target, silo_column=d.silo_column,
                   test_fraction=d.test_fraction, seed=spec.seed)
    if d.features == "scattering":
        from unseen.data.scattering import scattering_dataset

        dataset = scattering_dataset(dataset)
    return dataset


def _training_views(spec: ExperimentSpec, dataset: Dataset) -> np.ndarray:
    """(n, k, *input_shape): each training image and its one-pixel shifts, as the model sees them."""
    from unseen.data.views import shifted_views

    d = spec.data
    if len(dataset.input_shape) != 3:
        raise SpecError(f"privacy.augmentation_multiplicity shifts images; {d.name} has tabular features. Leave it at 1.")
    images = dataset.train.x
    if d.features == "scattering":  # the loaded dataset holds features: shift the images they came from
        images = load(d.name, path=d.path, target=d.target, silo_column=d.silo_column, test_fraction=d.test_fraction,
                      seed=spec.seed).train.x
    return shifted_views(images, spec.privacy.augmentation_multiplicity, d.features)


def _num_clients(spec: ExperimentSpec, dataset: Dataset) -> int:
    if spec.mode == "central":
        return 1
    if spec.federated.clients is not None:
        return spec.federated.clients
    if spec.data.partition.method == "natural" and dataset.silo_names:
        return len(dataset.silo_names)
    return 5


def default_delta(n: int) -> float:
    """Default delta: well below 1/n, so that no mechanism may simply publish one record."""
    return min(1e-5, 1 / (10 * n))


def _check_delta(delta: float, n: int, unit: str) -> None:
    if delta >= 1 / n:
        raise SpecError(
            f"privacy.delta = {delta:g} is not below 1/n = 1/{n} ({unit}s): a delta that large permits publishing "
            f"a whole {unit}. Use at most {default_delta(n):.2g} (or leave it unset for that default)."
        )


def _with_prior(plan: SimulationPlan, guarantees: list[PrivacyGuarantee]) -> list[PrivacyGuarantee]:
    """Say in each guarantee that its ledger also holds DP statistics released before (their epsilon
    is already inside: basic composition with the training's accounting)."""
    if not plan.prior_epsilon:
        return guarantees
    return [dataclasses.replace(g, mechanism=f"{g.mechanism}; includes DP statistics of epsilon "
                                               f"{plan.prior_epsilon:.4g} released before (one ledger)")
            if g.is_formal else g for g in guarantees]


def _noise_source(priv: PrivacySpec) -> str:
    return "OS CSPRNG" if priv.secure_rng else "seeded PRNG (reproducible; not for production)"


def _privacy_guarantees(spec: ExperimentSpec, plan: SimulationPlan, state: SimulationState) -> list[PrivacyGuarantee]:
    priv = spec.privacy
    noise_source = _noise_source(priv)
    if plan.dp_fedavg is not None and plan.budget is not None and plan.dp_fedavg.distributed:
        dp, delta, secure = plan.dp_fedavg, plan.budget[1], plan.secure
        ledger = state.ledgers["user"]
        survivors = max(1, math.ceil(secure.min_survivor_fraction * plan.clients_per_round))  # type: ignore[union-attr]
        return [PrivacyGuarantee(
            mechanism=f"Distributed DP-FedAvg: each client adds discrete Gaussian noise under {secure.backend} "  # type: ignore[union-attr]
                      "(Kairouz et al. 2021)",
            unit="user", epsilon=ledger.epsilon(delta), delta=delta, noise_multiplier=dp.noise_multiplier,
            clipping_bound=dp.clip, sampling="none claimed (fixed-size client sample, no amplification)",
            sampling_rate=1.0, steps=ledger.steps,
            accountant="dp-accounting RDP of the distributed discrete Gaussian's zCDP bound", noise_source=noise_source,
            threat_model=(
                "No party is trusted with the noise: the server sees only the noisy sum of clipped updates, and it "
                "and anyone who sees the models learn at most (epsilon, delta)-bounded information about whether any "
                f"one client took part. Holds in every round where at least {survivors} of "
                f"{plan.clients_per_round} clients finish; a round with fewer is aborted and releases nothing."))]
    if plan.dp_fedavg is not None and plan.budget is not None:
        dp, delta = plan.dp_fedavg, plan.budget[1]
        ledger = state.ledgers["user"]
        return [PrivacyGuarantee(
            mechanism="DP-FedAvg: clipped client updates, Gaussian noise at the server" + (
                ", adaptive clipping" if dp.adaptive else ""),
            unit="user", epsilon=ledger.epsilon(delta), delta=delta, noise_multiplier=dp.noise_multiplier,
            clipping_bound=state.clip if dp.adaptive else dp.clip, sampling="poisson", sampling_rate=dp.client_rate,
            steps=ledger.steps, accountant=accountant_name(plan.accountant), noise_source=noise_source,
            threat_model=("Anyone who sees the global models (every round's or the final one) learns at most "
                          "(epsilon, delta)-bounded information about whether any one client took part, whatever "
                          "its data. The server is trusted to add the noise and " + (
                              "sees only the sum of clipped updates (secure aggregation)." if plan.secure else
                              "sees each client's clipped update in the clear (no secure aggregation).")))]
    if plan.dp_sgd is not None and plan.budget is not None:
        delta = plan.budget[1]
        central = spec.mode == "central"
        out = []
        for c in range(len(plan.clients)):
            ledger = state.ledgers[str(c)]
            q = plan.client_dp_rates[c] if plan.client_dp_rates else plan.dp_sgd.sampling_rate
            out.append(PrivacyGuarantee(
                mechanism="DP-SGD (Opacus): per-record gradient clipping, Gaussian noise",
                unit="record", epsilon=ledger.epsilon(delta), delta=delta,
                noise_multiplier=plan.dp_sgd.noise_multiplier, clipping_bound=plan.dp_sgd.max_grad_norm,
                sampling="poisson", sampling_rate=q, steps=ledger.steps, accountant=accountant_name(plan.accountant),
                noise_source=noise_source, scope=None if central else f"client {c}",
                threat_model=(
                    "Anyone who sees the trained model (or every intermediate one) learns at most (epsilon, delta)-"
                    "bounded information about any single training record; the trainer itself sees the data."
                    if central else
                    f"Client {c}'s records never leave it; anyone who sees its updates or the global models, the "
                    f"server included, learns at most (epsilon, delta)-bounded information about any one of them.")))
        return out
    if spec.mode == "central":
        threat = ("Training data is pooled in one place and the model is trained on it in the clear; anyone "
                  "holding the model can attempt membership inference or model inversion.")
    elif plan.secure is not None:
        threat = ("Records never leave their client and the server sees only the sum of each round's updates "
                  f"({plan.secure.backend}); the sum and the model can still leak training records (membership "
                  "inference, inversion of small sums).")
    else:
        threat = ("Records never leave their client, but the server sees each client's model update in the "
                  "clear; updates can leak training records (gradient inversion, membership inference).")
    return [PrivacyGuarantee.none(
        reason="no differential privacy mechanism is configured (privacy.mechanism = 'none')",
        threat_model=threat)]


def _prior_queries_epsilon(path: str) -> float:
    """The epsilon a saved DP query session spent (queries.json from ``unseen query --output``)."""
    file = Path(path)
    if file.is_dir():
        file = file / "queries.json"
    if not file.is_file():
        raise SpecError(f"privacy.after_queries = {path!r}: no queries.json there. Write one with "
                        "`unseen query SPEC.toml --output DIR`.")
    guarantee = json.loads(file.read_text())["guarantee"]
    if guarantee.get("delta"):
        raise SpecError(f"privacy.after_queries = {path!r}: that session already includes a model (delta > 0); "
                        "compose at most one model with one query session.")
    return float(guarantee["epsilon"])


def _configure_privacy(spec: ExperimentSpec, plan: SimulationPlan, parts: list[np.ndarray]) -> None:
    """Calibrate and attach the DP mechanism of the spec to ``plan``; refuse configs that would be wrong."""
    priv = spec.privacy
    if priv.mechanism == "none":
        if priv.after_queries:
            raise SpecError("privacy.after_queries shares a budget with a DP model: set privacy.mechanism too")
        return
    plan.accountant = priv.accountant
    target = priv.epsilon
    if priv.after_queries:
        plan.prior_epsilon = _prior_queries_epsilon(priv.after_queries)
        if priv.epsilon is None or priv.epsilon <= plan.prior_epsilon:
            raise SpecError(f"privacy.after_queries already spent epsilon {plan.prior_epsilon:.4g}: privacy.epsilon "
                            f"(the whole budget) must be larger, got {priv.epsilon}")
        target = priv.epsilon - plan.prior_epsilon
    if priv.mechanism == "dp_sgd":
        check_model(plan.model)
        sizes = [len(p) for p in parts]
        rates = [min(1.0, spec.train.batch_size / n) for n in sizes]
        n_min, q_max = min(sizes), max(rates)
        delta = priv.delta if priv.delta is not None else default_delta(n_min)
        _check_delta(delta, n_min, "record")
        steps = plan.rounds * plan.local.epochs * steps_per_epoch(q_max)
        noise = priv.noise_multiplier or calibrate_noise(target, delta, q_max, steps, priv.accountant)  # type: ignore[arg-type]
        plan.dp_sgd = DPSGD(noise, priv.clip, q_max, priv.secure_rng, spec.runtime.grad_sample_mode,
                            copies=priv.augmentation_multiplicity)
        plan.client_dp_rates = rates
    else:
        n = len(parts)
        delta = priv.delta if priv.delta is not None else default_delta(n)
        _check_delta(delta, n, "client")
        q = spec.federated.fraction
        distributed = priv.noise_at == "clients"
        if distributed:  # the zCDP bound composes on RDP; no amplification by client sampling is claimed
            plan.accountant = "rdp"
        noise = priv.noise_multiplier or calibrate_noise(target, delta, 1.0 if distributed else q,  # type: ignore[arg-type]
                                                         plan.rounds, plan.accountant)
        accounted = None
        if distributed:
            dim = int(get_flat(plan.model).numel())
            dd, _ = plan_distributed(noise, priv.clip, dim, plan.clients_per_round,
                                     max(1, math.ceil(priv.min_survivor_fraction * plan.clients_per_round)),
                                     priv.secagg_bits)
            accounted = dd.equivalent_noise_multiplier
        plan.dp_fedavg = DPFedAvg(noise, priv.clip, q, n, priv.adaptive_clip, priv.target_quantile, priv.clip_lr,
                                  secure_rng=priv.secure_rng, distributed_noise_multiplier=accounted)
        _ = plan.dp_fedavg.update_noise_multiplier  # fails now, not mid-run, if adaptive clipping cannot work
    # Without a target the epsilon is only reported; with one it is also a budget.
    plan.budget = (priv.epsilon if priv.epsilon is not None else math.inf, delta)  # the ledger holds the prior too
    log.info("privacy: %s, noise multiplier %.4g, delta %.2g", priv.mechanism, noise, delta)


def build_plan(spec: ExperimentSpec, dataset: Dataset, device: torch.device) -> tuple[SimulationPlan, list[np.ndarray]]:
    """Turn a spec and a loaded dataset into a simulation plan and the client index arrays."""
    n_clients = _num_clients(spec, dataset)
    if spec.mode == "central":
        parts = [np.arange(len(dataset.train))]
    else:
        p = spec.data.partition
        parts = partition(dataset.train.y, n_clients, p.method, seed=spec.seed, alpha=p.alpha,
                          shards_per_client=p.shards_per_client, groups=dataset.train.groups)
        if spec.data.samples_per_client is not None:  # a partition is a random subset: its head is one too
            parts = [part[: spec.data.samples_per_client] for part in parts]
    x = torch.from_numpy(dataset.train.x).to(device)
    y = torch.from_numpy(dataset.train.y).to(device)
    canaries = None
    if spec.audit.canaries:
        # Canaries are training records with a wrong label; each joins a random client with probability 1/2.
        idx, wrong, included = make_canaries(y, y, dataset.n_classes, spec.audit.canaries, spec.seed)
        taken = set(idx.tolist())
        parts = [np.array([i for i in p if i not in taken], dtype=np.int64) for p in parts]
        homes = np.random.default_rng([spec.seed, 0xCA8]).integers(0, len(parts), size=len(idx))
        canaries = (x[torch.from_numpy(idx).to(device)], wrong, included, homes)
    clients = [(x[torch.from_numpy(idx).to(device)], y[torch.from_numpy(idx).to(device)]) for idx in parts]
    if spec.privacy.augmentation_multiplicity > 1:  # central: one client holding every record, in order
        clients = [(torch.from_numpy(_training_views(spec, dataset)).to(device), clients[0][1])]
    if canaries is not None:
        cx, wrong, included, homes = canaries
        for c in range(len(clients)):
            mine = torch.from_numpy(included & (homes == c)).to(device)
            clients[c] = (torch.cat([clients[c][0], cx[mine]]), torch.cat([clients[c][1], wrong[mine]]))
    model = init_model(spec.model.name, dataset.input_shape, dataset.n_classes, seed=spec.seed,
                       hidden=tuple(spec.model.hidden)).to(device)
    if spec.train.augment == "shift" and len(dataset.input_shape) != 3:
        raise SpecError(f"train.augment = 'shift' translates images; {dataset.name} has {len(dataset.input_shape)}-d "
                        f"features: set train.augment = 'none'")
    fed = spec.federated
    central = spec.mode == "central"
    kind = {"fedadam": "adam", "fedyogi": "yogi", "fedadagrad": "adagrad"}.get(fed.algorithm, "sgd")
    if central:  # one client holding all data, applied with lr 1: plain minibatch SGD
        server = ServerOptimizer("sgd", 1.0)
    else:
        server = ServerOptimizer(kind, fed.server_lr or DEFAULT_LR[kind], fed.beta1, fed.beta2, fed.tau,
                                 fed.server_momentum)
    local = LocalTraining(
        epochs=1 if central else spec.train.epochs, batch_size=spec.train.batch_size, lr=spec.train.lr,
        momentum=spec.train.momentum, weight_decay=spec.train.weight_decay,
        prox_mu=fed.prox_mu if fed.algorithm == "fedprox" and not central else 0.0,
        optimizer=spec.train.optimizer, augment=spec.train.augment, sam_rho=spec.train.sam_rho,
    )
    per_round = n_clients if central else max(1, round(fed.fraction * n_clients))
    if not central and fed.aggregation in ("krum", "multi_krum") and per_round <= 2 * fed.byzantine + 2:
        raise SpecError(
            f"federated.aggregation = {fed.aggregation!r} needs more than {2 * fed.byzantine + 2} clients per "
            f"round (2 * byzantine + 2) but {per_round} are sampled: raise federated.clients or fraction.")
    adv = fed.adversary
    plan = SimulationPlan(
        model=model, clients=clients,
        test=(torch.from_numpy(dataset.test.x).to(device), torch.from_numpy(dataset.test.y).to(device)),
        local=local, server=server, rounds=spec.train.epochs if central else fed.rounds,
        clients_per_round=per_round, seed=spec.seed, rule="mean" if central else fed.aggregation,
        trim_fraction=fed.trim_fraction, byzantine=fed.byzantine,
        max_update_norm=None if central else fed.max_update_norm,
        max_norm_ratio=None if central else fed.max_norm_ratio,
        adversary=Adversary(adv.count, adv.kind, adv.factor) if adv.count and not central else None,
        serialize=not central, eval_every=spec.train.eval_every, eval_batch_size=spec.runtime.eval_batch_size,
    )
    if canaries is not None:
        plan.canaries = (canaries[0], canaries[1], canaries[2], get_flat(model).detach().cpu().clone())
    _configure_privacy(spec, plan, parts)
    _configure_secure_aggregation(spec, plan, parts)
    plan.dropout = 0.0 if central else fed.dropout
    plan.lr_schedule = spec.train.lr_schedule
    plan.carry_optimizer_state = central
    _configure_runner(spec, plan)
    return plan, parts


def _configure_runner(spec: ExperimentSpec, plan: SimulationPlan) -> None:
    """Where clients train: vectorized or one by one, in this process, forked workers or Ray actors."""
    rt = spec.runtime
    why_not = why_not_vectorizable(plan.model) or why_not_vectorized(plan.local)
    if plan.dp_sgd is not None:
        why_not = "DP-SGD clients train through Opacus, one by one"
    if rt.vectorize == "on" and why_not is not None:
        log.info("runtime.vectorize = 'on' but clients train one by one: %s", why_not)
    plan.vectorize = why_not is None and (rt.vectorize == "on" or (rt.vectorize == "auto" and vectorizing_pays(
        plan.model, plan.test[0].device, plan.test[0].shape[1:])))
    plan.chunk, plan.workers, plan.backend, plan.ray_address = rt.chunk, rt.workers, rt.backend, rt.address
    plan.worker_threads = rt.worker_threads or default_worker_threads(rt.workers)
    where = "this process" if rt.workers == 1 and rt.backend == "local" else f"{rt.workers} {rt.backend} workers"
    log.info("clients train %s in %s", "vectorized" if plan.vectorize else "one by one", where)


SECURE_THREAT = {
    "secagg": ("Pairwise masking (SecAgg, Bonawitz et al. 2017): the server sees only the sum of each round's "
               "updates, even if up to n - threshold clients drop out; it and fewer than threshold colluding clients "
               "learn nothing else about one update. Semi-honest model: public keys are taken as authentic (no PKI)."),
    "secagg+": ("Pairwise masking on a sparse random graph (SecAgg+, Bell et al. 2020): the server sees only the "
                "sum of each round's updates, as long as at least threshold of every client's neighbourhood "
                "survives; semi-honest model, public keys taken as authentic (no PKI)."),
    "ckks": ("CKKS encryption (TenSEAL): the server adds ciphertexts and sees only the sum; every client holds the "
             "secret key, so a server colluding with any one client can decrypt every update."),
}


def _configure_secure_aggregation(spec: ExperimentSpec, plan: SimulationPlan, parts: list[np.ndarray]) -> None:
    """Attach the secure aggregator and refuse, before training, parameters that cannot work."""
    priv = spec.privacy
    if priv.secure_aggregation == "none":
        return
    dp = plan.dp_fedavg is not None
    distributed = dp and plan.dp_fedavg.distributed  # type: ignore[union-attr]
    plan.secure = SecureAggregation(
        priv.secure_aggregation, priv.clip if dp else priv.secagg_clip, priv.secagg_bits, priv.secagg_neighbours,
        priv.secagg_threshold, weighted=not dp, max_weight=float(max(len(p) for p in parts)),
        noise_multiplier=plan.dp_fedavg.noise_multiplier if distributed else None,  # type: ignore[union-attr]
        min_survivor_fraction=priv.min_survivor_fraction)
    expected = (max(1, round(plan.dp_fedavg.expected_clients)) if dp and not distributed  # type: ignore[union-attr]
                else plan.clients_per_round)
    if priv.secure_aggregation != "ckks":
        try:
            check_params(secure_params(plan.secure, expected, int(get_flat(plan.model).numel()) + 1, 1, spec.seed))
        except SecAggAbort as exc:
            raise SpecError(f"privacy.secure_aggregation = {priv.secure_aggregation!r} with {expected} clients per "
                            f"round: {exc}") from exc


def _canary_audit(spec: ExperimentSpec, plan: SimulationPlan, state: SimulationState) -> dict[str, Any]:
    """Score the planted canaries (drop in loss from the initial model) and bound epsilon from one run."""
    from unseen.attacks.membership import loss_scores

    cx, wrong, included, initial = plan.canaries  # type: ignore[misc]
    scores = (loss_scores(plan.model, state.params, cx, wrong) - loss_scores(plan.model, initial, cx, wrong))
    formal = [g for g in _privacy_guarantees(spec, plan, state) if g.is_formal]
    worst = max(formal, key=lambda g: g.epsilon) if formal else None
    audit = one_run_audit(scores, included, delta=worst.delta if worst else 0.0,  # type: ignore[arg-type]
                          formal_epsilon=worst.epsilon if worst else None)
    if audit.violation:
        log.error("canary audit: eps-hat %.3g exceeds the formal epsilon %.3g", audit.epsilon_lower_bound,
                  audit.formal_epsilon)
    return audit.to_dict()


def _inversion_audit(spec: ExperimentSpec, plan: SimulationPlan, dataset: Dataset) -> dict[str, Any]:
    """What a curious server reconstructs from round 1: each attacked client's update, or the secure sum.

    Round 1 starts from the seeded initial model, so its updates are recomputed exactly after the run
    (same client streams) instead of being kept during it. The attacker is strong: it knows the local
    recipe, unrolls the client's local steps when they are few, and is given the labels of the first
    ``inversion_images`` records; each of the client's records is matched with its best reconstruction.
    """
    from unseen.attacks.gradient_inversion import THREAT_MODEL as INVERSION_THREAT
    from unseen.attacks.gradient_inversion import invert_gradients, matched_psnr, psnr, ssim
    from unseen.runtime.simulation import client_generator, client_update, sample_clients

    if len(dataset.input_shape) != 3:
        return {"skipped": "gradient inversion is measured on images (PSNR); this dataset is tabular"}
    audit = spec.audit
    initial = get_flat(init_model(spec.model.name, dataset.input_shape, dataset.n_classes, seed=spec.seed,
                                  hidden=tuple(spec.model.hidden))).to(plan.test[0].device)
    selected = sample_clients(len(plan.clients), plan.clients_per_round, plan.seed, 1)
    updates = {c: client_update(plan, initial, c, client_generator(plan.seed, 1, c)) for c in selected}
    mean, std = dataset.pixel_scale or (0.0, 1.0)

    def pixels(z: torch.Tensor) -> torch.Tensor:
        return (z * std + mean).clamp(0, 1)

    def attack(delta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, steps_taken: int) -> dict[str, Any]:
        set_flat(plan.model, initial)
        k = min(audit.inversion_images, len(y))
        parts = unflatten(plan.model, delta)
        unroll = steps_taken if steps_taken <= 4 and len(y) <= audit.inversion_images else None
        rec = invert_gradients(plan.model, parts if unroll else [-g for g in parts], tuple(dataset.input_shape),
                               labels=y[:k].tolist(), local_steps=unroll, local_lr=plan.local.lr,
                               steps=audit.inversion_steps, seed=spec.seed)
        images = pixels(rec.image if k > 1 else rec.image[None])
        originals = pixels(x)
        best = matched_psnr(images, originals)  # for each of the client's records
        top = int(np.argmax(best))
        closest = max(range(len(images)), key=lambda i: psnr(images[i], originals[top]))
        return {"records": int(len(y)), "reconstructed": k, "psnr_best": float(max(best)),
                "ssim_best": ssim(images[closest], originals[top]),
                "psnr_median_over_records": float(np.median(best)), "unrolled_local_steps": unroll}

    out: dict[str, Any] = {"round": 1, "threat_model": INVERSION_THREAT, "observed": [],
                           "blank_image_psnr": None}
    if plan.secure is None:
        for c in selected[: audit.inversion_clients]:
            x, y = plan.clients[c]
            out["observed"].append({"what": f"client {c}'s update", **attack(updates[c].delta, x, y, updates[c].steps)})
    else:  # the server sees only the (weighted) sum of the round's updates
        total = sum(updates[c].delta * updates[c].num_samples for c in selected)
        x = torch.cat([plan.clients[c][0] for c in selected])
        y = torch.cat([plan.clients[c][1] for c in selected])
        out["observed"].append({"what": f"the secure sum of {len(selected)} clients' updates",
                                **attack(total, x, y, 10**9)})
    x0 = plan.clients[selected[0]][0]
    blank = torch.full_like(x0[:1], float(x0.min()))
    out["blank_image_psnr"] = float(np.median(matched_psnr(pixels(blank), pixels(x0[:50]))))  # the floor
    return out


def _robustness_audit(spec: ExperimentSpec, plan: SimulationPlan, state: SimulationState,
                      dataset: Dataset) -> dict[str, Any]:
    """Accuracy of the final model under 20-step L-inf PGD at growing budgets (pixel units for images)."""
    from unseen.attacks.adversarial import THREAT_MODEL as PGD_THREAT
    from unseen.attacks.adversarial import robustness_curve

    n = min(1000, len(plan.test[1]))
    image = len(dataset.input_shape) == 3
    mean, std = (dataset.pixel_scale or (0.0, 1.0)) if image else (0.0, 1.0)
    curve = robustness_curve(plan.model, state.params, plan.test[0][:n], plan.test[1][:n],
                             (0.0, 0.05, 0.1, 0.2, 0.3), steps=20, mean=mean, std=std,
                             bounds=(0.0, 1.0) if image else None, seed=spec.seed)
    return {"curve": curve, "records": n, "units": "pixels in [0, 1]" if image else "standardized features",
            "threat_model": PGD_THREAT}


def _loss_audit(spec: ExperimentSpec, plan: SimulationPlan, state: SimulationState, dataset: Dataset,
                delta: float) -> dict[str, Any]:
    """The loss-threshold attack: training records as members, test records as non-members."""
    from unseen.attacks.membership import THREAT_MODEL, loss_scores
    from unseen.audit import audit_scores

    rng = np.random.default_rng([spec.seed, 7])
    n = min(spec.audit.max_records, len(dataset.train), len(dataset.test))
    members = rng.choice(len(dataset.train), n, replace=False)
    outsiders = rng.choice(len(dataset.test), n, replace=False)
    device = plan.test[0].device
    x_in = torch.from_numpy(dataset.train.x[members]).to(device)
    y_in = torch.from_numpy(dataset.train.y[members]).to(device)
    x_out, y_out = plan.test[0][torch.from_numpy(outsiders)], plan.test[1][torch.from_numpy(outsiders)]
    scores_in = loss_scores(plan.model, state.params, x_in, y_in)
    scores_out = loss_scores(plan.model, state.params, x_out, y_out)
    result = audit_scores(scores_in, scores_out, delta=delta)
    # The members the attack is surest about: the records this model exposes most.
    top = np.argsort(-scores_in)[:10]
    vulnerable = [{"train_index": int(members[i]), "label": int(y_in[i]), "loss": float(-scores_in[i])} for i in top]
    return {**result.to_dict(), "threat_model": THREAT_MODEL, "most_vulnerable": vulnerable,
            "roc": {"fpr": result.fpr.tolist(), "tpr": result.tpr.tolist()}}


def _audit(spec: ExperimentSpec, plan: SimulationPlan, state: SimulationState, dataset: Dataset,
           parts: list[np.ndarray]) -> dict[str, Any]:
    """Run the spec's attacks against the final model."""
    out = {"canary": _canary_audit(spec, plan, state)} if plan.canaries is not None else {}
    attacks = spec.audit.attacks
    delta = plan.budget[1] if plan.budget is not None else 0.0
    if "loss" in attacks:
        out["loss"] = _loss_audit(spec, plan, state, dataset, delta)
    if "gradient_inversion" in attacks:
        out["gradient_inversion"] = _inversion_audit(spec, plan, dataset)
    if "pgd" in attacks:
        out["pgd"] = _robustness_audit(spec, plan, state, dataset)
    with_references = [a for a in attacks if a not in ("loss", "gradient_inversion", "pgd")]
    if with_references:
        out.update(_reference_attacks(spec, plan, parts, dataset, state.params, with_references, spec.audit.references,
                                      min(spec.audit.max_records, 1000), spec.seed, delta))
    return out


def _versions() -> dict[str, str]:
    return {"unseen": unseen.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def _per_client(plan: SimulationPlan, params: torch.Tensor, dataset: Dataset, parts: list[np.ndarray],
                device: torch.device) -> list[dict[str, Any]]:
    """The final global model on each client's own data (and its own test rows, for natural silos)."""
    out = []
    test_groups = dataset.test.groups
    for i, (x, y) in enumerate(plan.clients):
        entry: dict[str, Any] = {"client": i, "samples": len(y)}
        if plan.dp_sgd is not None and plan.dp_sgd.copies > 1:
            x = x[:, 0]  # each record's views start with the record itself
        entry["local_loss"], entry["local_accuracy"] = evaluate(plan.model, params, x, y, plan.eval_batch_size)
        silo_ids = np.unique(dataset.train.groups[parts[i]]) if dataset.train.groups is not None else []
        if test_groups is not None and len(silo_ids) == 1:
            mask = torch.from_numpy(test_groups == silo_ids[0]).to(device)
            if dataset.silo_names:
                entry["silo"] = dataset.silo_names[int(silo_ids[0])]
            entry["test_samples"] = int(mask.sum())
            entry["test_loss"], entry["test_accuracy"] = evaluate(
                plan.model, params, plan.test[0][mask], plan.test[1][mask], plan.eval_batch_size)
        out.append(entry)
    return out


def _secure_summary(spec: ExperimentSpec, plan: SimulationPlan, history: list[dict[str, Any]]) -> dict[str, Any] | None:
    if plan.secure is None:
        return None
    rounds = [m["secure_aggregation"] for m in history if "bytes_up" in m.get("secure_aggregation", {})]
    return {
        "backend": plan.secure.backend, "threat_model": SECURE_THREAT[plan.secure.backend],
        "clip": plan.secure.clip, "bits": plan.secure.bits if plan.secure.backend != "ckks" else None,
        "failed_rounds": sum(1 for m in history if "failed" in m),
        "client_seconds": float(sum(r["client_seconds"] for r in rounds)),
        "server_seconds": float(sum(r["server_seconds"] for r in rounds)),
        "max_error_per_coordinate": max((r["max_error_per_coordinate"] for r in rounds
                                         if "max_error_per_coordinate" in r), default=None),
    }


def _results(spec: ExperimentSpec, dataset: Dataset, plan: SimulationPlan, parts: list[np.ndarray],
             state: SimulationState, device: torch.device) -> dict[str, Any]:
    history = state.history
    if history and "test_accuracy" in history[-1]:
        final_loss, final_acc = history[-1]["test_loss"], history[-1]["test_accuracy"]
    else:  # halted by the privacy budget between evaluations, or before the first round
        final_loss, final_acc = evaluate(plan.model, state.params, *plan.test, plan.eval_batch_size)
    audit = _audit(spec, plan, state, dataset, parts)
    return {
        "audit": audit,
        "name": spec.name,
        "status": ("privacy_violation" if audit.get("canary", {}).get("violation")
                   else "budget_exhausted" if state.halted
                   else "completed_with_failed_rounds" if any("failed" in m for m in history) else "completed"),
        "mode": spec.mode,
        "seed": spec.seed,
        "versions": _versions(),
        "spec": spec.model_dump(mode="json"),
        "dataset": {
            "name": dataset.name, "train_samples": len(dataset.train), "test_samples": len(dataset.test),
            "classes": dataset.n_classes, "input_shape": list(dataset.input_shape),
            "client_sizes": [int(len(p)) for p in parts],
        },
        "model": {"name": spec.model.name, "parameters": int(state.params.numel())},
        "rounds": history,
        "final": {
            "round": state.round,
            "test_accuracy": final_acc,
            "test_loss": final_loss,
            "per_client": _per_client(plan, state.params, dataset, parts, device),
        },
        "costs": {
            "wall_seconds": None,  # set by the caller once the final evaluation is done
            "train_seconds": float(sum(m["seconds"] for m in history)),
            "seconds_per_round": float(np.median([m["seconds"] for m in history])) if history else 0.0,
            "stage_seconds": {stage: float(sum(m.get("stage_seconds", {}).get(stage, 0.0) for m in history))
                              for stage in STAGES},
            "bytes_up": int(sum(m["bytes_up"] for m in history)),
            "bytes_down": int(sum(m["bytes_down"] for m in history)),
            "note": "bytes are the sizes of the serialized payloads the simulator exchanged" if plan.serialize
            else "central training: nothing crosses a network",
        },
        "rejected_updates": state.rejections,
        "failed_rounds": [{"round": m["round"], "reason": m["failed"]} for m in history if "failed" in m],
        "secure_aggregation": _secure_summary(spec, plan, history),
        "privacy": {
            "guarantees": [g.to_dict() for g in _with_prior(plan, _privacy_guarantees(spec, plan, state))],
            "halted": state.halted,
            "budget_epsilon": None if plan.budget is None or math.isinf(plan.budget[0]) else plan.budget[0],
        },
    }


def _attach_log(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


VERTICAL_THREAT = (
    "Split learning (SplitNN) over parties holding different columns of the same people: columns and labels "
    "never leave their party, but no formal guarantee covers what crosses. Private set intersection reveals to "
    "the label party which of its people each other party holds, and the list of common people is sent to every "
    "party. The label party sees every person's embedding of the other parties' columns; every party sees, for "
    "each of its people, the gradient of the loss at its embedding, which reveals the labels (label_leakage_* "
    "below: a passive party's attacks on the last epoch). Semi-honest parties.")


LABEL_CANARY_THREAT = (
    "Label canaries (one-run audit, Steinke et al. 2023): audit.canaries aligned people get a fair-coin label, "
    "independent of their features, before any randomization; passive party 1 guesses each canary's label from "
    "the cosine score of its last-epoch gradients (it knows one other positive per batch, never a canary). "
    "Correct guesses beyond chance bound the label-DP epsilon from below.")


def _label_canary_audit(scores: dict[str, tuple[np.ndarray, np.ndarray]], canaries: np.ndarray, labels: np.ndarray,
                        guarantees: list[PrivacyGuarantee]) -> dict[str, Any]:
    """eps-hat from the label canaries' cosine scores, beside the formal label-DP epsilon (if any)."""
    cosine, scored = scores.get("cosine", (np.zeros(len(canaries)), np.zeros(len(canaries), dtype=bool)))
    # An unscored canary (no knowable positive in its batch) gets the neutral score 0: never a confident guess.
    s = np.where(scored, cosine, 0.0)[canaries]
    formal = [g for g in guarantees if g.is_formal and g.unit == "label"]
    audit = one_run_audit(s, labels[canaries] == 1, delta=0.0, formal_epsilon=formal[0].epsilon if formal else None)
    if audit.violation:
        log.error("label canary audit: eps-hat %.3g exceeds the formal epsilon %.3g", audit.epsilon_lower_bound,
                  audit.formal_epsilon)
    return {**audit.to_dict(), "threat_model": LABEL_CANARY_THREAT}


@dataclass
class VerticalTables:
    """What a vertical run trains on: each party's encoded columns (``columns``), the training rows each
    party holds (``party_rows``), their PSI alignment and its seconds, and the aligned data (``data``: the
    parties' columns of the common people in one order, their labels, and the test columns)."""

    columns: list[np.ndarray]
    party_rows: list[np.ndarray]
    aligned: Any  # unseen.crypto.psi.Alignment (imported lazily: the psi extra is optional)
    psi_seconds: float
    data: Any  # unseen.runtime.vertical.VerticalData


def vertical_tables(spec: ExperimentSpec, dataset: Dataset) -> VerticalTables:
    """Give each party its columns and people as ``spec.vertical`` says, and align them with PSI."""
    from unseen.crypto.psi import align
    from unseen.data.vertical import party_columns, party_records
    from unseen.runtime.vertical import VerticalData, select_columns

    if len(dataset.input_shape) != 1 or not dataset.feature_names:
        raise SpecError(f"mode = 'vertical' splits a table's columns between parties; {dataset.name!r} is not a "
                        "table: use adult, heart_disease, breast_cancer or your own file")
    v = spec.vertical
    columns = party_columns(dataset.feature_names, v.parties)
    party_rows, ids = party_records(len(dataset.train), len(columns), v.overlap, spec.seed)
    t = time.perf_counter()
    aligned = align(ids)
    psi_seconds = time.perf_counter() - t
    if not aligned.ids:
        raise UnseenError("private set intersection found no person that every party holds: raise vertical.overlap")
    log.info("PSI aligned %d people held by all %d parties (%.1f s, %d bytes)", len(aligned.ids), len(columns),
             psi_seconds, aligned.bytes)
    x = torch.from_numpy(dataset.train.x)
    people = [torch.from_numpy(party_rows[p][aligned.rows[p]]) for p in range(len(columns))]
    data = VerticalData([x[people[p]][:, columns[p]] for p in range(len(columns))],
                        torch.from_numpy(dataset.train.y)[people[0]],
                        select_columns(torch.from_numpy(dataset.test.x), columns), torch.from_numpy(dataset.test.y))
    return VerticalTables(columns, party_rows, aligned, psi_seconds, data)


def _execute_vertical(spec: ExperimentSpec, run_dir: Path, hooks: Hooks, started: float) -> RunResult:
    """A vertical run: align the parties' records with PSI, train a split network, attack its labels."""
    from unseen.federated.vertical import split_model
    from unseen.runtime.vertical import VerticalData, train_split

    dataset = load_dataset(spec)
    v = spec.vertical
    tables = vertical_tables(spec, dataset)
    columns, rows, aligned, psi_seconds = tables.columns, tables.party_rows, tables.aligned, tables.psi_seconds
    train, y, test, y_test = tables.data.train, tables.data.y_train, tables.data.test, tables.data.y_test
    widths = {"embedding": v.embedding, "bottom_hidden": v.bottom_hidden, "top_hidden": v.top_hidden}
    held = y.clone()  # the labels as the label party holds them (label canaries included)
    canaries = np.zeros(len(y), dtype=bool)
    if spec.audit.canaries:
        if dataset.n_classes != 2:
            raise SpecError("audit.canaries in vertical runs plants label canaries, defined for two classes; "
                            f"{dataset.name!r} has {dataset.n_classes}")
        crng = np.random.default_rng([spec.seed, 13])
        canaries[crng.choice(len(y), min(spec.audit.canaries, len(y)), replace=False)] = True
        # Each canary's label is a fair coin, independent of its features: only the mechanism can reveal it.
        held[torch.from_numpy(canaries)] = torch.from_numpy(crng.integers(0, 2, int(canaries.sum())))
    y_train = held  # what training sees: the labels, or their randomized response under label DP
    priv = spec.privacy
    guarantees = [PrivacyGuarantee.none("split learning: embeddings and cut-layer gradients cross in the clear",
                                        threat_model=VERTICAL_THREAT)]
    if priv.mechanism == "randomized_response":
        from unseen.privacy.label_dp import label_dp_guarantee, randomized_response

        rng = np.random.default_rng([spec.seed, 11])
        y_train = torch.from_numpy(randomized_response(held.numpy(), dataset.n_classes, priv.epsilon, rng=rng,
                                                       secure=priv.secure_rng))
        guarantees = [label_dp_guarantee(priv.epsilon, dataset.n_classes, _noise_source(priv)), PrivacyGuarantee.none(
            "the parties' columns, embeddings and the intersection cross without a formal guarantee (label DP "
            "covers the labels only)", threat_model=VERTICAL_THREAT)]
        log.info("label DP: %d of %d training labels changed by randomized response at epsilon %g",
                 int((y_train != held).sum()), len(y), priv.epsilon)
    model = split_model([len(c) for c in columns], dataset.n_classes, seed=spec.seed, **widths)
    t_ = spec.train
    settings = {"epochs": t_.epochs, "batch_size": t_.batch_size, "lr": t_.lr, "momentum": t_.momentum,
                "weight_decay": t_.weight_decay, "lr_schedule": t_.lr_schedule, "seed": spec.seed}
    if hooks.on_start:
        hooks.on_start(t_.epochs, 0)
    split = train_split(model, VerticalData(train, y_train, test, y_test), attack_labels=held, knowable=~canaries,
                        on_epoch=hooks.on_round, **settings)
    history, leakage = split.history, split.leakage
    # The label party alone, on its own columns: what the collaboration is worth.
    alone_model = split_model([len(columns[0])], dataset.n_classes, seed=spec.seed, **widths)
    alone = train_split(alone_model, VerticalData(train[:1], held, test[:1], y_test), leak_party=None,
                        **settings).history
    from unseen.attacks.label_leakage import THREAT_MODEL as LEAK_THREAT

    # No eps-hat from these: the features predict the labels whatever the mechanism (label canaries below do).
    audit: dict[str, Any] = {
        f"label_leakage_{name}": {**r.to_dict(), "epsilon_lower_bound": None, "threat_model": LEAK_THREAT,
                                  "roc": {"fpr": r.fpr.tolist(), "tpr": r.tpr.tolist()}}
        for name, r in leakage.items()}
    if canaries.any():
        audit["canary"] = _label_canary_audit(split.scores, canaries, held.numpy(), guarantees)
    final = history[-1]
    results: dict[str, Any] = {
        "audit": audit, "name": spec.name,
        "status": "privacy_violation" if audit.get("canary", {}).get("violation") else "completed",
        "mode": spec.mode, "seed": spec.seed,
        "versions": _versions(), "spec": spec.model_dump(mode="json"),
        "dataset": {"name": dataset.name, "train_samples": len(dataset.train), "test_samples": len(dataset.test),
                    "classes": dataset.n_classes, "input_shape": list(dataset.input_shape),
                    "client_sizes": [len(r) for r in rows]},
        "model": {"name": "split_mlp", "parameters": sum(p.numel() for p in model.parameters())},
        "rounds": history,
        "final": {"round": final["round"], "test_accuracy": final["test_accuracy"], "test_loss": final["test_loss"],
                  "per_client": []},
        "vertical": {
            "parties": [{"party": p, "columns": v.parties[p], "features": len(columns[p]), "people_held": len(rows[p])}
                        for p in range(len(columns))],
            "aligned_people": len(aligned.ids), "psi_bytes": aligned.bytes, "psi_seconds": psi_seconds,
            "label_party_alone_accuracy": alone[-1]["test_accuracy"],
        },
        "costs": {
            "wall_seconds": time.perf_counter() - started,
            "train_seconds": float(sum(m["seconds"] for m in history)),
            "seconds_per_round": float(np.median([m["seconds"] for m in history])),
            "stage_seconds": {},
            "bytes_up": int(sum(m["bytes_up"] for m in history)),
            "bytes_down": int(sum(m["bytes_down"] for m in history)) + aligned.bytes,
            "note": "bytes are the serialized embeddings, gradients and batch ids (per epoch), plus the PSI messages "
                    "and the list of common ids (in bytes_down)",
        },
        "rejected_updates": [], "failed_rounds": [], "secure_aggregation": None,
        "privacy": {"guarantees": [g.to_dict() for g in guarantees], "halted": None, "budget_epsilon": None},
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=float))
    torch.save({"bottoms": [m.state_dict() for m in model.bottoms], "top": model.top.state_dict()}, run_dir / "model.pt")
    write_report(run_dir)
    log.info("vertical run %s completed: test accuracy %.4f (label party alone %.4f)", run_dir.name,
             final["test_accuracy"], alone[-1]["test_accuracy"])
    return RunResult(run_dir, results, torch.cat([p.detach().flatten() for p in model.parameters()]))


def _execute(spec: ExperimentSpec, run_dir: Path, hooks: Hooks, checkpoint: dict[str, Any] | None) -> RunResult:
    if spec.runtime.threads is not None:
        torch.set_num_threads(spec.runtime.threads)
    device = select_device(spec.runtime.device)
    handler = _attach_log(run_dir)
    started = time.perf_counter()
    try:
        if spec.mode == "vertical":
            return _execute_vertical(spec, run_dir, hooks, started)
        dataset = load_dataset(spec)
        plan, parts = build_plan(spec, dataset, device)
        if checkpoint is None:
            state = initial_state(plan, get_flat(plan.model).cpu())
            log.info("run %s started: %s, %d clients, %d rounds", run_dir.name, dataset.name, len(parts), plan.rounds)
        else:
            state = SimulationState.from_dict(checkpoint["state"])
            if state.params.numel() != get_flat(plan.model).numel():
                raise CheckpointError(f"the checkpoint in {run_dir} does not match the model of its spec.toml.")
            log.info("run %s resumed after round %d", run_dir.name, state.round)
        prior_wall = float(checkpoint.get("wall_seconds", 0.0)) if checkpoint else 0.0
        if hooks.on_start:
            hooks.on_start(plan.rounds, state.round)

        def on_round(new_state: SimulationState, metrics: dict[str, Any]) -> None:
            acc = metrics.get("test_accuracy")
            log.info("round %d: accuracy %s, %d accepted, %d rejected, %.2fs", metrics["round"],
                     f"{acc:.4f}" if acc is not None else "-", metrics["accepted"], metrics["rejected"],
                     metrics["seconds"])
            if new_state.round % spec.output.checkpoint_every == 0 or new_state.round == plan.rounds:
                save_checkpoint(run_dir / "checkpoints", new_state.round, {
                    "state": new_state.to_dict(),
                    "rng": {"scheme": "counter-based: SeedSequence([seed, round, client])", "seed": spec.seed,
                            "torch": torch.get_rng_state()},
                    "wall_seconds": prior_wall + time.perf_counter() - started,
                }, keep=spec.output.keep_checkpoints)
            if hooks.on_round:
                hooks.on_round(metrics)

        state = simulate(plan, state, on_round=on_round, on_client=hooks.on_client)
        results = _results(spec, dataset, plan, parts, state, device)
        results["costs"]["wall_seconds"] = prior_wall + time.perf_counter() - started  # incl. final evaluation
        (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=float))
        torch.save(state.params, run_dir / "model.pt")
        write_report(run_dir)
        log.info("run %s completed: test accuracy %.4f", run_dir.name, results["final"]["test_accuracy"])
        return RunResult(run_dir, results, state.params)
    finally:
        log.removeHandler(handler)
        handler.close()


def new_run_dir(spec: ExperimentSpec, output_dir: str | Path | None = None) -> Path:
    base = Path(output_dir) if output_dir is not None else Path(spec.output.dir)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = base / f"{spec.name}-{stamp}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = base / f"{spec.name}-{stamp}-{suffix}"
    run_dir.mkdir(parents=True)
    return run_dir


def run(spec: ExperimentSpec, *, output_dir: str | Path | None = None, hooks: Hooks | None = None) -> RunResult:
    """Run an experiment in a new run folder under ``output_dir`` (default: ``spec.output.dir``)."""
    return run_in(spec, new_run_dir(spec, output_dir), hooks=hooks)


def run_in(spec: ExperimentSpec, run_dir: Path, *, hooks: Hooks | None = None) -> RunResult:
    """Run an experiment in the given (new or empty) folder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "spec.toml").write_text(spec_to_toml(spec))
    return _execute(spec, run_dir, hooks or Hooks(), None)


def resume(run_dir: str | Path, *, hooks: Hooks | None = None) -> RunResult:
    """Continue an interrupted run from its newest checkpoint (same seed: same final model)."""
    run_dir = Path(run_dir)
    spec_path = run_dir / "spec.toml"
    if not spec_path.is_file():
        raise CheckpointError(f"{run_dir} is not a run folder: it has no spec.toml. Give the folder `unseen run` created.")
    spec = load_spec(spec_path)
    _refuse_vertical(spec, "vertical runs do not checkpoint yet: start the run again")
    checkpoint = load_latest(run_dir / "checkpoints")
    return _execute(spec, run_dir, hooks or Hooks(), checkpoint)


def _refuse_vertical(spec: ExperimentSpec, why: str) -> None:
    if spec.mode == "vertical":
        raise CheckpointError(f"this is a vertical run: {why}.")


def _reference_attacks(spec: ExperimentSpec, plan: SimulationPlan, parts: list[np.ndarray], dataset: Dataset,
                       params: torch.Tensor, attacks: Iterable[str], references: int, records: int, seed: int,
                       delta: float) -> dict[str, Any]:
    """Membership attacks with reference models against ``params``: trained records vs test records."""
    from unseen.audit import audit_scores
    from unseen.audit.membership import THREAT, Recipe, attack_scores

    rng = np.random.default_rng([seed, 0xA0])
    trained = np.concatenate(parts)
    n = min(records, len(trained), len(dataset.test))
    members = rng.choice(trained, n, replace=False)
    outsiders = rng.choice(len(dataset.test), n, replace=False)
    device = plan.test[0].device
    pool_x = torch.from_numpy(np.concatenate([dataset.train.x[members], dataset.test.x[outsiders]])).to(device)
    pool_y = torch.from_numpy(np.concatenate([dataset.train.y[members], dataset.test.y[outsiders]])).to(device)
    passes = spec.train.epochs if spec.mode == "central" else spec.train.epochs * spec.federated.rounds * spec.federated.fraction
    recipe = Recipe(spec.model.name, dataset.input_shape, dataset.n_classes,
                    dataclasses.replace(plan.local, epochs=max(1, min(50, round(passes))), prox_mu=0.0),
                    tuple(spec.model.hidden))
    scores = attack_scores(plan.model, params.to(device), recipe, pool_x, pool_y, references=references,
                           attacks=tuple(attacks), seed=seed)
    out = {}
    for name, sc in scores.items():
        res = audit_scores(sc[:n], sc[n:], delta=delta)
        out[name] = {**res.to_dict(), "threat_model": THREAT[name],
                     "references": references if name not in ("loss", "margin") else 0,
                     "roc": {"fpr": res.fpr.tolist(), "tpr": res.tpr.tolist()}}
    return out


def audit_run(run_dir: str | Path, *, attacks: tuple[str, ...] = ("loss", "rmia", "lira"), references: int = 2,
              records: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Attack a finished run's final model; add the results to its results.json and report.

    Members are records the run trained on, non-members test records. Reference models train
    centrally with the run's model and local recipe, for as many passes over their data as the run
    made (rounds x local epochs x client fraction, at most 50): the attacker knows the recipe, not
    the federation. References are not trained with DP, even for a DP run (an attacker's choice).
    """
    run_dir = Path(run_dir)
    results_path = run_dir / "results.json"
    if not results_path.is_file() or not (run_dir / "model.pt").is_file():
        raise CheckpointError(f"{run_dir} is not a finished run folder (no results.json or model.pt): finish it "
                              "first with `unseen run --resume`.")
    spec = load_spec(run_dir / "spec.toml")
    _refuse_vertical(spec, "`unseen audit` attacks federated and central models; a vertical run measured its "
                           "label leakage as it trained (results.json, audit section)")
    results = json.loads(results_path.read_text())
    device = torch.device("cpu")
    dataset = load_dataset(spec)
    plan, parts = build_plan(spec, dataset, device)
    params = torch.load(run_dir / "model.pt", map_location=device)
    formal = [g for g in results["privacy"]["guarantees"] if g["mechanism"] != "none"]
    delta = max((g["delta"] for g in formal), default=0.0)
    audit = dict(results.get("audit") or {})
    audit.update(_reference_attacks(spec, plan, parts, dataset, params, attacks, references, records, seed, delta))
    results["audit"] = audit
    results_path.write_text(json.dumps(results, indent=2, default=float))
    write_report(run_dir)
    return audit


def load_trained_model(run_dir: str | Path) -> tuple[ExperimentSpec, Dataset, torch.nn.Module]:
    """A finished run's spec, dataset and trained model (on the CPU)."""
    run_dir = Path(run_dir)
    if not (run_dir / "spec.toml").is_file() or not (run_dir / "model.pt").is_file():
        raise CheckpointError(f"{run_dir} is not a finished run folder (no spec.toml or model.pt): give a folder "
                              "that `unseen run` completed.")
    spec = load_spec(run_dir / "spec.toml")
    _refuse_vertical(spec, "its model is a split network, saved as each party's part in model.pt")
    dataset = load_dataset(spec)
    model = init_model(spec.model.name, dataset.input_shape, dataset.n_classes, seed=spec.seed,
                       hidden=tuple(spec.model.hidden))
    set_flat(model, torch.load(run_dir / "model.pt", map_location="cpu"))
    return spec, dataset, model.eval()


__all__ = [
    "AdversarySpec", "AuditSpec", "DataSpec", "ExperimentSpec", "FederatedSpec", "Hooks", "ModelSpec",
    "OutputSpec", "PartitionSpec", "PrivacySpec", "RunResult", "RuntimeSpec", "TrainSpec", "UnseenError",
    "apply_overrides", "audit_run", "build_plan", "load_dataset", "load_spec", "load_trained_model", "parse_spec", "resume", "run", "run_in",
    "spec_to_toml",
]


# --- The demo ---------------------------------------------------------------------------------

DEMO_DATASETS = ("breast_cancer", "heart_disease")


def demo_spec(dataset: str = "breast_cancer") -> ExperimentSpec:
    """The default experiment: federated logistic regression across hospitals."""
    if dataset not in DEMO_DATASETS:
        raise SpecError(f"--dataset {dataset!r}: the demo runs on {' or '.join(DEMO_DATASETS)}.")
    partition_method = "natural" if dataset == "heart_disease" else "iid"
    return parse_spec({
        "name": f"demo-{dataset}",
        "data": {"name": dataset, "partition": {"method": partition_method}},
        "model": {"name": "logreg"},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.1},
        "federated": {"rounds": 40, "clients": 5 if dataset == "breast_cancer" else None},
    })


def run_demo(spec: ExperimentSpec, *, output_dir: str | Path | None = None,
             hooks: Hooks | None = None) -> tuple[RunResult, float]:
    """Run the federated demo and the pooled baseline on the same split; return both accuracies."""
    from unseen.baselines import central_logistic_regression

    result = run(spec, output_dir=output_dir, hooks=hooks)
    pooled = central_logistic_regression(load_dataset(spec), seed=spec.seed)
    result.results["baseline"] = {"pooled_logistic_regression_accuracy": pooled,
                                  "note": "scikit-learn LogisticRegression on the pooled training data"}
    (result.run_dir / "results.json").write_text(json.dumps(result.results, indent=2, default=float))
    write_report(result.run_dir)  # again, now with the baseline beside the federated accuracy
    return result, pooled
