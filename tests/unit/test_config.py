"""The server's settings: whole numbers read strictly, token lists, and who may listen where."""

from __future__ import annotations

import argparse
import re

import pytest

from ticketing_service.config import Config, ConfigError
from ticketing_service.entrypoints import maintenance
from ticketing_service.entrypoints.grpc.exposure import (
    check_dev_exposure,
    check_exposure,
    is_loopback,
)

WHOLE_NUMBERS = [
    "TICKETING_DB_POOL_SIZE",
    "TICKETING_DB_LOCK_TIMEOUT_MS",
    "TICKETING_DB_STATEMENT_TIMEOUT_MS",
    "TICKETING_WORKERS",
    "TICKETING_GRPC_MAX_CONCURRENT_RPCS",
    "TICKETING_MAX_WATCHERS",
    "TICKETING_GRPC_MAX_CONNECTIONS",
    "TICKETING_GRPC_MAX_CONNECTION_IDLE_SECONDS",
]


@pytest.mark.parametrize("name", WHOLE_NUMBERS)
@pytest.mark.parametrize("bad", ["0.5", "1.0", "-1", "0", "1e3", "½", "٣", "ten", "99999999999"])
def test_a_whole_number_setting_refuses_anything_else_naming_it(name: str, bad: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{name} must be a whole number from \d+ to "):
        Config.from_env({name: bad})


@pytest.mark.parametrize(
    "name", ["TICKETING_DB_LOCK_TIMEOUT_MS", "TICKETING_DB_STATEMENT_TIMEOUT_MS"]
)
def test_a_database_timeout_too_short_for_any_work_is_refused(name: str) -> None:
    # A statement timeout of 1 ms was taken, and every background task then failed forever.
    for bad in ("1", "99"):
        with pytest.raises(
            ConfigError, match=f"^{name} must be a whole number from 100 to 86400000, got '{bad}'"
        ):
            Config.from_env({name: bad})
    config = Config.from_env({name: "100"})
    assert (config.db_lock_timeout_ms, config.db_statement_timeout_ms) == (
        (100, 30000) if "LOCK" in name else (5000, 100)
    )


DURATIONS = [
    "TICKETING_HOLD_SECONDS",
    "TICKET_PAYMENT_TIMEOUT_SECONDS",
    "TICKETING_SWEEP_INTERVAL_SECONDS",
    "TICKETING_DB_MAX_CONNECTION_LIFETIME_SECONDS",
    "TICKETING_PAYMENT_GRACE_SECONDS",
    "TICKETING_RECONCILE_AFTER_SECONDS",
    "TICKETING_RECONCILE_BACKOFF_SECONDS",
    "TICKETING_RECONCILE_WINDOW_HOURS",
    "TICKETING_REFUND_BACKOFF_SECONDS",
]


@pytest.mark.parametrize("name", DURATIONS)
@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf", "1e300", "31622401", "soon"])
def test_a_duration_setting_refuses_nothing_forever_and_nonsense_naming_it(
    name: str, bad: str
) -> None:
    # 1e300 used to pass, then overflow a timedelta at start or in the first call using it.
    bounds = "a number from [0-9.]+ to" if name in FLOORS else "a positive number up to"
    with pytest.raises(ConfigError, match=f"^{name} must be {bounds} "):
        Config.from_env({name: bad})


# The shortest durations taken; 1e-9 had every hold end as it was made, an idle server commit
# empty sweeps some 4,500 times a second, every call to the payment service time out, and a
# failing refund use up its attempts within a few sweeps.
FLOORS = {
    "TICKETING_HOLD_SECONDS": "1",
    "TICKETING_SWEEP_INTERVAL_SECONDS": "0.1",
    "TICKET_PAYMENT_TIMEOUT_SECONDS": "0.5",
    "TICKETING_RECONCILE_BACKOFF_SECONDS": "1",
    "TICKETING_REFUND_BACKOFF_SECONDS": "1",
}


@pytest.mark.parametrize("name", [d for d in DURATIONS if d.endswith("_SECONDS")])
def test_a_duration_from_its_floor_to_a_year_is_taken(name: str) -> None:
    # The hold outlasts whatever payment timeout is set here, as it must.
    Config.from_env({"TICKETING_HOLD_SECONDS": "31622400", name: "31622399"})
    shortest = FLOORS.get(name, "0.25")
    Config.from_env({"TICKET_PAYMENT_TIMEOUT_SECONDS": "0.5", name: shortest})


@pytest.mark.parametrize(
    ("name", "below"),
    [
        ("TICKETING_HOLD_SECONDS", "0.9"),
        ("TICKETING_SWEEP_INTERVAL_SECONDS", "0.05"),
        ("TICKET_PAYMENT_TIMEOUT_SECONDS", "0.4"),
        ("TICKETING_RECONCILE_BACKOFF_SECONDS", "0.5"),
        ("TICKETING_REFUND_BACKOFF_SECONDS", "1e-9"),
    ],
)
def test_a_duration_under_its_floor_is_refused(name: str, below: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name} must be a number from {FLOORS[name]} to "):
        Config.from_env({"TICKET_PAYMENT_TIMEOUT_SECONDS": "0.5", name: below})


def test_a_hold_no_longer_than_the_payment_timeout_is_refused() -> None:
    # A hold could end before its checkout opened, its buyer sent to pay for a seat another
    # buyer may take.
    with pytest.raises(ConfigError, match=r"^TICKETING_HOLD_SECONDS \(10\) must be longer than"):
        Config.from_env({"TICKETING_HOLD_SECONDS": "10", "TICKET_PAYMENT_TIMEOUT_SECONDS": "10"})
    Config.from_env({"TICKETING_HOLD_SECONDS": "10.5", "TICKET_PAYMENT_TIMEOUT_SECONDS": "10"})


@pytest.mark.parametrize(
    "name", ["TICKETING_GRPC_LISTEN", "TICKETING_HEALTH_LISTEN", "TICKETING_METRICS_LISTEN"]
)
@pytest.mark.parametrize("bad", ["50051", ":50051", "host:", "host:-1", "host:65536", "host:grpc"])
def test_a_listen_setting_that_is_not_host_and_port_is_refused_naming_it(
    name: str, bad: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{name} must be HOST:PORT with a port up to 65535"):
        Config.from_env({name: bad})


def test_whole_numbers_and_the_new_limits_are_read() -> None:
    config = Config.from_env(
        {
            "TICKETING_DB_LOCK_TIMEOUT_MS": " 250 ",
            "TICKETING_WORKERS": "3",
            "TICKETING_GRPC_MAX_CONCURRENT_RPCS": "64",
            "TICKETING_MAX_WATCHERS": "7",
            "TICKETING_GRPC_MAX_CONNECTIONS": "20",
            "TICKETING_GRPC_MAX_CONNECTION_IDLE_SECONDS": "86400",
        }
    )
    assert (config.db_lock_timeout_ms, config.workers) == (250, 3)
    assert (config.grpc_max_concurrent_rpcs, config.max_watchers) == (64, 7)
    assert (config.grpc_max_connections, config.grpc_connection_idle_seconds) == (20, 86400)


def test_the_limits_have_defaults() -> None:
    config = Config.from_env({})
    assert (config.grpc_max_concurrent_rpcs, config.max_watchers) == (256, 100)
    assert (config.grpc_max_connections, config.grpc_connection_idle_seconds) == (1000, 300)


@pytest.mark.parametrize("name", ["TICKETING_GRPC_TOKEN", "TICKET_PAYMENT_SERVICE_TOKEN"])
@pytest.mark.parametrize("bad", ["s3\u00f6cr", "s3\u200bcr", "s3\x7fcr", "s3 cr", "s3\tcr"])
def test_a_token_a_request_header_cannot_carry_is_refused_naming_the_setting(
    name: str, bad: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{name} may hold only visible ASCII") as refused:
        Config.from_env({name: bad})
    assert "s3" not in str(refused.value)  # none of the token


def test_a_token_of_any_visible_ascii_is_taken() -> None:
    visible = "".join(map(chr, range(0x21, 0x7F))).replace(",", "")
    config = Config.from_env(
        {"TICKETING_GRPC_TOKEN": visible, "TICKET_PAYMENT_SERVICE_TOKEN": visible}
    )
    assert (config.grpc_tokens, config.payment_service_token) == ((visible,), visible)


def test_the_grpc_token_is_a_comma_separated_list_for_rotation() -> None:
    assert Config.from_env({"TICKETING_GRPC_TOKEN": " new, old ,"}).grpc_tokens == ("new", "old")
    assert Config.from_env({}).grpc_tokens == ()


@pytest.mark.parametrize(
    ("name", "placeholder"),
    [
        ("DATABASE_URL", "postgresql://ticketing:REPLACE_ME@postgres:5432/ticketing"),
        ("DATABASE_URL", "postgresql://ticketing:REPLACE%5FME@postgres:5432/ticketing"),
        ("TICKETING_GRPC_TOKEN", "REPLACE_ME"),
        ("TICKETING_GRPC_TOKEN", "a-real-token,replace_me"),  # one of a rotation, any case
        ("TICKET_PAYMENT_SERVICE_TOKEN", "REPLACE_ME_WITH_THE_TOKEN"),
        # Spelled otherwise, all taken before: a dash, full-width letters, a zero-width space,
        # percent-encoded twice.
        ("TICKETING_GRPC_TOKEN", "REPLACE-ME"),
        # (a token must be visible ASCII anyway: the store id is free text)
        (
            "DEFAULT_PORTONE_PROVIDER_ACCOUNT_ID",
            "\uff32\uff25\uff30\uff2c\uff21\uff23\uff25_\uff2d\uff25",
        ),
        ("DEFAULT_PORTONE_PROVIDER_ACCOUNT_ID", "REPLACE\u200b_ME"),
        ("DATABASE_URL", "postgresql://ticketing:REPLACE%255FME@postgres:5432/ticketing"),
        ("DEFAULT_PORTONE_PROVIDER_ACCOUNT_ID", "replace me"),
    ],
)
def test_the_secret_templates_placeholder_is_refused_naming_the_setting(
    name: str, placeholder: str
) -> None:
    # The template is public: a server started with it took calls carrying its token.
    with pytest.raises(ConfigError, match=f"^{name} holds the deploy templates' placeholder"):
        Config.from_env({name: placeholder})


@pytest.mark.parametrize("empty", ["", "  ", "\n"])
def test_a_database_url_set_but_empty_is_refused_and_only_an_unset_one_means_embedded(
    empty: str,
) -> None:
    # An empty Secret value was read as unset: `migrate` then migrated an embedded Postgres.
    with pytest.raises(ConfigError, match=r"^DATABASE_URL is set but empty: "):
        Config.from_env({"DATABASE_URL": empty})
    assert Config.from_env({}).database_url is None


# A `#` (or / ? @) left unencoded in a password cuts the URL short, so it reads as a bad port.
_PORT_OR_PASSWORD = (
    "a port in it is not a number up to 65535 (or its password holds one of # / ? @ unencoded:"
    " percent-encode it, e.g. # as %23)"
)


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("mysql://u:hunter2@db/ticketing", "it starts with neither"),
        ("postgresql://u:hunter2@[::1/ticketing", "it cannot be parsed"),
        ("postgresql://u:hunter2@db:99999/ticketing", _PORT_OR_PASSWORD),
        ("postgresql://u:hunter2@a:5432,b:x/ticketing", _PORT_OR_PASSWORD),
        ("postgresql://u:hun#ter2@db/ticketing", _PORT_OR_PASSWORD),
        (
            "postgresql://u:hunter2@db/ticketing?sslmode=on",
            "its sslmode is not one of disable, allow, prefer, require, verify-ca, verify-full",
        ),
    ],
)
def test_a_database_url_asyncpg_would_not_take_is_refused_showing_none_of_it(
    bad: str, problem: str
) -> None:
    # Each was a traceback in the first command that connected (migrate, serve, ...).
    with pytest.raises(ConfigError, match=r"^DATABASE_URL must be a postgresql://") as refused:
        Config.from_env({"DATABASE_URL": bad})
    assert str(refused.value).endswith(f"; {problem}.")
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize(
    "good",
    [
        "postgres://ticketing:secret@db:5432/ticketing?sslmode=verify-full",
        "postgresql://ticketing@a:5432,b:5433/ticketing",  # several hosts: failover
        "postgresql://postgres:@/postgres?host=/run/postgresql",  # a socket directory
        "postgresql://ticketing@[::1]:5432/ticketing",
    ],
)
def test_a_database_url_asyncpg_takes_is_taken(good: str) -> None:
    assert Config.from_env({"DATABASE_URL": good}).database_url == good


URLS = ["TICKET_PAYMENT_SERVICE_URL", "TICKETING_CALLBACK_URL", "MOIM_PUBLIC_BASE_URL"]


@pytest.mark.parametrize("name", URLS)
@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("moim-payment:8080", "it starts with neither"),
        ("http://", "it has no host"),
        ("http://:8080/v1", "it has no host"),
        ("http://moim payment:8080", "it holds a space or a control character"),
        ("http://pay\x00ments", "it holds a space or a control character"),
        ("http://[::1:8080", "it cannot be parsed, or its port is not a number up to 65535"),
        ("https://pay:99999", "it cannot be parsed, or its port is not a number up to 65535"),
        ("https://pay:https", "it cannot be parsed, or its port is not a number up to 65535"),
    ],
)
def test_a_url_no_request_can_be_sent_to_is_refused_naming_what_is_wrong(
    name: str, bad: str, problem: str
) -> None:
    with pytest.raises(
        ConfigError, match=rf"^{name} must be an http:// or https:// URL"
    ) as refused:
        Config.from_env({name: bad})
    assert str(refused.value).endswith(f"; {problem}.")  # and not the URL: it may hold a password


