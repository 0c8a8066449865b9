"""The real server and shim against requests of any shape: every RPC, every field, any value.

gRPC requests are drawn from the service's own descriptors, so a field added to a proto is
fuzzed without touching this file; callbacks are signed with the shim's real secrets, so they
reach the server. Values mix the ids of real reservations (so calls reach the database and the
payment service, in every state a reservation has) with what a careless or hostile client
sends: nothing, empty, huge, control characters, extreme numbers, unknown enum numbers,
impossible times, ids reused with other data. Whatever comes, the answer is one the caller can
act on, never a server fault. The examples are the same on every run; for a longer search:
`TICKETING_FUZZ_EXAMPLES=20000 scripts/test tests/integration/test_any_request.py`.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moim.ticketing.v1 import refund_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb

from tests.integration.callbacks import SIGNERS, post
from tests.integration.flows import EVENT, PRICE, configure_event, hold, paid_tier, payment_for

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import TicketingServiceAsyncStub as Stub

Known = dict[str, list[str]]
SERVICE = pb.DESCRIPTOR.services_by_name["TicketingService"]
SERVER_FAULTS = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.UNIMPLEMENTED,
    # Every wait inside a call is bounded far below the caller's 10 s (the payment service's
    # timeout is 3 s here, a lock's 2 s): a call that outlives it hangs.
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
# Both searches: the same examples on every run; the servers and the reservations are made
# once per test and serve all of its examples.
SEARCH = settings(
    max_examples=int(os.environ.get("TICKETING_FUZZ_EXAMPLES", "400")),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

NOW = int(time.time())
# Plausible values by field name; the `known` fixture adds the ids of its reservations.
KNOWN_VALUES: dict[str, list[str]] = {
    "event_id": [EVENT],
    "tier_id": ["vip", "free"],
    "currency_code": ["KRW", "USD"],
    "provider": ["portone", "toss"],
    "success_url": ["https://moim.example/ok"],
    "cancel_url": ["https://moim.example/back"],
    "external_url": ["https://tickets.example/e"],
    "email": ["a@example.com"],
    "request_id": ["fuzz-refund", "req-1"],
}
# CancelEvent ends an event for good, and a new tier list drops tiers: they change another
# event, so the scene stays for the other calls.
ANOTHER_EVENT: Known = {"event_id": ["another-event", EVENT.upper()]}
BY_METHOD = {"CancelEvent": ANOTHER_EVENT, "UpdateTicketingSettings": ANOTHER_EVENT}

awkward_text = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8"), min_size=200, max_size=600),
    st.sampled_from(
        [
            *("", " ", "\x00", "a\x00b", "\u202eevil", "é" * 300, "' OR 1=1", "krw", "XXX"),
            *("javascript:alert(1)", "http://[::1", "https://" + "a" * 5000, "not-an-email"),
        ]
    ),
)
INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [v for v in (0, -1, 2**31 - 1, 2**53 + 1, low, high) if low <= v <= high]
    return st.sampled_from(edges) | st.integers(low, high)


def _awkward(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    """What a careless or hostile client puts in `field`."""
    if field.type == FieldDescriptor.TYPE_STRING:
        return awkward_text
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=3000)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == FieldDescriptor.TYPE_ENUM:  # proto3 enums are open: unknown numbers too
        return _integers(-(2**31), 2**31 - 1)
    return _integers(*INT_RANGES[field.type])


def _plausible(field: FieldDescriptor, known: Known) -> st.SearchStrategy[Any]:
    """What a well-behaved client puts in `field`: a real id where one is known."""
    if field.type == FieldDescriptor.TYPE_STRING:
        values = known.get(field.name)
        return (
            st.sampled_from(values)
            if values
            else st.from_regex(r"[a-z][a-z0-9-]{0,11}", fullmatch=True)
        )
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.sampled_from([b"{}", b'{"type":"ticket_payment.paid"}'])
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == FieldDescriptor.TYPE_ENUM:  # a named value other than UNSPECIFIED
        assert field.enum_type is not None
        return st.sampled_from([value.number for value in field.enum_type.values][1:])
    assert field.containing_type is not None
    if field.containing_type.full_name == "google.protobuf.Timestamp":
        return (
            st.integers(NOW - 86_400 * 30, NOW + 86_400 * 30)
            if field.name == "seconds"
            else st.integers(0, 999_999_999)
        )
    return st.sampled_from([0, 1, 2, 5, 24, 50, 100, PRICE])


@st.composite
def _value(draw: st.DrawFn, field: FieldDescriptor, known: Known) -> Any:
    """Mostly plausible; one value in ten awkward."""
    awkward = draw(st.integers(0, 9)) == 0
    return draw(_awkward(field) if awkward else _plausible(field, known))


@st.composite
def messages(draw: st.DrawFn, descriptor: Descriptor, known: Known, depth: int = 0) -> Message:
    """A message of `descriptor`'s type: most fields plausible, some unset, some awkward."""
    message = GetMessageClass(descriptor)()
    for field in descriptor.fields:
        if draw(st.integers(0, 9)) == 0:
            continue  # one field in ten left unset
        inner = field.message_type
        if inner is not None and depth >= 3:
            continue
        if field.is_repeated:
            values = getattr(message, field.name)
            for _ in range(draw(st.integers(0, 4))):
                if inner is not None:
                    values.add().CopyFrom(draw(messages(inner, known, depth + 1)))
                else:
                    values.append(draw(_value(field, known)))
        elif inner is not None:
            getattr(message, field.name).CopyFrom(draw(messages(inner, known, depth + 1)))
        else:
            setattr(message, field.name, draw(_value(field, known)))
    return message


