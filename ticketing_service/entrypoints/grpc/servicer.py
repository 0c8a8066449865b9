"""The TicketingService servicer: reads requests, calls the use cases, writes responses.

It holds no business rules. Domain errors become rich gRPC statuses in one place
(`_answering_errors`), so no handler can leak an exception text or a stack trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Concatenate, TypeVar

import grpc
from google.protobuf.message import Message
from moim.ticketing.v1 import ticketing_service_pb2 as pb
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

from ticketing_service.domain.errors import InvalidArgument, TicketingError
from ticketing_service.entrypoints.grpc import (
    event_mapping,
    refund_mapping,
    reservation_mapping,
    settings_mapping,
)
from ticketing_service.entrypoints.grpc.errors import abort, internal_status
from ticketing_service.entrypoints.grpc.validation import (
    Violations,
    nul_characters,
    oversized_lists,
)
from ticketing_service.service_layer import (
    events_handlers,
    payment_handlers,
    reconciliation,
    refund_handlers,
    refund_worker,
    registration_handlers,
    settings_handlers,
)
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.event_fanout import EventFanout

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
Request = TypeVar("Request")
Response = TypeVar("Response")
Method = Callable[[Any, Request, Context], Awaitable[Response]]


def _answering_errors(
    method: Callable[Concatenate[TicketingServicer, Request, Context, ...], Awaitable[Response]],
) -> Callable[[TicketingServicer, Request, Context], Awaitable[Response]]:
    """Turn domain errors into their status and anything else into a bare INTERNAL.

    A request with an over-long list (`oversized_lists`, before any element is read) or with
    NUL in any text field (`nul_characters`) is refused first.
    """

    @functools.wraps(method)
    async def wrapper(self: TicketingServicer, request: Request, context: Context) -> Response:
        try:
            # Lengths first: the NUL walk reads every element.
            refused = isinstance(request, Message) and (
                oversized_lists(request) or nul_characters(request)
            )
            if refused:
                raise InvalidArgument(refused)
            return await method(self, request, context)
        except TicketingError as error:
            await abort(context, error)
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception:
            log.exception("rpc failed unexpectedly", extra={"rpc": method.__name__})
            await context.abort_with_status(internal_status())
        raise AssertionError("abort_with_status always raises")  # pragma: no cover

    return wrapper


class TicketingServicer(pb_grpc.TicketingServiceServicer):
    """moim.ticketing.v1.TicketingService on the service layer."""

    def __init__(self, deps: Dependencies, max_watchers: int) -> None:
        self._deps = deps
        self._fanout = EventFanout(deps, max_watchers)

    def end_watches(self) -> None:
        """The server is stopping: end every WatchRegistrationEvents now (UNAVAILABLE,
        SERVER_STOPPING), so that its client watches again elsewhere at once."""
        self._fanout.end_watches()

    @_answering_errors
    async def UpdateTicketingSettings(
        self, request: pb.UpdateTicketingSettingsRequest, context: Context
    ) -> pb.UpdateTicketingSettingsResponse:
        """Store an event's tiers and derive its mode."""
        update = settings_mapping.read_settings_update(request)
        decision = await settings_handlers.update_ticketing_settings(self._deps, update)
        return pb.UpdateTicketingSettingsResponse(
            settings=settings_mapping.write_settings(decision.settings),
            retained_tier_ids=decision.retained_tier_ids,
        )

    @_answering_errors
    async def GetTicketingSettings(
        self, request: pb.GetTicketingSettingsRequest, context: Context
    ) -> pb.GetTicketingSettingsResponse:
        """Read an event's settings."""
        v = Violations()
        event_id = v.required_id("event_id", request.event_id)
        v.raise_if_any()
        settings = await settings_handlers.get_ticketing_settings(self._deps, event_id)
        return pb.GetTicketingSettingsResponse(settings=settings_mapping.write_settings(settings))

    @_answering_errors
    async def StartPaidRegistration(
        self, request: pb.StartPaidRegistrationRequest, context: Context
    ) -> pb.StartPaidRegistrationResponse:
        """Hold a seat and open its checkout."""
        command = reservation_mapping.read_start(request)
        result = await registration_handlers.start_paid_registration(self._deps, command)
        response = pb.StartPaidRegistrationResponse(requires_payment=result.requires_payment)
        if result.reservation is not None:
            response.reservation.CopyFrom(reservation_mapping.write_reservation(result.reservation))
        return response

    @_answering_errors
    async def GetReservation(
        self, request: pb.GetReservationRequest, context: Context
    ) -> pb.GetReservationResponse:
        """Read a reservation."""
        reservation_id = reservation_mapping.read_reservation_id(request.reservation_id)
        reservation = await registration_handlers.get_reservation(self._deps, reservation_id)
        return pb.GetReservationResponse(
            reservation=reservation_mapping.write_reservation(reservation)
        )

    @_answering_errors
    async def FindReservation(
        self, request: pb.FindReservationRequest, context: Context
    ) -> pb.FindReservationResponse:
        """Read a user's latest reservation for an event."""
        event_id, user_id = reservation_mapping.read_find(request)
        reservation = await registration_handlers.find_reservation(self._deps, event_id, user_id)
        return pb.FindReservationResponse(
            reservation=reservation_mapping.write_reservation(reservation)
        )

    @_answering_errors
    async def CancelReservation(
        self, request: pb.CancelReservationRequest, context: Context
    ) -> pb.CancelReservationResponse:
        """Release a pending hold."""
        reservation_id, user_id = reservation_mapping.read_cancel(request)
        reservation = await registration_handlers.cancel_reservation(
            self._deps, reservation_id, user_id
        )
        return pb.CancelReservationResponse(
            reservation=reservation_mapping.write_reservation(reservation)
        )

    @_answering_errors
    async def ConfirmPayment(
        self, request: pb.ConfirmPaymentRequest, context: Context
    ) -> pb.ConfirmPaymentResponse:
        """Record a payment and give its user a seat."""
        claim = reservation_mapping.read_claim(request)
        result = await payment_handlers.confirm_payment(self._deps, claim)
        return pb.ConfirmPaymentResponse(
            outcome=reservation_mapping.OUTCOMES[result.outcome],
            reservation=reservation_mapping.write_reservation(result.reservation),
        )

    @_answering_errors
    async def ReconcileReservation(
        self, request: pb.ReconcileReservationRequest, context: Context
    ) -> pb.ReconcileReservationResponse:
        """Ask the payment service about a reservation's checkout and settle what it found."""
        reservation_id = reservation_mapping.read_reservation_id(request.reservation_id)
        found = await reconciliation.reconcile_reservation(self._deps, reservation_id)
        return reservation_mapping.write_reconciled(found)

    @_answering_errors
    async def CancelRegistration(
        self, request: pb.CancelRegistrationRequest, context: Context
    ) -> pb.CancelRegistrationResponse:
        """Give up a confirmed seat, with the refund the policy gives."""
        reservation_id, user_id, request_id = refund_mapping.read_cancel_registration(request)
        result = await refund_handlers.cancel_registration(
            self._deps, reservation_id, user_id, request_id
        )
        response = pb.CancelRegistrationResponse(
            reservation=reservation_mapping.write_reservation(result.reservation)
        )
        if result.refund is not None:
            response.refund.CopyFrom(refund_mapping.write_refund(result.refund))
        return response

    @_answering_errors
    async def RefundReservation(
        self, request: pb.RefundReservationRequest, context: Context
    ) -> pb.RefundReservationResponse:
        """Refund all or part of a reservation's payment."""
        command = refund_mapping.read_refund(request)
        result = await refund_handlers.refund_reservation(self._deps, command)
        assert result.refund is not None, "a refund was made"
        return pb.RefundReservationResponse(
            reservation=reservation_mapping.write_reservation(result.reservation),
            refund=refund_mapping.write_refund(result.refund),
        )

    @_answering_errors
    async def RefreshRefund(
        self, request: pb.RefreshRefundRequest, context: Context
    ) -> pb.RefreshRefundResponse:
        """Ask the payment service where a refund stands."""
        refund_id = refund_mapping.read_refund_id(request.refund_id)
        refund = await refund_worker.refresh_refund(self._deps, refund_id)
        return pb.RefreshRefundResponse(refund=refund_mapping.write_refund(refund))

    @_answering_errors
    async def CancelEvent(
        self, request: pb.CancelEventRequest, context: Context
    ) -> pb.CancelEventResponse:
        """Cancel an event; the rest runs in the background."""
        event_id, request_id = refund_mapping.read_cancel_event(request)
        progress = await refund_handlers.cancel_event(self._deps, event_id, request_id)
        return pb.CancelEventResponse(cancellation=refund_mapping.write_cancellation(progress))

    @_answering_errors
    async def GetEventCancellation(
        self, request: pb.GetEventCancellationRequest, context: Context
    ) -> pb.GetEventCancellationResponse:
        """Read how far an event's cancellation is."""
        v = Violations()
        event_id = v.required_id("event_id", request.event_id)
        v.raise_if_any()
        progress = await refund_handlers.get_event_cancellation(self._deps, event_id)
        return pb.GetEventCancellationResponse(
            cancellation=refund_mapping.write_cancellation(progress)
        )

    @_answering_errors
    async def ListRegistrationEvents(
        self, request: pb.ListRegistrationEventsRequest, context: Context
    ) -> pb.ListRegistrationEventsResponse:
        """Read a page of the feed."""
        after, page_size = event_mapping.read_list(request)
        page = await events_handlers.list_registration_events(self._deps, after, page_size)
        return pb.ListRegistrationEventsResponse(
            events=[event_mapping.write_event(e) for e in page.events],
            next_sequence=page.next_sequence,
        )

    async def WatchRegistrationEvents(
        self, request: pb.WatchRegistrationEventsRequest, context: Context
    ) -> AsyncIterator[pb.WatchRegistrationEventsResponse]:
        """Replay the feed after a sequence, then stream events as they are numbered."""
        try:
            after = event_mapping.read_watch(request)
            watch = events_handlers.watch_registration_events(self._deps, self._fanout, after)
            # Closed here, not by the garbage collector: the watcher's place is freed at once.
            async with contextlib.aclosing(watch) as events:
                async for event in events:
                    yield pb.WatchRegistrationEventsResponse(event=event_mapping.write_event(event))
        except TicketingError as error:
            await abort(context, error)
        except (grpc.aio.AbortError, grpc.aio.UsageError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("rpc failed unexpectedly", extra={"rpc": "WatchRegistrationEvents"})
            await context.abort_with_status(internal_status())
