"""In-process driver for a secure-aggregation round: routes the protocol's bytes, counts and times them.

The protocol itself is pure (:mod:`unseen.crypto.secagg`); this driver plays the network: it hands
each stage's messages to the other side, drops the clients a test or simulation says drop out before
a stage, and lets a caller tamper with messages in flight. A network runtime would do the same with
sockets and call the same functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from unseen.crypto import secagg
from unseen.crypto.secagg import SecAggParams

# (stage, sender, receiver, message) -> message: lets tests play a malicious network or party.
Tamper = Callable[[str, str, str, bytes], bytes]


@dataclass
class SecureSumResult:
    """The sum and what the round cost: bytes each way and seconds per stage, clients apart from the server."""

    total: np.ndarray
    survivors: list[int]
    bytes_up: dict[str, int] = field(default_factory=dict)
    bytes_down: dict[str, int] = field(default_factory=dict)
    client_seconds: dict[str, float] = field(default_factory=dict)
    server_seconds: dict[str, float] = field(default_factory=dict)

    def summary(self, clients: int) -> dict[str, float]:
        up, down = sum(self.bytes_up.values()), sum(self.bytes_down.values())
        return {
            "survivors": len(self.survivors), "bytes_up": up, "bytes_down": down,
            "bytes_up_per_client": up / clients, "client_seconds": sum(self.client_seconds.values()),
            "client_seconds_per_client": sum(self.client_seconds.values()) / clients,
            "server_seconds": sum(self.server_seconds.values()),
        }


def secure_sum(
    params: SecAggParams,
    inputs: Mapping[int, np.ndarray],
    drop_before: Mapping[str, set[int]] | None = None,
    tamper: Tamper | None = None,
) -> SecureSumResult:
    """Run one round for clients ``0 .. params.clients - 1``; raises :class:`SecAggAbort` if it cannot finish.

    ``drop_before[stage]`` lists clients that vanish before sending that stage's message (stages in
    :data:`unseen.crypto.secagg.STAGES`).
    """
    drop = {s: set(drop_before.get(s, set())) for s in secagg.STAGES} if drop_before else {}
    gone: set[int] = set()
    res = SecureSumResult(np.zeros(0), [])

    def alive(stage: str, clients: list[int]) -> list[int]:
        gone.update(drop.get(stage, set()))
        return [c for c in clients if c not in gone]

    def send(stage: str, direction: str, who: int, msg: bytes) -> bytes:
        if tamper is not None:
            sender, receiver = (f"client {who}", "server") if direction == "up" else ("server", f"client {who}")
            msg = tamper(stage, sender, receiver, msg)
        book = res.bytes_up if direction == "up" else res.bytes_down
        book[stage] = book.get(stage, 0) + len(msg)
        return msg

    def client_clock(stage: str, start: float) -> None:
        res.client_seconds[stage] = res.client_seconds.get(stage, 0.0) + time.perf_counter() - start

    states: dict[int, secagg.ClientState] = {}
    up: dict[int, bytes] = {}
    for c in alive("advertise", list(range(params.clients))):
        t = time.perf_counter()
        states[c], msg = secagg.client_advertise(params, c)
        client_clock("advertise", t)
        up[c] = send("advertise", "up", c, msg)
    t = time.perf_counter()
    server, down = secagg.server_route_keys(params, up)
    res.server_seconds["advertise"] = time.perf_counter() - t

    up = {}
    for c in alive("share_keys", sorted(down)):
        t = time.perf_counter()
        msg = secagg.client_share_keys(states[c], send("advertise", "down", c, down[c]))
        client_clock("share_keys", t)
        up[c] = send("share_keys", "up", c, msg)
    t = time.perf_counter()
    down = secagg.server_route_shares(server, up)
    res.server_seconds["share_keys"] = time.perf_counter() - t

    up = {}
    for c in alive("masked_input", sorted(down)):
        t = time.perf_counter()
        msg = secagg.client_masked_input(states[c], send("share_keys", "down", c, down[c]), inputs[c])
        client_clock("masked_input", t)
        up[c] = send("masked_input", "up", c, msg)
    t = time.perf_counter()
    down = secagg.server_collect_masked(server, up)
    res.server_seconds["masked_input"] = time.perf_counter() - t

    up = {}
    for c in alive("unmask", sorted(down)):
        t = time.perf_counter()
        msg = secagg.client_unmask(states[c], send("masked_input", "down", c, down[c]))
        client_clock("unmask", t)
        up[c] = send("unmask", "up", c, msg)
    t = time.perf_counter()
    res.total, res.survivors = secagg.server_unmask(server, up)
    res.server_seconds["unmask"] = time.perf_counter() - t
    return res


__all__ = ["SecureSumResult", "Tamper", "secure_sum"]
