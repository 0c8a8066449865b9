"""The SQL that writes an import-moim plan: rows as the service writes its own.

Every statement creates what is missing and leaves what exists (ON CONFLICT DO NOTHING), except
the one change an import may make to a reservation it finds: a hold the source has since
settled is settled here too. So a second import changes nothing.
"""

from __future__ import annotations

REGISTRATIONS_OF = (
    "SELECT registration_id::text AS registration_id, reservation_id::text AS reservation_id,"
    " user_id, tier_id, status = 'accepted' AS accepted FROM registrations"
    " WHERE event_id = %(e)s"
)
# Holds whose seat is counted as taken, as the seat count reads them.
LIVE_HOLDS_OF = (
    "SELECT reservation_id::text AS reservation_id, user_id, tier_id FROM reservations"
    " WHERE event_id = %(e)s AND status = 'pending_payment'"
    " AND expire_time > statement_timestamp()"
)
RESERVATIONS_OF = (
    "SELECT reservation_id::text AS reservation_id, user_id, tier_id,"
    " status IN ('expired', 'cancelled') OR status = 'pending_payment'"
    " AND expire_time <= statement_timestamp() AS ended_unpaid"
    " FROM reservations WHERE event_id = %(e)s"
)
# Seats taken as StartPaidRegistration counts them (ALL_SEATS_TAKEN), for tiers past capacity.
OVER_CAPACITY = (
    "SELECT tier_id, name, capacity, taken FROM (SELECT t.tier_id, t.name, t.capacity,"
    " t.position, t.accepted_count + t.external_seats + (SELECT count(*) FROM reservations r"
    " WHERE r.event_id = t.event_id AND r.tier_id = t.tier_id AND (r.status = 'pending_payment'"
    " AND r.expire_time > statement_timestamp() OR r.status = 'confirmed'"
    " AND NOT r.seat_folded)) AS taken FROM tiers t WHERE t.event_id = %(e)s"
    " AND t.delete_time IS NULL AND t.capacity IS NOT NULL) counted WHERE taken > capacity"
    " ORDER BY position"
)
# Settings and tiers are created only when the service has none: from then on the organizer's
# saves (UpdateTicketingSettings) keep them, with the service's rules (e.g. legacy external).
CREATE_SETTINGS = (
    "INSERT INTO ticketing_settings (event_id, event_title, mode, provider, provider_account_id,"
    " currency_code, enabled, legacy, external_url, event_start_time) VALUES (%(e)s, %(title)s,"
    " %(mode)s, %(provider)s, %(account)s, %(currency)s, %(enabled)s, %(legacy)s, %(url)s,"
    " %(start)s) ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)
CREATE_TIER = (
    "INSERT INTO tiers (event_id, tier_id, position, name, price_amount, capacity,"
    " sale_start_time, sale_end_time) VALUES (%(e)s, %(t)s, %(position)s, %(name)s, %(price)s,"
    " %(capacity)s, %(start)s, %(end)s) ON CONFLICT (event_id, tier_id) DO NOTHING"
    " RETURNING tier_id"
)
# Set, never added to: the count follows what Moim accepted since the last import.
SET_EXTERNAL_SEATS = (
    "UPDATE tiers SET external_seats = %(n)s WHERE event_id = %(e)s AND tier_id = %(t)s"
    " AND external_seats <> %(n)s RETURNING tier_id"
)
# A hold the plan follows up is due to reconciliation at once, as the service's own released
# holds with a checkout are (RELEASE_HOLD).
_RESERVATION_VALUES = (
    "INSERT INTO reservations (reservation_id, event_id, tier_id, user_id, status, amount,"
    " currency_code, provider, provider_account_id, answers, success_url, cancel_url,"
    " checkout_id, create_time, expire_time, paid_time, update_time, payment_id,"
    " next_reconcile_time) VALUES (%(r)s, %(e)s, %(t)s, %(u)s, %(s)s, %(amount)s, %(currency)s,"
    " %(provider)s, %(account)s, CAST(%(answers)s AS jsonb), %(success)s, %(cancel)s,"
    " %(checkout)s, %(created)s, %(expires)s, %(paid)s, %(updated)s, %(payment)s,"
    " CASE WHEN %(follow_up)s THEN now() END)"
)
# A settled reservation: new, or a hold imported before that the source has since settled. A
# confirmation is left unfolded (`seat_folded` false), as the service leaves its own: the
# sweeper adds it to the tier's accepted_count, and seat counts see it until then. Settled,
# it is asked about no more, as ConfirmPayment leaves its own.
SETTLE = (
    _RESERVATION_VALUES + " ON CONFLICT (reservation_id) DO UPDATE SET status = excluded.status,"
    " checkout_id = excluded.checkout_id, paid_time = excluded.paid_time,"
    " payment_id = excluded.payment_id, seat_folded = false, update_time = excluded.update_time,"
    " next_reconcile_time = NULL, reconcile_lease_until = NULL"
    " WHERE reservations.status IN ('pending_payment', 'expired', 'cancelled')"
    " RETURNING reservation_id"
)
HOLD = _RESERVATION_VALUES + " ON CONFLICT DO NOTHING RETURNING reservation_id"
REGISTER = (
    "INSERT INTO registrations (registration_id, reservation_id, event_id, tier_id, user_id,"
    " status, answers, create_time) VALUES (%(g)s, %(r)s, %(e)s, %(t)s, %(u)s, 'accepted',"
    " CAST(%(answers)s AS jsonb), %(created)s) ON CONFLICT DO NOTHING RETURNING registration_id"
)
REGISTERED_FOR = "SELECT 1 AS found FROM registrations WHERE reservation_id = %(r)s"
ACCEPTED_REGISTRATION_OF = (
    "SELECT reservation_id::text AS reservation_id FROM registrations"
    " WHERE event_id = %(e)s AND user_id = %(u)s AND status = 'accepted'"
)
# A hold's requires_payment row turns paid when the source settled it, as ConfirmPayment does.
PAYMENT = (
    "INSERT INTO payments (payment_row_id, reservation_id, checkout_id, status, provider, amount,"
    " currency_code, provider_payment_id, tx_id, paid_time, raw_event, create_time, update_time)"
    " VALUES (%(row)s, %(r)s, %(checkout)s, %(s)s, %(provider)s, %(amount)s, %(currency)s,"
    " %(payment)s, %(tx)s, %(paid)s, %(raw)s, %(created)s, %(updated)s)"
    " ON CONFLICT (reservation_id, checkout_id) DO UPDATE SET status = excluded.status,"
    " provider_payment_id = excluded.provider_payment_id, tx_id = excluded.tx_id,"
    " paid_time = excluded.paid_time, raw_event = excluded.raw_event,"
    " update_time = excluded.update_time"
    " WHERE payments.status <> 'paid' AND excluded.status = 'paid'"
)
STATUSES = (
    "SELECT reservation_id::text AS reservation_id, status FROM reservations"
    " WHERE reservation_id = ANY(CAST(%(ids)s AS uuid[]))"
)
