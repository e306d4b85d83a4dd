"""Encrypted inference, throughput mode: CryptoNets-style, one image per slot, on SEAL (TenSEAL's bindings).

Roles:

- the **client** holds the secret key. It encrypts a batch of up to ``slots`` images pixel by pixel
  (ciphertext ``p`` holds pixel ``p`` of every image in the batch), with seeded symmetric encryption
  (half the bytes), and sends them with the relinearization keys only: no secret key, no public key,
  no Galois keys (slot-wise evaluation never rotates);
- the **server** evaluates the network on ciphertexts: every linear layer (convolutions as sparse maps)
  as sums of ciphertexts times plaintext weights, each square activation as one ciphertext squaring.
  It returns one ciphertext of logits per class;
- the client decrypts them and takes the argmax.

Networks must be HE-friendly: linear layers and square activations only (``unseen.models.he_cnn``);
``compile_network`` names any other layer. Before anything is encrypted, ``plan_network`` runs the
network in plaintext on calibration images, scales the last layer so the logits fit the last prime
(argmax is unchanged), and plans the CKKS parameters from the depth (one rescale per layer) with
:mod:`unseen.crypto.he_plan`.

Threat model: a semi-honest server learns nothing about the images or the predictions (CKKS under
RLWE at 128-bit security); the client learns the logits (and so could probe the model, as with any
prediction API).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tenseal.sealapi as seal
import torch
from torch import nn

from unseen.crypto.he_plan import HEPlan, HEPlanError, check, plan_ckks

_SCRATCH = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())


# --- the network as sparse linear maps and squares --------------------------------------------------

@dataclass
class Linear:
    """out[o] = sum(weights[o] * in[indices[o]]) + bias[o]: a dense or convolutional layer."""

    indices: list[np.ndarray]
    weights: list[np.ndarray]
    bias: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:  # x: [inputs, batch]
        return np.stack([w @ x[i] for i, w in zip(self.indices, self.weights, strict=True)]) + self.bias[:, None]

    @property
    def multiplications(self) -> int:
        return sum(len(w) for w in self.weights)


@dataclass
class Square:
    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x * x


Layer = Linear | Square


def _conv(conv: nn.Conv2d, shape: tuple[int, int, int]) -> tuple[Linear, tuple[int, int, int]]:
    c, h, w = shape
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding  # type: ignore[misc]
    if conv.groups != 1 or conv.dilation != (1, 1):
        raise HEPlanError("encrypted inference supports plain convolutions (groups 1, dilation 1)")
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    weight = conv.weight.detach().double().numpy()
    bias = conv.bias.detach().double().numpy() if conv.bias is not None else np.zeros(conv.out_channels)
    indices, weights, biases = [], [], []
    for o in range(conv.out_channels):
        for i in range(ho):
            for j in range(wo):
                idx, wts = [], []
                for ci in range(c):
                    for a in range(kh):
                        for b in range(kw):
                            y, x = i * sh - ph + a, j * sw - pw + b
                            if 0 <= y < h and 0 <= x < w and weight[o, ci, a, b] != 0:
                                idx.append(ci * h * w + y * w + x)
                                wts.append(weight[o, ci, a, b])
                indices.append(np.array(idx, dtype=np.int64))
                weights.append(np.array(wts))
                biases.append(bias[o])
    return Linear(indices, weights, np.array(biases)), (conv.out_channels, ho, wo)


def compile_network(model: nn.Module, input_shape: tuple[int, ...]) -> list[Layer]:
    """The model as linear maps and squares, or an error naming the layer HE cannot evaluate."""
    layers: list[Layer] = []
    shape: tuple[int, ...] = tuple(input_shape)
    for name, module in model.named_children():
        if isinstance(module, nn.Conv2d):
            layer, shape = _conv(module, shape)  # type: ignore[arg-type]
            layers.append(layer)
        elif isinstance(module, nn.Linear):
            w = module.weight.detach().double().numpy()
            b = module.bias.detach().double().numpy() if module.bias is not None else np.zeros(module.out_features)
            every = np.arange(w.shape[1])
            layers.append(Linear([every[w[o] != 0] for o in range(len(w))], [w[o][w[o] != 0] for o in range(len(w))], b))
            shape = (module.out_features,)
        elif type(module).__name__ == "Square":
            layers.append(Square())
        elif isinstance(module, nn.Flatten):
            shape = (int(np.prod(shape)),)
        else:
            raise HEPlanError(f"layer {name} ({type(module).__name__}) cannot be evaluated under CKKS: use linear "
                              f"layers and square activations only (model.name = 'he_cnn'); no ReLU, pooling or "
                              f"normalisation")
    return layers


def plaintext_forward(layers: list[Layer], images: np.ndarray) -> np.ndarray:
    """The compiled network in float64 on [batch, ...] images: logits [batch, classes]."""
    x = images.reshape(len(images), -1).T.astype(np.float64)
    for layer in layers:
        x = layer(x)
    return x.T


# --- planning ------------------------------------------------------------------------------------------

LOGIT_BOUND = 4.0  # logits are scaled into [-4, 4]: the last prime holds them with a bit to spare


@dataclass
class NetworkPlan:
    layers: list[Layer]
    he: HEPlan
    logit_scale: float  # the last layer was divided by this (argmax unchanged)
    magnitudes: list[float]  # max |value| after each layer on the calibration images

    @property
    def depth(self) -> int:
        return len(self.layers)


def plan_network(model: nn.Module, input_shape: tuple[int, ...], calibration: np.ndarray, *,
                 scale_bits: int = 29, slots: int = 4096, special_bits: int | None = None) -> NetworkPlan:
    """Compile, calibrate on plaintext images, scale the logits and plan CKKS, all before any encryption."""
    layers = compile_network(model, input_shape)
    if not layers or not isinstance(layers[-1], Linear):
        raise HEPlanError("the network must end with a linear layer (the logits)")
    x = calibration.reshape(len(calibration), -1).T.astype(np.float64)
    magnitudes = []
    for layer in layers:
        x = layer(x)
        magnitudes.append(float(np.max(np.abs(x))))
    scale = max(1.0, 2.0 * magnitudes[-1] / LOGIT_BOUND)  # headroom for images beyond the calibration set
    last = layers[-1]
    layers[-1] = Linear(last.indices, [w / scale for w in last.weights], last.bias / scale)
    integer_bits = int(np.ceil(np.log2(LOGIT_BOUND))) + 1
    he = plan_ckks(len(layers), scale_bits=scale_bits, integer_bits=integer_bits, min_slots=slots,
                   special_bits=special_bits)
    check(he, len(layers))
    # Every intermediate value must fit the modulus left at its level (value * scale < q / 2).
    for level, m in enumerate(magnitudes[:-1], start=1):
        room = sum(he.coeff_bits[: len(he.coeff_bits) - 1 - level]) - scale_bits - 1
        if np.log2(max(m, 1e-12)) + 1 >= room:  # a factor 2 beyond the calibration maximum
            raise HEPlanError(f"layer {level} reaches |{m:.3g}| on the calibration images, beyond the "
                              f"2^{room} its level holds at scale 2^{scale_bits}: scale the inputs down")
    return NetworkPlan(layers, he, scale, magnitudes)


# --- SEAL plumbing -------------------------------------------------------------------------------------

def _seal_context(plan: HEPlan) -> seal.SEALContext:
    parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(plan.poly_degree)
    parms.set_coeff_modulus(seal.CoeffModulus.Create(plan.poly_degree, list(plan.coeff_bits)))
    ctx = seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.TC128)
    if not ctx.parameters_set():
        raise HEPlanError(f"SEAL refused {plan.describe()}: {ctx.parameters_error_message()}")
    return ctx


def next_prime(ctx: seal.SEALContext, parms_id: Any) -> float:
    """The prime the next rescale drops at this level: plaintexts encoded at this scale keep it exact."""
    return float(ctx.get_context_data(parms_id).parms().coeff_modulus()[-1].value())


def _dump(obj: Any) -> bytes:
    fd, path = tempfile.mkstemp(dir=_SCRATCH)
    os.close(fd)
    try:
        obj.save(path)
        return Path(path).read_bytes()
    finally:
        os.unlink(path)


def _load(kind: type, ctx: seal.SEALContext, data: bytes) -> Any:
    fd, path = tempfile.mkstemp(dir=_SCRATCH)
    try:
        os.write(fd, data)
        os.close(fd)
        obj = kind()
        obj.load(ctx, path)
        return obj
    finally:
        os.unlink(path)


@dataclass
class Client:
    """The client's keys; ``evaluation_keys`` is everything the server needs (no secret key)."""

    plan: NetworkPlan
    context: seal.SEALContext = field(init=False)
    secret: seal.SecretKey = field(init=False)
    evaluation_keys: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.context = _seal_context(self.plan.he)
        keygen = seal.KeyGenerator(self.context)
        self.secret = keygen.secret_key()
        self.evaluation_keys = _dump(keygen.create_relin_keys())  # seeded: half the bytes
        self.encoder = seal.CKKSEncoder(self.context)
        self.encryptor = seal.Encryptor(self.context, self.secret)
        self.decryptor = seal.Decryptor(self.context, self.secret)

    def encrypt(self, images: np.ndarray) -> list[bytes]:
        """One seeded ciphertext per pixel position, each holding that pixel of every image."""
        if len(images) > self.plan.he.slots:
            raise ValueError(f"at most {self.plan.he.slots} images per batch, got {len(images)}")
        pixels = images.reshape(len(images), -1).T.astype(np.float64)
        scale = 2.0**self.plan.he.scale_bits
        out = []
        for row in pixels:
            plain = seal.Plaintext()
            self.encoder.encode(row.tolist(), scale, plain)
            out.append(_dump(self.encryptor.encrypt_symmetric(plain)))
        return out

    def decrypt(self, logits: list[bytes], count: int) -> np.ndarray:
        """Logits [count, classes] from the server's ciphertexts (unscaled back to the model's)."""
        rows = []
        for data in logits:
            ct = _load(seal.Ciphertext, self.context, data)
            plain = seal.Plaintext()
            self.decryptor.decrypt(ct, plain)
            rows.append(np.asarray(self.encoder.decode_double(plain))[:count])
        return np.stack(rows, axis=1) * self.plan.logit_scale


