"""The SQL of the reservation repository: reading, locking, and changes that append events.

Statement names are the repository methods that send them. Parameters are named, `%(name)s`
(`transaction.py` numbers them for the driver).
"""

from __future__ import annotations

from ticketing_service.adapters.db.reservation_rows import CHANGED, FROM, columns, snapshot

# A locked reservation also carries the database's clock as this statement, sent after the lock
# was granted, started: `now()` would be the transaction's start, from before any wait for the
# lock. Seat counts read the same clock (`statement_timestamp()`).
_READ_LOCKED = (
    f"SELECT {columns('r', 'g.registration_id')}, {{clock}} AS db_now,"
    " EXISTS (SELECT 1 FROM registrations o WHERE o.event_id = r.event_id"
    " AND o.user_id = r.user_id AND o.reservation_id <> r.reservation_id"
    " AND o.status = 'accepted') AS user_registered,"
    " ARRAY(SELECT x.payment_id FROM refunds x WHERE x.reservation_id = r.reservation_id"
    " AND (x.status <> 'failed' OR x.failure_code = 'outcome_unknown')) AS owed_back,"
    " EXISTS (SELECT 1 FROM ticketing_settings s WHERE s.event_id = r.event_id"
    " AND s.cancel_time IS NOT NULL) AS event_cancelled,"
    # The payment being confirmed (none: NULL) already paid another reservation.
    " EXISTS (SELECT 1 FROM payments p WHERE p.provider_payment_id = %(payment)s"
    " AND p.status = 'paid' AND p.reservation_id <> r.reservation_id) AS paid_elsewhere"
    f" FROM {FROM} WHERE r.reservation_id = %(id)s"
)
READ_LOCKED = _READ_LOCKED.format(clock="statement_timestamp()")
# The test-only control: the clock of the transaction's start, as before this was fixed.
READ_LOCKED_BY_TRANSACTION_START = _READ_LOCKED.format(clock="now()")
GET = f"SELECT {columns('r', 'g.registration_id')} FROM {FROM} WHERE r.reservation_id = %(id)s"
LATEST_OF = (
    f"SELECT {columns('r', 'g.registration_id')} FROM {FROM}"
    " WHERE r.event_id = %(e)s AND r.user_id = %(u)s"
    " ORDER BY r.create_time DESC, r.reservation_id DESC LIMIT 1"
)

# The statements below that change a reservation also append its event and return the row as
# changed (RETURNING), so each is one round trip. Sub-statements of one WITH share a snapshot
# and do not see each other's writes: the event's payload is therefore built from what the
# change RETURNED, never re-read from the table.

