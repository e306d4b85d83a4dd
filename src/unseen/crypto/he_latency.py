"""Encrypted inference, latency mode: one image in one ciphertext, few rotations (LoLa / Gazelle-style packing).

The client packs its image into one ciphertext (one copy per output map of the first convolution, at
an offset that keeps every rotation a left rotation) and sends it with relinearization keys and Galois
keys for the 11 rotation steps the evaluation uses, and nothing else. The server evaluates:

- the first convolution as ``sum_a rot(sum_b P_ab * rot(x, b), a * width)`` (baby steps of 1 pixel,
  giant steps of one image row, Horner form): 8 rotations for a 5x5 kernel, every output map at once;
- every linear layer with Gazelle's hybrid diagonal method (Juvekar et al. 2018) over all slots, with
  baby-step giant-step rotations (Halevi & Shoup) and a final rotate-and-sum fold. Any input layout
  works, because the matrix is laid over the slots where the previous layer left its values;
- every square activation as one squaring.

The logits come back in the first slots of one ciphertext. Depth, scale and logit scaling are planned
by :func:`unseen.crypto.he_inference.plan_network`, as in throughput mode.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tenseal.sealapi as seal
from torch import nn

from unseen.crypto.he_inference import (
    Linear,
    NetworkPlan,
    Square,
    _dump,
    _load,
    _seal_context,
    next_prime,
    plan_network,
)
from unseen.crypto.he_plan import MAX_COEFF_BITS, MAX_PRIME_BITS, HEPlan, HEPlanError, plan_ckks

LATENCY_SCALE_BITS = 29  # measured: more scale bits beat a larger special prime (errors 1e-4 vs 2e-3 at 25 bits)


@dataclass
class ConvStep:
    """The first convolution: masks per kernel offset, pre-rotated for the Horner giant steps."""

    width: int  # image row length: the giant step
    kernel: tuple[int, int]
    masks: dict[tuple[int, int], np.ndarray]  # (a, b) -> slot vector, already rotated right by a * width
    bias: np.ndarray  # slot vector
    out_slots: np.ndarray  # slot of each output value (map-major, row-major)


@dataclass
class LinearStep:
    """A dense layer by hybrid diagonals: ``diagonals[g][b]`` pre-rotated right by ``g * baby``."""

    rows: int  # padded output count (a power of two that divides the slot count)
    baby: int
    diagonals: list[list[np.ndarray | None]]
    bias: np.ndarray  # slot vector (replicated every ``rows`` slots)
    out_slots: np.ndarray


Step = ConvStep | LinearStep | Square


@dataclass
class LatencyPlan:
    network: NetworkPlan
    steps: list[Step]
    input_offset: int
    segment: int
    maps: int
    galois_steps: list[int] = field(default_factory=list)

    @property
    def he(self) -> HEPlan:
        return self.network.he


def galois_elements(steps: list[int], poly_degree: int) -> list[int]:
    """SEAL's Galois element for a left rotation by each step: 3^step mod 2N (SEAL's generator is 3)."""
    return [pow(3, step % (poly_degree // 2), 2 * poly_degree) for step in steps]


def _rotate_right(v: np.ndarray, r: int) -> np.ndarray:
    return np.roll(v, r)


def _conv_step(conv: nn.Conv2d, input_shape: tuple[int, ...], slots: int) -> tuple[ConvStep, int, int, int]:
    c, h, w = input_shape
    if c != 1:
        raise HEPlanError("latency mode packs one single-channel image: the first layer must be a Conv2d with "
                          "in_channels = 1 (use throughput mode otherwise)")
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding  # type: ignore[misc]
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    offset = ph * w + pw  # pixel (y, x) sits at y * w + x + offset: every read is a left rotation
    reach = sh * (ho - 1) * w + sw * (wo - 1) + (kh - 1) * w + (kw - 1) + 1
    segment = max(reach, offset + h * w)
    maps = conv.out_channels
    if maps * segment > slots:
        raise HEPlanError(f"latency mode needs {maps} copies of {segment} slots, more than the {slots} of one "
                          f"ciphertext: use fewer output maps in the first convolution, or throughput mode")
    weight = conv.weight.detach().double().numpy()
    bias = conv.bias.detach().double().numpy() if conv.bias is not None else np.zeros(maps)
    masks = {(a, b): np.zeros(slots) for a in range(kh) for b in range(kw)}
    bias_vec = np.zeros(slots)
    out_slots = []
    for o in range(maps):
        for i in range(ho):
            for j in range(wo):
                q = o * segment + sh * i * w + sw * j
                out_slots.append(q)
                bias_vec[q] = bias[o]
                for a in range(kh):
                    for b in range(kw):
                        y, x = sh * i - ph + a, sw * j - pw + b
                        if 0 <= y < h and 0 <= x < w:
                            masks[(a, b)][q] = weight[o, 0, a, b]
    masks = {(a, b): _rotate_right(m, a * w) for (a, b), m in masks.items()}
    return ConvStep(w, (kh, kw), masks, bias_vec, np.array(out_slots)), offset, segment, maps


def _linear_step(layer: Linear, in_slots: np.ndarray, slots: int) -> LinearStep:
    n_out = len(layer.bias)
    rows = 1 << max(0, int(np.ceil(np.log2(n_out))))
    if rows > slots:
        raise HEPlanError(f"a layer of {n_out} outputs does not fit {slots} slots")
    matrix = np.zeros((rows, slots))
    for k, (idx, wts) in enumerate(zip(layer.indices, layer.weights, strict=True)):
        matrix[k, in_slots[idx]] = wts
    baby = 1 << int(np.ceil(np.log2(rows) / 2))
    giants = -(-rows // baby)
    i = np.arange(slots)
    diagonals: list[list[np.ndarray | None]] = []
    for g in range(giants):
        row: list[np.ndarray | None] = []
        for b in range(baby):
            j = g * baby + b
            d = matrix[i % rows, (i + j) % slots] if j < rows else np.zeros(slots)
            row.append(_rotate_right(d, g * baby) if np.any(d) else None)
        diagonals.append(row)
    bias = np.zeros(slots)
    bias[: n_out] = layer.bias
    bias = np.tile(bias[:rows], slots // rows)
    return LinearStep(rows, baby, diagonals, bias, np.arange(n_out))


def plan_latency(model: nn.Module, input_shape: tuple[int, ...], calibration: np.ndarray, *,
                 scale_bits: int = LATENCY_SCALE_BITS) -> LatencyPlan:
    """Plan, calibrate and lay out the network for one image per ciphertext, before any encryption."""
    # Rotations add key-switching noise in proportion to (largest data prime / special prime): the special
    # prime takes every bit the ring's security bound leaves (with one as small as the data primes, that
    # noise dominated the error).
    network = plan_network(model, input_shape, calibration, slots=1, scale_bits=scale_bits)
    he = network.he
    spare = MAX_COEFF_BITS[he.poly_degree] - he.modulus_bits
    special = min(MAX_PRIME_BITS, he.coeff_bits[-1] + spare)
    network.he = plan_ckks(he.depth, scale_bits=scale_bits, integer_bits=he.coeff_bits[0] - scale_bits,
                           min_slots=he.slots, min_degree=he.poly_degree, special_bits=special)
    slots = network.he.slots
    first = next(iter(model.children()))
    if not isinstance(first, nn.Conv2d):
        raise HEPlanError("latency mode expects the network to start with a Conv2d")
    conv, offset, segment, maps = _conv_step(first, input_shape, slots)
    steps: list[Step] = [conv]
    where = conv.out_slots
    for layer in network.layers[1:]:
        if isinstance(layer, Square):
            steps.append(layer)
        else:
            step = _linear_step(layer, where, slots)
            steps.append(step)
            where = step.out_slots
    rotations = {1, conv.width}
    for s in steps:
        if isinstance(s, LinearStep):
            rotations.add(s.baby)
            rotations.update(1 << k for k in range(int(np.log2(s.rows)), int(np.log2(slots))))
    return LatencyPlan(network, steps, offset, segment, maps, sorted(rotations))


@dataclass
class LatencyClient:
    """The client: secret key, and the evaluation keys (relinearization + the plan's rotations only)."""

    plan: LatencyPlan

    def __post_init__(self) -> None:
        he = self.plan.network.he
        self.context = _seal_context(he)
        keygen = seal.KeyGenerator(self.context)
        self.secret = keygen.secret_key()
        self.relin_keys = _dump(keygen.create_relin_keys())
        self.galois_keys = _dump(keygen.create_galois_keys(galois_elements(self.plan.galois_steps, he.poly_degree)))
        self.encoder = seal.CKKSEncoder(self.context)
        self.encryptor = seal.Encryptor(self.context, self.secret)
        self.decryptor = seal.Decryptor(self.context, self.secret)

    @property
    def evaluation_key_bytes(self) -> int:
        return len(self.relin_keys) + len(self.galois_keys)

    def encrypt(self, image: np.ndarray) -> bytes:
        slots = self.plan.network.he.slots
        vec = np.zeros(slots)
        flat = image.reshape(-1).astype(np.float64)
        for o in range(self.plan.maps):
            start = o * self.plan.segment + self.plan.input_offset
            vec[start : start + len(flat)] = flat
        plain = seal.Plaintext()
        self.encoder.encode(vec.tolist(), 2.0**self.plan.network.he.scale_bits, plain)
        return _dump(self.encryptor.encrypt_symmetric(plain))

    def decrypt(self, logits: bytes, classes: int) -> np.ndarray:
        ct = _load(seal.Ciphertext, self.context, logits)
        plain = seal.Plaintext()
        self.decryptor.decrypt(ct, plain)
        return np.asarray(self.encoder.decode_double(plain))[:classes] * self.plan.network.logit_scale


class LatencyServer:
    """The server: loads the client's evaluation keys once, then evaluates one ciphertext per request."""

    def __init__(self, plan: LatencyPlan, relin_keys: bytes, galois_keys: bytes) -> None:
        self.plan = plan
        self.context = _seal_context(plan.network.he)
        self.relin = _load(seal.RelinKeys, self.context, relin_keys)
        self.galois = _load(seal.GaloisKeys, self.context, galois_keys)
        self.encoder, self.evaluator = seal.CKKSEncoder(self.context), seal.Evaluator(self.context)

    def _rot(self, ct: seal.Ciphertext, steps: int) -> seal.Ciphertext:
        out = seal.Ciphertext()
        self.evaluator.rotate_vector(ct, steps, self.galois, out)
        return out

    def _times(self, ct: seal.Ciphertext, vec: np.ndarray) -> seal.Ciphertext:
        """ct * plaintext vector, encoded at the prime the next rescale drops (the scale is kept exactly)."""
        plain, out = seal.Plaintext(), seal.Ciphertext()
        self.encoder.encode(vec.tolist(), ct.parms_id(), next_prime(self.context, ct.parms_id()), plain)
        self.evaluator.multiply_plain(ct, plain, out)
        return out

    def _sum(self, terms: list[seal.Ciphertext]) -> seal.Ciphertext:
        total = terms[0]
        for t in terms[1:]:
            self.evaluator.add_inplace(total, t)
        return total

    def _add_vector(self, ct: seal.Ciphertext, vec: np.ndarray) -> None:
        plain = seal.Plaintext()
        self.encoder.encode(vec.tolist(), ct.parms_id(), ct.scale, plain)
        self.evaluator.add_plain_inplace(ct, plain)

    def _conv(self, ct: seal.Ciphertext, step: ConvStep) -> seal.Ciphertext:
        kh, kw = step.kernel
        shifted = [ct]
        for _ in range(1, kw):  # baby steps: one pixel at a time
            shifted.append(self._rot(shifted[-1], 1))
        horner = None
        for a in reversed(range(kh)):  # giant steps: one image row at a time, Horner form
            inner = self._sum([self._times(shifted[b], step.masks[(a, b)]) for b in range(kw)])
            if horner is not None:
                self.evaluator.add_inplace(inner, self._rot(horner, step.width))
            horner = inner
        assert horner is not None
        self._add_vector(horner, step.bias)  # at the product's scale, before the rescale
        self.evaluator.rescale_to_next_inplace(horner)
        return horner

    def _linear(self, ct: seal.Ciphertext, step: LinearStep) -> seal.Ciphertext:
        babies = [ct]
        for _ in range(1, step.baby):
            babies.append(self._rot(babies[-1], 1))
        horner = None
        for g in reversed(range(len(step.diagonals))):
            terms = [self._times(babies[b], d) for b, d in enumerate(step.diagonals[g]) if d is not None]
            inner = self._sum(terms) if terms else None
            if horner is not None:
                rotated = self._rot(horner, step.baby)
                if inner is None:
                    inner = rotated
                else:
                    self.evaluator.add_inplace(inner, rotated)
            horner = inner
        if horner is None:
            raise HEPlanError("a linear layer has no nonzero weight")
        self.evaluator.rescale_to_next_inplace(horner)
        slots = self.plan.network.he.slots
        step_size = step.rows
        while step_size < slots:  # fold: every block of ``rows`` slots adds into every other
            self.evaluator.add_inplace(horner, self._rot(horner, step_size))
            step_size *= 2
        self._add_vector(horner, step.bias)
        return horner

    def evaluate(self, image: bytes) -> bytes:
        ct = _load(seal.Ciphertext, self.context, image)
        for step in self.plan.steps:
            if isinstance(step, ConvStep):
                ct = self._conv(ct, step)
            elif isinstance(step, LinearStep):
                ct = self._linear(ct, step)
            else:
                self.evaluator.square_inplace(ct)
                self.evaluator.relinearize_inplace(ct, self.relin)
                self.evaluator.rescale_to_next_inplace(ct)
        return _dump(ct)


def infer_latency(model: nn.Module, input_shape: tuple[int, ...], images: np.ndarray, calibration: np.ndarray,
                  on_image: Any = None) -> dict[str, Any]:
    """Classify images one at a time (one ciphertext each): logits, per-image server seconds, bytes."""
    t = time.perf_counter()
    plan = plan_latency(model, input_shape, calibration)
    client = LatencyClient(plan)
    setup_client = time.perf_counter() - t
    t = time.perf_counter()
    server = LatencyServer(plan, client.relin_keys, client.galois_keys)
    setup_server = time.perf_counter() - t
    classes = len(plan.network.layers[-1].bias)  # type: ignore[union-attr]
    logits, seconds, up, down = [], [], [], []
    for k, image in enumerate(images):
        data = client.encrypt(image)
        t = time.perf_counter()
        out = server.evaluate(data)
        seconds.append(time.perf_counter() - t)
        logits.append(client.decrypt(out, classes))
        up.append(len(data))
        down.append(len(out))
        if on_image is not None:
            on_image(k + 1, len(images))
    return {"logits": np.stack(logits), "plan": plan, "images": len(images), "server_seconds": seconds,
            "server_seconds_median": float(np.median(seconds)), "upload_bytes_per_image": float(np.mean(up)),
            "download_bytes_per_image": float(np.mean(down)), "evaluation_key_bytes": client.evaluation_key_bytes,
            "galois_key_bytes": len(client.galois_keys), "relin_key_bytes": len(client.relin_keys),
            "rotation_steps": plan.galois_steps, "client_setup_seconds": setup_client,
            "server_setup_seconds": setup_server}


__all__ = ["LatencyClient", "LatencyPlan", "LatencyServer", "infer_latency", "plan_latency"]