@pytest.mark.parametrize(
    "good", ["http://moim-payment:8080", "https://user:pw@pay.example/api/", "http://[::1]:8090"]
)
def test_a_url_with_a_host_is_taken(good: str) -> None:
    assert Config.from_env({"TICKET_PAYMENT_SERVICE_URL": good}).payment_service_url == good


@pytest.mark.parametrize("name", ["TICKET_PAYMENT_SERVICE_URL", "MOIM_PUBLIC_BASE_URL"])
@pytest.mark.parametrize(
    "bad", ["http://moim-payment:8080/?v=1", "http://moim-payment:8080/api?", "http://moim:3000#x"]
)
def test_a_base_url_with_a_query_or_fragment_is_refused(name: str, bad: str) -> None:
    # Paths are put after these: behind a query, every call to the payment service went to `/`.
    with pytest.raises(
        ConfigError, match=rf"^{name} must be an http:// or https:// URL"
    ) as refused:
        Config.from_env({name: bad})
    assert str(refused.value).endswith(
        "; it has a query or a fragment, where the paths put after it would land."
    )


def test_a_callback_url_may_carry_a_query() -> None:
    given = "https://shim.example/api/ticket-payment-callbacks?tenant=moim"
    assert Config.from_env({"TICKETING_CALLBACK_URL": given}).callback_url == given


