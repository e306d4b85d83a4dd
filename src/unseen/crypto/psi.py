"""Private set intersection: which people two parties both hold, without showing each other the rest.

Built on OpenMined's PSI library (``openmined-psi``: ECDH over P-256, the client learns the intersection,
the server learns only the size of the client's set). Vertical federated learning uses it to align
records: the label party is the client of one PSI run with every other party.

Messages cross as serialized protocol buffers, exactly as they would over a network, so the byte counts
are real. The server's setup is sent in ``RAW`` form (one encrypted element per server item): exact, with
no false positives, at about 33 bytes per item; a wrong alignment would silently join two people's
columns, which the approximate encodings (Bloom filter, GCS) would allow with a small probability.

What each side learns (semi-honest parties): the client learns which of its items the server holds; the
server learns how many items the client has. Nothing else about the other set is revealed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Intersection:
    """The client's indices of the common items (ascending) and the bytes each way."""

    client_indices: np.ndarray
    bytes_to_server: int
    bytes_to_client: int


def _psi():  # imported here: the extra is optional, and the message says how to install it
    try:
        import private_set_intersection.python as psi
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("private set intersection needs openmined-psi: pip install 'unseen[psi]'") from exc
    return psi


def private_intersection(client_items: Sequence[str], server_items: Sequence[str]) -> Intersection:
    """Run the two-message PSI protocol between a client and a server holding these items.

    Both sides run here with fresh keys; only serialized messages pass between them.
    """
    psi = _psi()
    client = psi.client.CreateWithNewKey(True)  # True: the client learns the intersection, not just its size
    server = psi.server.CreateWithNewKey(True)
    # server -> client: the server's items, encrypted under its key
    setup = server.CreateSetupMessage(0.0, len(client_items), list(server_items), psi.DataStructure.RAW).SerializeToString()
    # client -> server: the client's items, encrypted under its key
    request = client.CreateRequest(list(client_items)).SerializeToString()
    # server -> client: the client's items, re-encrypted under the server's key as well
    response = server.ProcessRequest(_parse(psi.Request, request)).SerializeToString()
    found = client.GetIntersection(_parse(psi.ServerSetup, setup), _parse(psi.Response, response))
    return Intersection(np.sort(np.asarray(found, dtype=np.int64)), len(request), len(setup) + len(response))


def _parse(kind, payload: bytes):
    message = kind()
    message.ParseFromString(payload)
    return message


@dataclass(frozen=True)
class Alignment:
    """Rows of every party's table that hold the same people, in the same order.

    ``rows[p][i]`` is party p's row of the i-th common person. ``bytes`` is everything the alignment
    sent: the PSI messages and the list of common ids the label party tells each other party.
    """

    ids: list[str]
    rows: list[np.ndarray]
    bytes: int


def align(party_ids: Sequence[Sequence[str]]) -> Alignment:
    """Align the parties' records on their ids: party 0 (the label party) runs PSI with each other party.

    Party 0 learns which of its ids every other party holds and keeps the ids all of them hold; it then
    sends that list to every party, so each learns the common ids (the usual price of vertical learning:
    a party learns which of its people the others also hold). Ids must be unique within a party.
    """
    for p, ids in enumerate(party_ids):
        if len(set(ids)) != len(ids):
            raise ValueError(f"party {p} lists an id more than once; ids must identify one record each")
    keep = np.ones(len(party_ids[0]), dtype=bool)
    sent = 0
    for other in party_ids[1:]:
        found = private_intersection(party_ids[0], other)
        held = np.zeros_like(keep)
        held[found.client_indices] = True
        keep &= held
        sent += found.bytes_to_server + found.bytes_to_client
    common = [party_ids[0][i] for i in np.flatnonzero(keep)]
    sent += sum(len(i.encode()) + 1 for i in common) * (len(party_ids) - 1)  # newline-separated id list
    rows = []
    for ids in party_ids:
        where = {item: r for r, item in enumerate(ids)}
        rows.append(np.asarray([where[item] for item in common], dtype=np.int64))
    return Alignment(common, rows, sent)


__all__ = ["Alignment", "Intersection", "align", "private_intersection"]