INSERT = (
    "WITH r AS (INSERT INTO reservations (reservation_id, event_id, tier_id, user_id, status,"
    " amount, currency_code, provider, provider_account_id, answers, customer_name,"
    " customer_email, success_url, cancel_url, expire_time) VALUES (%(id)s, %(e)s, %(t)s,"
    " %(u)s, 'pending_payment', %(amount)s, %(currency)s, %(provider)s, %(account)s,"
    " CAST(%(answers)s AS jsonb), %(name)s, %(email)s, %(success)s, %(cancel)s,"
    " now() + make_interval(secs => %(hold)s)) RETURNING *),"
    " e AS (INSERT INTO registration_events (type, reservation_id, reservation)"
    f" SELECT %(event)s, r.reservation_id, {snapshot('r', 'NULL')} FROM r)"
    f" SELECT {columns('r', 'NULL')} FROM r"
)
# Only a hold still pending gets its checkout: one cancelled or expired while the payment
# service was asked stays without a URL to pay at.
ATTACH_CHECKOUT = (
    "WITH r AS (UPDATE reservations SET checkout_id = %(c)s, checkout_url = %(url)s,"
    " update_time = now() WHERE reservation_id = %(id)s AND status = 'pending_payment'"
    " RETURNING *),"
    " p AS (INSERT INTO payments (payment_row_id, reservation_id, checkout_id, status, provider,"
    " amount, currency_code) SELECT %(row)s, reservation_id, %(c)s, 'requires_payment',"
    " provider, amount, currency_code FROM r ON CONFLICT DO NOTHING)"
    f" SELECT {columns('r', 'g.registration_id')} FROM {CHANGED}"
)
# A released hold whose checkout was opened may still be paid (the user paid, then cancelled;
# or an expired hold's callback was lost): reconciliation follows it up, starting now.
RELEASE_HOLD = (
    "WITH r AS (UPDATE reservations SET status = %(s)s, update_time = now(),"
    " next_reconcile_time = CASE WHEN checkout_id IS NOT NULL THEN now() END"
    " WHERE reservation_id = %(id)s AND status = 'pending_payment' RETURNING *),"
    " e AS (INSERT INTO registration_events (type, reservation_id, reservation)"
    f" SELECT %(event)s, r.reservation_id, {snapshot('r', 'g.registration_id')} FROM {CHANGED})"
    f" SELECT {columns('r', 'g.registration_id')} FROM {CHANGED}"
)
# Settling: the reservation gets its status and paid time, and the payment row is upserted on
# (reservation_id, checkout_id). `{gate}` limits the update to when a registration was just
# made (if that matters); `{source}` is where the event's payload and the answer find the
# changed reservation and its registration.
_SETTLE = (
    " r AS (UPDATE reservations SET status = %(s)s, seat_folded = false,"
    " paid_time = coalesce(%(paid)s, now()), payment_id = %(p)s, update_time = now(),"
    " next_reconcile_time = NULL, reconcile_lease_until = NULL"
    " WHERE reservation_id = %(r)s{gate} RETURNING *),"
    " p AS (INSERT INTO payments (payment_row_id, reservation_id, checkout_id, status, provider,"
    " amount, currency_code, provider_payment_id, tx_id, paid_time, raw_event)"
    " SELECT %(row)s, r.reservation_id, %(c)s, 'paid', %(provider)s, %(amount)s, %(currency)s,"
    " %(p)s, %(tx)s, r.paid_time, %(raw)s FROM r"
    " ON CONFLICT (reservation_id, checkout_id) DO UPDATE SET status = 'paid',"
    " provider_payment_id = excluded.provider_payment_id, tx_id = excluded.tx_id,"
    " paid_time = excluded.paid_time, raw_event = excluded.raw_event, update_time = now()),"
    " e AS (INSERT INTO registration_events (type, reservation_id, reservation)"
    " SELECT %(event)s, r.reservation_id, {snapshot} FROM {source})"
    " SELECT {columns} FROM {source}"
)
# A seat: the registration (unless the user already has one at the event), then the settling.
ACCEPT = (
    "WITH g AS (INSERT INTO registrations (registration_id, reservation_id, event_id, tier_id,"
    " user_id, status, answers) VALUES (%(g)s, %(r)s, %(e)s, %(t)s, %(u)s, 'accepted',"
    " CAST(%(answers)s AS jsonb)) ON CONFLICT (event_id, user_id) WHERE status = 'accepted'"
    " DO NOTHING"
    " RETURNING registration_id),"
    + _SETTLE.format(
        gate=" AND EXISTS (SELECT 1 FROM g)",
        snapshot=snapshot("r", "g.registration_id"),
        source="r, g",
        columns=columns("r", "g.registration_id"),
    )
)
SETTLE_WITHOUT_SEAT = "WITH" + _SETTLE.format(
    gate="",
    snapshot=snapshot("r", "g.registration_id"),
    source=CHANGED,
    columns=columns("r", "g.registration_id"),
)