def test_the_payment_service_url_and_token_are_required_only_when_asked_for() -> None:
    unset = Config.from_env({})
    assert unset.payment_service_url is None
    with pytest.raises(ConfigError, match=r"^TICKET_PAYMENT_SERVICE_URL is not set"):
        unset.require_payment_service()
    url = {"TICKET_PAYMENT_SERVICE_URL": "http://moim-payment:8080"}
    with pytest.raises(ConfigError, match=r"^TICKET_PAYMENT_SERVICE_TOKEN is not set"):
        Config.from_env(url).require_payment_service()
    Config.from_env(url | {"TICKET_PAYMENT_SERVICE_TOKEN": "secret"}).require_payment_service()


@pytest.mark.parametrize(
    ("listen", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.10.0.3:50051", True),
        ("[::1]:50051", True),
        ("localhost:50051", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        (":50051", False),
        ("10.0.0.5:50051", False),
        ("ticketing.internal:50051", False),
    ],
)
def test_only_loopback_addresses_count_as_private(listen: str, loopback: bool) -> None:
    assert is_loopback(listen) == loopback


def test_a_reachable_address_needs_a_guard_or_the_insecure_flag() -> None:
    with pytest.raises(ConfigError, match=re.escape("refusing to serve 0.0.0.0:1 to the network")):
        check_exposure("0.0.0.0:1", guarded=False, insecure=False)
    check_exposure("0.0.0.0:1", guarded=True, insecure=False)
    check_exposure("0.0.0.0:1", guarded=False, insecure=True)
    check_exposure("127.0.0.1:1", guarded=False, insecure=False)


def test_dev_takes_a_reachable_address_only_when_told_it_is_insecure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    addresses = ("127.0.0.1:1", "0.0.0.0:2", "localhost:3")
    with pytest.raises(ConfigError, match=re.escape("refusing to serve 0.0.0.0:2 to the network")):
        check_dev_exposure(addresses, insecure=False)
    check_dev_exposure(addresses, insecure=True)
    assert [r.getMessage() for r in caplog.records] == [
        "dev serves 0.0.0.0:2 to the network unguarded (--insecure)"
    ]


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("30m", 1800), ("2h", 7200), ("7d", 604800), ("45s", 45), ("99999d", 99999 * 86400)],
)
def test_a_duration_is_a_whole_number_and_a_unit(raw: str, seconds: int) -> None:
    assert maintenance.duration(raw).total_seconds() == seconds


@pytest.mark.parametrize(
    "raw", ["", "2", "1.5h", "-2h", "0m", "2 hours", "h", "100000d", "9999999h", "9999999d"]
)
def test_anything_else_is_not_a_duration(raw: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="duration"):
        maintenance.duration(raw)
