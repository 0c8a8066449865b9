"""What the use cases are given by the composition root."""

from __future__ import annotations

from dataclasses import dataclass

from ticketing_service.service_layer.ports import UnitOfWorkFactory


@dataclass(frozen=True, slots=True)
class Dependencies:
    """The adapters and settings every handler may use."""

    uow: UnitOfWorkFactory
    default_provider_account_id: str | None = None
