-- A small sample of Moim's paid ticketing tables (PR #177), to try import-moim on:
--   psql "$SOURCE_DATABASE_URL" -f tests/fixtures/moim-pr177-schema.sql -f scripts/moim-sample.sql
-- (docs/moim-integration.md, "Trying it on a sample"). One paid event, "Sample concert", with
-- a tier of 3 seats: a paid and accepted RSVP (a registration), a payment for an RSVP Moim
-- waitlisted (paid without a seat: a refund is owed), a free RSVP of a user who never paid (a
-- seat Moim gave away), a live hold with its checkout, and an RSVP whose status Moim never
-- writes (listed, left alone). Times are relative to now: load it shortly before the import.
BEGIN;
INSERT INTO users (id) VALUES
    ('00000000-0000-4000-8000-000000000001'), ('00000000-0000-4000-8000-000000000002'),
    ('00000000-0000-4000-8000-000000000003'), ('00000000-0000-4000-8000-000000000004'),
    ('00000000-0000-4000-8000-000000000005');
INSERT INTO events (id, title, starts_at)
    VALUES ('10000000-0000-4000-8000-000000000001', 'Sample concert', now() + interval '30 days');
INSERT INTO event_ticketing_settings (event_id, mode, provider, provider_account_id, currency)
    VALUES ('10000000-0000-4000-8000-000000000001', 'paid', 'portone', 'portone_kakaopay', 'KRW');
INSERT INTO event_tiers (id, event_id, name, price_amount, capacity)
    VALUES ('20000000-0000-4000-8000-000000000001', '10000000-0000-4000-8000-000000000001',
            'Standing', 30000, 3);
INSERT INTO rsvps (id, user_id, event_id, tier_id, status) VALUES
    ('30000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-000000000001',
     '10000000-0000-4000-8000-000000000001', '20000000-0000-4000-8000-000000000001', 'accepted'),
    ('30000000-0000-4000-8000-000000000002', '00000000-0000-4000-8000-000000000002',
     '10000000-0000-4000-8000-000000000001', '20000000-0000-4000-8000-000000000001', 'waitlisted'),
    ('30000000-0000-4000-8000-000000000003', '00000000-0000-4000-8000-000000000003',
     '10000000-0000-4000-8000-000000000001', '20000000-0000-4000-8000-000000000001', 'accepted'),
    ('30000000-0000-4000-8000-000000000005', '00000000-0000-4000-8000-000000000005',
     '10000000-0000-4000-8000-000000000001', '20000000-0000-4000-8000-000000000001', 'ACCEPTED');
INSERT INTO ticket_reservations (id, event_id, tier_id, user_id, rsvp_id, provider,
    provider_account_id, amount, currency, status, checkout_id, expires_at, created_at) VALUES
    ('40000000-0000-4000-8000-000000000001', '10000000-0000-4000-8000-000000000001',
     '20000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-000000000001',
     '30000000-0000-4000-8000-000000000001', 'portone', 'portone_kakaopay', 30000, 'KRW',
     'confirmed', 'chk_sample_1', now() - interval '50 minutes', now() - interval '1 hour'),
    ('40000000-0000-4000-8000-000000000002', '10000000-0000-4000-8000-000000000001',
     '20000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-000000000002',
     '30000000-0000-4000-8000-000000000002', 'portone', 'portone_kakaopay', 30000, 'KRW',
     'confirmed', 'chk_sample_2', now() - interval '50 minutes', now() - interval '1 hour'),
    ('40000000-0000-4000-8000-000000000004', '10000000-0000-4000-8000-000000000001',
     '20000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-000000000004', NULL,
     'portone', 'portone_kakaopay', 30000, 'KRW', 'pending_payment', 'chk_sample_4',
     now() + interval '8 minutes', now() - interval '2 minutes');
INSERT INTO ticket_payments (id, reservation_id, provider, provider_payment_id, checkout_id,
    status, amount, currency, paid_at) VALUES
    ('50000000-0000-4000-8000-000000000001', '40000000-0000-4000-8000-000000000001', 'portone',
     'pay_sample_1', 'chk_sample_1', 'paid', 30000, 'KRW', now() - interval '55 minutes'),
    ('50000000-0000-4000-8000-000000000002', '40000000-0000-4000-8000-000000000002', 'portone',
     'pay_sample_2', 'chk_sample_2', 'paid', 30000, 'KRW', now() - interval '55 minutes'),
    ('50000000-0000-4000-8000-000000000004', '40000000-0000-4000-8000-000000000004', 'portone',
     NULL, 'chk_sample_4', 'requires_payment', 30000, 'KRW', NULL);
COMMIT;
