"""Collects field violations while a request is read, and raises them all at once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from ticketing_service.domain.errors import FieldViolation, InvalidArgument
from ticketing_service.domain.money import MAX_AMOUNT, is_known_currency
from ticketing_service.domain.reservations import MAX_ID_LENGTH
from ticketing_service.domain.times import EARLIEST, LATEST

MAX_NAME_LENGTH = 200
MAX_URL_LENGTH = 2048
# The longest list any request takes: an event has at most this many tiers. Other lists may
# have their own, smaller bound (answers).
MAX_LIST_LENGTH = 100


class Violations:
    """The bad fields of one request; `raise_if_any()` ends reading with INVALID_ARGUMENT."""

    def __init__(self) -> None:
        self._items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        """Record that `field` is invalid, with a sentence saying what is expected."""
        self._items.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        """Raise InvalidArgument listing every violation, if there is one."""
        if self._items:
            raise InvalidArgument(self._items)

    def required_id(self, field: str, value: str) -> str:
        """A required id: non-empty, no surrounding spaces, at most 128 characters."""
        if not value:
            self.add(field, "Required; must not be empty.")
        elif len(value) > MAX_ID_LENGTH or value != value.strip():
            self.add(field, f"Must be at most {MAX_ID_LENGTH} characters, without spaces around.")
        return value

    def uuid(self, field: str, value: str) -> str:
        """A required id the service created: a UUID in canonical text form."""
        try:
            return str(uuid.UUID(value))
        except ValueError:
            noun = field.removesuffix("_id")  # `reservation_id` → a reservation id
            self.add(field, f"Must be a {noun} id (a UUID) returned by the service.")
            return value

    def text(self, field: str, value: str, max_length: int, *, required: bool = False) -> str:
        """A free text of bounded length."""
        if required and not value.strip():
            self.add(field, "Required; must not be blank.")
        elif len(value) > max_length:
            self.add(field, f"Must be at most {max_length} characters.")
        return value

    def amount(self, field: str, value: int) -> int:
        """An amount in minor units: a whole number from 0 up to 2^53 - 1."""
        if value < 0:
            self.add(field, "Must not be negative; amounts are in the currency's minor unit.")
        elif value > MAX_AMOUNT:
            self.add(field, f"Must be at most {MAX_AMOUNT}.")
        return value

    def currency(self, field: str, value: str, *, required: bool) -> str | None:
        """An ISO 4217 code the service knows, or None when optional and empty."""
        if not value:
            if required:
                self.add(field, "Required; an ISO 4217 code such as KRW or USD.")
            return None
        if not is_known_currency(value):
            self.add(field, "Must be a supported ISO 4217 code in upper case, such as KRW or USD.")
        return value

    def url(self, field: str, value: str) -> str:
        """An absolute http(s) URL of bounded length."""
        if len(value) > MAX_URL_LENGTH or not value.startswith(("https://", "http://")):
            self.add(field, f"Must be an http(s) URL of at most {MAX_URL_LENGTH} characters.")
        return value

    def timestamp(self, field: str, value: Timestamp) -> datetime | None:
        """A timestamp as an aware datetime the service can keep (domain/times.py): a tier
        whose sale began at year 1 was kept as -infinity, and every hold of it failed INTERNAL.
        """
        try:
            when = value.ToDatetime(tzinfo=UTC)
        except (ValueError, OverflowError):
            when = None
        if when is None or not EARLIEST <= when <= LATEST:
            self.add(field, "Must be a valid timestamp from 1970 to 9999-12-31T23:59:59Z.")
            return None
        return when


def oversized_lists(message: Message, prefix: str = "") -> list[FieldViolation]:
    """The lists of `message` (and of its nested messages) longer than any request takes.

    It reads lengths only, never an element, so a request of a million empty tiers is refused
    at once; the mappings then apply each list's own, smaller bound.
    """
    violations = []
    for field, value in message.ListFields():
        if field.is_repeated:
            if len(value) > MAX_LIST_LENGTH:
                description = f"Must have at most {MAX_LIST_LENGTH} items."
                violations.append(FieldViolation(prefix + field.name, description))
        elif isinstance(value, Message):
            violations.extend(oversized_lists(value, f"{prefix}{field.name}."))
    return violations


def nul_characters(message: Message, prefix: str = "") -> list[FieldViolation]:
    """The text fields of `message`, at any depth, that contain NUL (U+0000).

    Protobuf strings may carry it, but Postgres cannot store it in text: such a value is
    refused here, with its field, instead of failing in the database.
    """
    if not prefix and b"\x00" not in message.SerializeToString():
        # A NUL in a text field is a zero byte in the message's encoding, so without one the
        # walk below finds nothing. Checking the encoding first costs a tenth of the walk.
        return []
    violations = []
    for field, value in message.ListFields():
        path = prefix + field.name
        repeated = field.is_repeated
        values = list(value) if repeated else [value]
        for index, item in enumerate(values):
            where = f"{path}[{index}]" if repeated else path
            if isinstance(item, str) and "\x00" in item:
                violations.append(FieldViolation(where, "Must not contain the NUL character."))
            elif isinstance(item, Message):
                violations.extend(nul_characters(item, where + "."))
    return violations
