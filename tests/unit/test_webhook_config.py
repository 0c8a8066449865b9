"""The webhook shim's settings: defaults, rotation lists, scheme switches, and refusals."""

from __future__ import annotations

import base64

import pytest

from ticketing_service.config import ConfigError, parse_host_port
from ticketing_service.entrypoints.webhook.serve import build_verifier
from ticketing_service.webhook_config import WebhookConfig

WHSEC = "whsec_" + base64.b64encode(b"a-standard-webhooks-key").decode()


def test_with_only_an_hmac_secret_the_defaults_apply() -> None:
    config = WebhookConfig.from_env({"TICKET_PAYMENT_CALLBACK_SECRET": "s1"})
    assert config == WebhookConfig(
        listen="127.0.0.1:8080",
        grpc_target="127.0.0.1:50051",
        grpc_token=None,
        hmac_secrets=("s1",),
        standard_secrets=(),
        tolerance_seconds=300,
    )


def test_secrets_are_comma_separated_for_rotation_and_blanks_are_dropped() -> None:
    config = WebhookConfig.from_env(
        {
            "TICKET_PAYMENT_CALLBACK_SECRET": " old , new ,",
            "TICKETING_STANDARD_WEBHOOK_SECRETS": f"{WHSEC},{WHSEC}x",
        }
    )
    assert config.hmac_secrets == ("old", "new")
    assert config.standard_secrets == (WHSEC, f"{WHSEC}x")


def test_every_setting_is_read() -> None:
    config = WebhookConfig.from_env(
        {
            "TICKETING_WEBHOOK_LISTEN": "0.0.0.0:9000",
            "TICKETING_GRPC_TARGET": "ticketing:50051",
            "TICKETING_GRPC_TOKEN": "t0ken",
            "TICKETING_STANDARD_WEBHOOK_SECRETS": WHSEC,
            "TICKETING_WEBHOOK_TOLERANCE_SECONDS": "60",
            "TICKETING_WEBHOOK_GRPC_CHANNELS": "8",
            "TICKETING_WEBHOOK_READ_TIMEOUT_SECONDS": "2.5",
        }
    )
    assert (config.listen, config.grpc_target, config.grpc_token) == (
        "0.0.0.0:9000",
        "ticketing:50051",
        "t0ken",
    )
    assert (config.hmac_secrets, config.tolerance_seconds, config.grpc_channels) == ((), 60, 8)
    assert config.read_timeout_seconds == 2.5


def test_every_token_is_checked_for_what_a_header_can_carry() -> None:
    with pytest.raises(ConfigError, match=r"^TICKETING_GRPC_TOKEN may hold only visible ASCII"):
        WebhookConfig.from_env(
            {"TICKET_PAYMENT_CALLBACK_SECRET": "s1", "TICKETING_GRPC_TOKEN": "new,\u00f6ld"}
        )


@pytest.mark.parametrize(
    "target",
    [
        "ticketing-server:50051",
        "dns:///ticketing-server-headless:50051",
        "ipv4:127.0.0.1:50051,127.0.0.1:50052",
        "unix:/run/ticketing.sock",
        "[::1]:50051",
    ],
)
def test_a_grpc_target_is_host_and_port_or_names_a_grpc_resolver(target: str) -> None:
    env = {"TICKET_PAYMENT_CALLBACK_SECRET": "s1", "TICKETING_GRPC_TARGET": target}
    assert WebhookConfig.from_env(env).grpc_target == target


@pytest.mark.parametrize(
    "target",
    ["http://ticketing-server:50051", "ticketing-server", "ticketing server:50051", "h:99999"],
)
def test_a_grpc_target_no_call_could_reach_is_refused_naming_it(target: str) -> None:
    env = {"TICKET_PAYMENT_CALLBACK_SECRET": "s1", "TICKETING_GRPC_TARGET": target}
    with pytest.raises(ConfigError, match=r"^TICKETING_GRPC_TARGET "):
        WebhookConfig.from_env(env)


def test_the_shim_sends_the_first_of_several_tokens() -> None:
    # The server and the shim share one TICKETING_GRPC_TOKEN while a token is rotated.
    config = WebhookConfig.from_env(
        {"TICKET_PAYMENT_CALLBACK_SECRET": "s1", "TICKETING_GRPC_TOKEN": " new , old"}
    )
    assert config.grpc_token == "new"