# Seats taken in a tier besides its folded accepted_count, by the clock as this statement
# starts. A hold past its end still counts while another transaction holds its row lock: that
# may be a confirmation that judged the hold live before its end and has not committed yet, and
# which gives it a seat without taking the tier lock. `SKIP LOCKED` never waits, so a counter
# (holding the tier lock) waits on no reservation and the lock order stays user, reservation,
# tier; the ended holds it could lock stay share-locked until it commits, so a confirmation of
# one of them waits and then sees the hold ended (and this counter's seat). A hold we lock
# ourselves (a late confirmation counting) is not counted. `{lock}` is the test-only switch.
_COUNT_TAKEN = (
    "WITH tier_rows AS (SELECT status, expire_time, seat_folded FROM reservations"
    " WHERE event_id = %(e)s AND tier_id = %(t)s"
    " AND (status = 'pending_payment' OR (status = 'confirmed' AND NOT seat_folded)))"
    " SELECT count(*) FILTER (WHERE status = 'pending_payment'"
    " AND expire_time > statement_timestamp())"
    " + count(*) FILTER (WHERE status = 'confirmed')"
    " + count(*) FILTER (WHERE status = 'pending_payment'"
    " AND expire_time <= statement_timestamp())"
    " - (SELECT count(*) FROM (SELECT 1 FROM reservations WHERE event_id = %(e)s"
    " AND tier_id = %(t)s AND status = 'pending_payment'"
    " AND expire_time <= statement_timestamp(){lock}) ended) AS taken,"
    " (SELECT cancel_time IS NOT NULL FROM ticketing_settings WHERE event_id = %(e)s) AS cancelled"
    " FROM tier_rows"
)
# Seats surely taken, read without waiting on any lock: folded and imported seats, live holds,
# and confirmations not yet folded. Holds past their end are left out (a confirmation may still
# take their seat), so it never counts more than `_COUNT_TAKEN`: a tier full here was full at
# the moment of reading. No row (no tier) or no capacity reads as not full.
ALL_SEATS_TAKEN = (
    "SELECT t.accepted_count + t.external_seats + (SELECT count(*) FROM reservations"
    " WHERE event_id = %(e)s AND tier_id = %(t)s AND (status = 'pending_payment'"
    " AND expire_time > statement_timestamp() OR status = 'confirmed' AND NOT seat_folded))"
    " >= t.capacity AS full FROM tiers t WHERE t.event_id = %(e)s AND t.tier_id = %(t)s"
)
EVENT_CANCELLED = (
    "SELECT cancel_time IS NOT NULL AS cancelled FROM ticketing_settings WHERE event_id = %(e)s"
)
COUNT_TAKEN = _COUNT_TAKEN.format(lock=" FOR KEY SHARE SKIP LOCKED")
COUNT_TAKEN_WITHOUT_LOCKS = _COUNT_TAKEN.format(lock="")
# A mismatched payment, once per (reservation, checkout, payment): the first time it is seen it
# is kept for audit and announced on the feed with what differed; a retry adds nothing.
SPOKEN_FOR = (
    "SELECT EXISTS (SELECT 1 FROM payments WHERE provider_payment_id = %(p)s"
    " AND status = 'paid') OR EXISTS (SELECT 1 FROM refunds WHERE payment_id = %(p)s"
    " AND status <> 'failed') AS spoken_for"
)
RECORD_MISMATCH = (
    "WITH m AS (INSERT INTO payment_mismatches (mismatch_id, reservation_id, checkout_id,"
    " provider_payment_id, provider, amount, currency_code, raw_event, fields)"
    " VALUES (%(id)s, %(r)s, %(c)s, %(p)s, %(provider)s, %(amount)s, %(currency)s, %(raw)s,"
    " %(fields)s) ON CONFLICT DO NOTHING RETURNING *),"
    " e AS (INSERT INTO registration_events (type, reservation_id, reservation, details)"
    f" SELECT 'payment_mismatch', r.reservation_id, {snapshot('r', 'g.registration_id')},"
    " jsonb_build_object('checkout_id', m.checkout_id, 'payment_id', m.provider_payment_id,"
    " 'provider', m.provider, 'amount', m.amount, 'currency_code', m.currency_code,"
    " 'fields', to_jsonb(m.fields)) FROM m JOIN reservations r USING (reservation_id)"
    " LEFT JOIN registrations g ON g.reservation_id = r.reservation_id)"
    " SELECT count(*) AS recorded FROM m"
)