def server_evaluate(plan: NetworkPlan, evaluation_keys: bytes, inputs: list[bytes]) -> list[bytes]:
    """The server's work: the network on ciphertexts, with the relinearization keys only."""
    ctx = _seal_context(plan.he)
    relin = _load(seal.RelinKeys, ctx, evaluation_keys)
    encoder, evaluator = seal.CKKSEncoder(ctx), seal.Evaluator(ctx)
    cts = [_load(seal.Ciphertext, ctx, b) for b in inputs]
    for layer in plan.layers:
        if isinstance(layer, Square):
            for ct in cts:
                evaluator.square_inplace(ct)
                evaluator.relinearize_inplace(ct, relin)
                evaluator.rescale_to_next_inplace(ct)
            continue
        parms_id = cts[0].parms_id()
        prime = next_prime(ctx, parms_id)
        plain, term, out = seal.Plaintext(), seal.Ciphertext(), []
        for idx, wts, b in zip(layer.indices, layer.weights, layer.bias, strict=True):
            acc = None
            for i, w in zip(idx.tolist(), wts.tolist(), strict=True):
                encoder.encode(w, parms_id, prime, plain)
                if acc is None:
                    acc = seal.Ciphertext()
                    evaluator.multiply_plain(cts[i], plain, acc)
                else:
                    evaluator.multiply_plain(cts[i], plain, term)
                    evaluator.add_inplace(acc, term)
            if acc is None:
                raise HEPlanError("an output of a linear layer has no nonzero weight: prune it before encryption")
            encoder.encode(float(b), parms_id, acc.scale, plain)
            evaluator.add_plain_inplace(acc, plain)
            evaluator.rescale_to_next_inplace(acc)
            out.append(acc)
        cts = out
    return [_dump(ct) for ct in cts]