@pytest.mark.parametrize("off", ["off", "OFF", "false", "0"])
def test_a_scheme_switched_off_keeps_none_of_its_secrets(off: str) -> None:
    config = WebhookConfig.from_env(
        {
            "TICKET_PAYMENT_CALLBACK_SECRET": "s1",
            "TICKETING_STANDARD_WEBHOOK_SECRETS": WHSEC,
            "TICKETING_WEBHOOK_MOIM_HMAC": off,
        }
    )
    assert (config.hmac_secrets, config.standard_secrets) == ((), (WHSEC,))


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "TICKET_PAYMENT_CALLBACK_SECRET"),
        ({"TICKET_PAYMENT_CALLBACK_SECRET": " , "}, "TICKETING_STANDARD_WEBHOOK_SECRETS"),
        (
            {"TICKET_PAYMENT_CALLBACK_SECRET": "s1", "TICKETING_WEBHOOK_MOIM_HMAC": "off"},
            "TICKET_PAYMENT_CALLBACK_SECRET",
        ),
        ({"TICKETING_WEBHOOK_STANDARD": "on"}, "TICKETING_STANDARD_WEBHOOK_SECRETS"),
        (
            {"TICKET_PAYMENT_CALLBACK_SECRET": "s1", "TICKETING_WEBHOOK_STANDARD": "maybe"},
            "TICKETING_WEBHOOK_STANDARD",
        ),
        (
            {"TICKET_PAYMENT_CALLBACK_SECRET": "s1", "TICKETING_WEBHOOK_TOLERANCE_SECONDS": "0"},
            "TICKETING_WEBHOOK_TOLERANCE_SECONDS",
        ),
        (
            {"TICKET_PAYMENT_CALLBACK_SECRET": "s1", "TICKETING_WEBHOOK_TOLERANCE_SECONDS": "1.5"},
            "TICKETING_WEBHOOK_TOLERANCE_SECONDS",
        ),
        (
            {"TICKET_PAYMENT_CALLBACK_SECRET": "s1", "TICKETING_WEBHOOK_GRPC_CHANNELS": "0"},
            "TICKETING_WEBHOOK_GRPC_CHANNELS",
        ),
        (
            {"TICKET_PAYMENT_CALLBACK_SECRET": "s1", "TICKETING_WEBHOOK_GRPC_CHANNELS": "65"},
            "TICKETING_WEBHOOK_GRPC_CHANNELS",
        ),
        (
            {"TICKET_PAYMENT_CALLBACK_SECRET": "s1", "TICKETING_WEBHOOK_LISTEN": "8080"},
            "TICKETING_WEBHOOK_LISTEN",
        ),
        *(
            (
                {
                    "TICKET_PAYMENT_CALLBACK_SECRET": "s1",
                    "TICKETING_WEBHOOK_READ_TIMEOUT_SECONDS": bad,
                },
                "TICKETING_WEBHOOK_READ_TIMEOUT_SECONDS",
            )
            for bad in ("0", "-1", "soon", "nan", "inf", "301")
        ),
    ],
)
def test_a_missing_or_malformed_setting_is_one_line_naming_it(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        WebhookConfig.from_env(env)
    message = str(caught.value)
    assert named in message
    assert "\n" not in message


def test_secrets_and_the_token_stay_out_of_the_repr() -> None:
    config = WebhookConfig.from_env(
        {
            "TICKET_PAYMENT_CALLBACK_SECRET": "hmac-secret-value",
            "TICKETING_STANDARD_WEBHOOK_SECRETS": WHSEC,
            "TICKETING_GRPC_TOKEN": "token-value",
        }
    )
    shown = repr(config)
    for secret in ("hmac-secret-value", WHSEC, "token-value"):
        assert secret not in shown


@pytest.mark.parametrize("secret", ["not-whsec", "whsec_!!!not base64!!!"])
def test_a_malformed_standard_secret_is_a_config_error_that_never_shows_it(secret: str) -> None:
    config = WebhookConfig.from_env({"TICKETING_STANDARD_WEBHOOK_SECRETS": secret})
    with pytest.raises(ConfigError) as caught:
        build_verifier(config)
    assert "TICKETING_STANDARD_WEBHOOK_SECRETS" in str(caught.value)
    assert secret not in str(caught.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("127.0.0.1:0", ("127.0.0.1", 0)), ("[::1]:8080", ("::1", 8080)), ("shim:80", ("shim", 80))],
)
def test_listen_addresses_are_host_and_port(value: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(value, "--listen") == expected


@pytest.mark.parametrize("value", ["", ":8080", "host:", "host:http", "host:65536", "host:-1"])
def test_a_malformed_listen_address_names_the_flag(value: str) -> None:
    with pytest.raises(ConfigError, match="--listen"):
        parse_host_port(value, "--listen")


@pytest.mark.parametrize(
    ("name", "placeholder"),
    [
        ("TICKET_PAYMENT_CALLBACK_SECRET", "REPLACE_ME"),
        ("TICKET_PAYMENT_CALLBACK_SECRET", "a-real-secret,replace_me"),
        ("TICKETING_STANDARD_WEBHOOK_SECRETS", "whsec_UkVQTEFDRV9NRQ=="),  # base64 "REPLACE_ME"
        ("TICKETING_STANDARD_WEBHOOK_SECRETS", "whsec_UkVQTEFDRV9NRQ"),  # padding dropped
        (
            "TICKETING_STANDARD_WEBHOOK_SECRETS",
            "whsec_" + base64.b64encode(b"REPLACE_ME_WITH_A_KEY").decode(),
        ),
        ("TICKETING_GRPC_TOKEN", "REPLACE_ME"),
    ],
)
def test_the_secret_templates_placeholder_is_refused_naming_the_setting(
    name: str, placeholder: str
) -> None:
    # Before: the shim verified callbacks signed with the template's public secret.
    settings = {"TICKET_PAYMENT_CALLBACK_SECRET": "s1", name: placeholder}
    with pytest.raises(ConfigError, match=f"^{name} holds the deploy templates' placeholder"):
        WebhookConfig.from_env(settings)


def test_a_placeholder_in_a_scheme_turned_off_is_never_used_so_not_refused() -> None:
    config = WebhookConfig.from_env(
        {
            "TICKET_PAYMENT_CALLBACK_SECRET": "s1",
            "TICKETING_STANDARD_WEBHOOK_SECRETS": "whsec_UkVQTEFDRV9NRQ==",
            "TICKETING_WEBHOOK_STANDARD": "off",
        }
    )
    assert (config.hmac_secrets, config.standard_secrets) == (("s1",), ())
