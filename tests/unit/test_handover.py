"""The relay.sock handover header (protocol/handover.py, docs/wire.md "The isolation
handover"): which descriptor is which."""

from __future__ import annotations

import pytest

from socksify.protocol import handover
from socksify.protocol.control import SESSION_SIZE

K = handover.Kind


def test_tagged_header_round_trips() -> None:
    session = bytes(range(SESSION_SIZE))
    header = handover.Header(session, (K.RELAY, K.RELAY, K.REDIRECT, K.DNS_UDP,
                                       K.DNS_TCP))
    data = header.dumps()
    assert data == b"S" + session + b"rrRut"
    assert len(data) <= handover.MAX_SIZE - 3
    assert handover.loads(data, 5) == header


def test_first_form_means_relay_listeners_without_a_session() -> None:
    assert handover.loads(b"L", 2) == handover.Header(bytes(SESSION_SIZE),
                                                      (K.RELAY, K.RELAY))


@pytest.mark.parametrize("data, nfds", [
    (b"S" + bytes(SESSION_SIZE) + b"rR", 3),     # fewer kinds than descriptors
    (b"S" + bytes(SESSION_SIZE) + b"rRu", 2),    # more
    (b"S" + bytes(SESSION_SIZE) + b"x", 1),      # an unknown kind
    (b"S" + bytes(3), 0),                        # a short session
    (b"Q", 1),                                   # neither form
    (b"", 1),
])
def test_a_header_that_does_not_fit_is_refused(data: bytes, nfds: int) -> None:
    with pytest.raises(ValueError):
        handover.loads(data, nfds)