def infer(model: nn.Module, input_shape: tuple[int, ...], images: np.ndarray, calibration: np.ndarray,
          *, slots: int = 4096, on_batch: Any = None) -> dict[str, Any]:
    """Both roles over ``images`` in batches of ``slots``: logits, and the seconds and bytes of each step."""
    t = time.perf_counter()
    plan = plan_network(model, input_shape, calibration, slots=slots)
    client = Client(plan)
    costs = {"client_setup_seconds": time.perf_counter() - t, "client_encrypt_seconds": 0.0, "server_seconds": 0.0,
             "client_decrypt_seconds": 0.0, "upload_bytes": 0, "download_bytes": 0}
    logits = []
    for start in range(0, len(images), plan.he.slots):
        batch = images[start : start + plan.he.slots]
        t = time.perf_counter()
        uploads = client.encrypt(batch)
        costs["client_encrypt_seconds"] += time.perf_counter() - t
        t = time.perf_counter()
        returned = server_evaluate(plan, client.evaluation_keys, uploads)
        costs["server_seconds"] += time.perf_counter() - t
        t = time.perf_counter()
        logits.append(client.decrypt(returned, len(batch)))
        costs["client_decrypt_seconds"] += time.perf_counter() - t
        costs["upload_bytes"] += sum(map(len, uploads))
        costs["download_bytes"] += sum(map(len, returned))
        if on_batch is not None:
            on_batch(start + len(batch), len(images))
    n = len(images)
    return {"logits": np.concatenate(logits), "plan": plan, "images": n, **costs,
            "server_seconds_per_image": costs["server_seconds"] / n,
            "upload_bytes_per_image": costs["upload_bytes"] / n, "download_bytes_per_image": costs["download_bytes"] / n,
            "evaluation_key_bytes": len(client.evaluation_keys)}


def model_forward(model: nn.Module, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(images).float()).double().numpy()


__all__ = ["Client", "Linear", "NetworkPlan", "Square", "compile_network", "infer", "model_forward",
           "plaintext_forward", "plan_network", "server_evaluate"]