def calls(known: Known) -> st.SearchStrategy[tuple[MethodDescriptor, Message]]:
    """Any of the service's methods with a request for it."""

    def request_for(method: MethodDescriptor) -> st.SearchStrategy[Message]:
        assert method.input_type is not None
        return messages(method.input_type, known | BY_METHOD.get(method.name, {}))

    return st.sampled_from(list(SERVICE.methods)).flatmap(
        lambda method: st.tuples(st.just(method), request_for(method))
    )


async def _call(stub: Stub, method: MethodDescriptor, request: Message) -> grpc.StatusCode:
    rpc = getattr(stub, method.name)
    try:
        if method.server_streaming:
            stream = rpc(request, timeout=0.5)
            async for _ in stream:
                break
            stream.cancel()
        else:
            await rpc(request, timeout=10)
    except grpc.aio.AioRpcError as error:
        if method.server_streaming and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return grpc.StatusCode.OK  # a watch waits for events: one came, or none yet
        return error.code()
    return grpc.StatusCode.OK


@pytest.fixture
async def known(stub: Stub) -> Known:
    """A paid and a free tier with a live hold, a paid seat and a partly refunded one: the
    requests reuse their ids, so they reach every state a reservation can be in."""
    await configure_event(stub, paid_tier("vip", capacity=5), paid_tier("free", price=0))
    held, paid, refunded = [await hold(stub, f"fuzz-{n}") for n in range(3)]
    for reservation in (paid, refunded):
        await stub.ConfirmPayment(payment_for(reservation))
    partial = pb.RefundReservationRequest(
        reservation_id=refunded.reservation_id,
        amount=PRICE // 3,
        reason=refund_pb2.REFUND_REASON_GOODWILL,
        request_id="fuzz-refund",
    )
    refund = (await stub.RefundReservation(partial)).refund
    reservations = (held, paid, refunded)
    return KNOWN_VALUES | {
        "reservation_id": [r.reservation_id for r in reservations] + [held.reservation_id.upper()],
        "checkout_id": [r.checkout_id for r in reservations],
        "payment_id": [payment_for(r).payment_id for r in reservations],
        "user_id": [r.user_id for r in reservations] + ["someone-else"],
        "refund_id": [refund.refund_id],
    }


@SEARCH
@given(data=st.data())
async def test_no_request_of_any_shape_gets_a_server_fault(
    stub: Stub, known: Known, data: st.DataObject
) -> None:
    method, request = data.draw(calls(known))

    code = await _call(stub, method, request)

    assert code not in SERVER_FAULTS, f"{method.name}({request}) answered {code.name}"


# The webhook shim: signed callbacks of any content, through the shim to the real server.

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)
awkward_times = st.sampled_from(
    [
        *("", "yesterday", "2024-13-45T25:61:00Z", "0001-01-01T00:00:00+14:00"),
        *("9999-12-31T23:59:59-23:59", "2024-05-01T12:30:00", "2024-05-01 12:30:00Z"),
    ]
)
CALLBACK_TYPES = ["ticket_payment.paid"] * 4 + [
    "ticket_payment.refunded",
    "ticket_payment.refund_failed",
]
AWKWARD_AMOUNTS = st.sampled_from([PRICE - 1, 0, -PRICE, 2**63, 10**30, 1.5, "30000", None])
AWKWARD_FIELDS = {
    "amount": st.one_of(AWKWARD_AMOUNTS, AWKWARD_AMOUNTS, json_values),
    "paidAt": st.one_of(awkward_times, awkward_times, json_values),
    "type": st.sampled_from(["ticket_payment.unknown", "", "TICKET_PAYMENT.PAID"]) | json_values,
}


@st.composite
def callbacks(draw: st.DrawFn, known: Known) -> bytes:
    """A callback body: the fields of a real payment, one of them odd, some missing or extra."""
    n = draw(st.integers(0, len(known["checkout_id"]) - 1))
    plausible = {
        "type": draw(st.sampled_from(CALLBACK_TYPES)),
        "reservationId": known["reservation_id"][n],
        "checkoutId": known["checkout_id"][n],
        "paymentId": known["payment_id"][n],
        "txId": "tx_1",
        "provider": "portone",
        "amount": PRICE,
        "currency": "KRW",
        "paidAt": "2026-12-01T12:30:00+09:00",
        "refundId": draw(st.sampled_from(known["refund_id"] + [str(uuid.uuid4())])),
    }
    odd = draw(st.sampled_from([None, *plausible]))  # at most one field awkward
    event: dict[str, object] = {}
    for key, value in plausible.items():
        if key == odd:
            event[key] = draw(AWKWARD_FIELDS.get(key, json_values))
        elif draw(st.integers(0, 39)):  # one field in forty missing
            event[key] = value
    event |= draw(st.dictionaries(st.text(max_size=8), json_values, max_size=2))
    return json.dumps(event).encode()


@SEARCH
@given(data=st.data())
async def test_no_signed_callback_of_any_content_gets_a_server_fault(
    shim: httpx.AsyncClient, known: Known, data: st.DataObject
) -> None:
    body = data.draw(callbacks(known))
    delivery = data.draw(
        st.sampled_from(["d-1", "d-2"]) | st.from_regex(r"[A-Za-z0-9_.-]{1,60}", fullmatch=True)
    )
    signer = data.draw(st.sampled_from(list(SIGNERS.values())))

    response = await post(shim, signer(body, delivery))

    assert response.status_code in {200, 400, 404, 409}, (body, response.text)
    assert response.headers["content-type"] == "application/json"
