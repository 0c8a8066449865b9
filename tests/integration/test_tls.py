"""TLS and mutual TLS on a real grpc.aio server, with certificates made at test time."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from moim.ticketing.client import TicketingClient
from moim.ticketing.v1 import ticketing_service_pb2 as pb
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

from tests.certificates import CertificateAuthority
from tests.rich_errors import rich_error
from ticketing_service.config import ConfigError
from ticketing_service.entrypoints.grpc.arrival import RequestArrival
from ticketing_service.entrypoints.grpc.auth import BearerToken
from ticketing_service.entrypoints.grpc.decoding import RequestDecoding
from ticketing_service.entrypoints.grpc.tls import channel_credentials, server_credentials

SERVICE = "moim.ticketing.v1.TicketingService"
TOKEN = "tls-test-token"
REQUEST = pb.GetTicketingSettingsRequest(event_id="event-1")


async def _answer(
    request: pb.GetTicketingSettingsRequest, context: grpc.aio.ServicerContext[object, object]
) -> pb.GetTicketingSettingsResponse:
    return pb.GetTicketingSettingsResponse()


def _handlers() -> grpc.GenericRpcHandler:
    method = grpc.unary_unary_rpc_method_handler(
        _answer,
        request_deserializer=pb.GetTicketingSettingsRequest.FromString,
        response_serializer=pb.GetTicketingSettingsResponse.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(SERVICE, {"GetTicketingSettings": method})


@asynccontextmanager
async def serving(
    credentials: grpc.ServerCredentials, token: str | None = None
) -> AsyncIterator[str]:
    """A TLS server answering GetTicketingSettings on a free port; yields its target."""
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (
        [RequestArrival(per_address=8, token=BearerToken([token])), RequestDecoding()]
        if token
        else []
    )
    server = grpc.aio.server(interceptors=interceptors)
    server.add_generic_rpc_handlers([_handlers()])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def call(
    target: str, credentials: grpc.ChannelCredentials, token: str | None = None
) -> grpc.StatusCode:
    """Call once over a new channel and return the status code it ended with."""
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    async with grpc.aio.secure_channel(target, credentials) as channel:
        try:
            await pb_grpc.TicketingServiceStub(channel).GetTicketingSettings(
                REQUEST, metadata=metadata, timeout=10
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


@pytest.fixture
def ca() -> CertificateAuthority:
    return CertificateAuthority("server-ca")


@pytest.fixture
def client_ca() -> CertificateAuthority:
    return CertificateAuthority("client-ca")


@pytest.fixture
def server_files(tmp_path: Path, ca: CertificateAuthority) -> tuple[Path, Path]:
    return ca.issue("ticketing-server", server=True).write(tmp_path, "server")


def write_pem(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


@pytest.fixture
def ca_file(tmp_path: Path, ca: CertificateAuthority) -> Path:
    """The bundle a client trusts the server's CA from."""
    return write_pem(tmp_path, "ca.crt", ca.pem)


@pytest.fixture
def mutual_tls(
    tmp_path: Path, client_ca: CertificateAuthority, server_files: tuple[Path, Path]
) -> grpc.ServerCredentials:
    """The server's credentials, asking each client for a certificate of `client_ca`."""
    return server_credentials(*server_files, write_pem(tmp_path, "client-ca.crt", client_ca.pem))


async def test_a_client_that_trusts_the_ca_is_served_over_tls(
    ca_file: Path, server_files: tuple[Path, Path]
) -> None:
    async with serving(server_credentials(*server_files)) as target:
        assert await call(target, channel_credentials(ca_file)) == grpc.StatusCode.OK


async def test_a_client_that_trusts_another_ca_cannot_connect(
    tmp_path: Path, server_files: tuple[Path, Path]
) -> None:
    other_ca = write_pem(tmp_path, "other.crt", CertificateAuthority("other").pem)
    async with serving(server_credentials(*server_files)) as target:
        assert await call(target, channel_credentials(other_ca)) == grpc.StatusCode.UNAVAILABLE


async def test_under_mutual_tls_a_client_without_a_certificate_is_refused(
    ca_file: Path, mutual_tls: grpc.ServerCredentials
) -> None:
    async with serving(mutual_tls) as target:
        assert await call(target, channel_credentials(ca_file)) == grpc.StatusCode.UNAVAILABLE


async def test_under_mutual_tls_a_client_certificate_of_the_client_ca_is_served(
    tmp_path: Path,
    client_ca: CertificateAuthority,
    ca_file: Path,
    mutual_tls: grpc.ServerCredentials,
) -> None:
    shim = client_ca.issue("webhook-shim", server=False).write(tmp_path, "shim")
    credentials = channel_credentials(ca_file, *shim)
    async with serving(mutual_tls) as target:
        assert await call(target, credentials) == grpc.StatusCode.OK


async def test_under_mutual_tls_a_client_certificate_of_another_ca_is_refused(
    tmp_path: Path, ca_file: Path, mutual_tls: grpc.ServerCredentials
) -> None:
    stranger = CertificateAuthority("stranger").issue("intruder", server=False)
    credentials = channel_credentials(ca_file, *stranger.write(tmp_path, "intruder"))
    async with serving(mutual_tls) as target:
        assert await call(target, credentials) == grpc.StatusCode.UNAVAILABLE


async def test_under_mutual_tls_the_bearer_token_is_still_required(
    tmp_path: Path,
    client_ca: CertificateAuthority,
    ca_file: Path,
    mutual_tls: grpc.ServerCredentials,
) -> None:
    shim = client_ca.issue("webhook-shim", server=False).write(tmp_path, "shim")
    credentials = channel_credentials(ca_file, *shim)
    async with serving(mutual_tls, TOKEN) as target:
        assert await call(target, credentials) == grpc.StatusCode.UNAUTHENTICATED
        assert await call(target, credentials, "wrong") == grpc.StatusCode.UNAUTHENTICATED
        assert await call(target, credentials, TOKEN) == grpc.StatusCode.OK


async def test_the_token_refusal_carries_the_unauthenticated_reason_over_tls(
    ca_file: Path, server_files: tuple[Path, Path]
) -> None:
    credentials = channel_credentials(ca_file)
    async with (
        serving(server_credentials(*server_files), TOKEN) as target,
        grpc.aio.secure_channel(target, credentials) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pb_grpc.TicketingServiceStub(channel).GetTicketingSettings(REQUEST, timeout=10)
    assert rich_error(caught.value).reason == "UNAUTHENTICATED"


def replace_atomically(path: Path, data: bytes) -> None:
    """Swap a file's content the way a Secret volume does: a new file renamed over it."""
    staged = path.with_suffix(".staged")
    staged.write_bytes(data)
    os.replace(staged, path)


async def test_a_replaced_certificate_is_served_to_new_connections_without_a_restart(
    tmp_path: Path, ca: CertificateAuthority, server_files: tuple[Path, Path]
) -> None:
    old_ca = channel_credentials(write_pem(tmp_path, "old-ca.crt", ca.pem))
    new_authority = CertificateAuthority("next-ca")
    new_ca = channel_credentials(write_pem(tmp_path, "new-ca.crt", new_authority.pem))
    cert_file, key_file = server_files
    async with (
        serving(server_credentials(cert_file, key_file)) as target,
        grpc.aio.secure_channel(target, old_ca) as open_channel,
    ):
        stub = pb_grpc.TicketingServiceStub(open_channel)
        await stub.GetTicketingSettings(REQUEST, timeout=10)
        assert await call(target, new_ca) == grpc.StatusCode.UNAVAILABLE  # control

        rotated = new_authority.issue("ticketing-server", server=True)
        replace_atomically(key_file, rotated.key)
        replace_atomically(cert_file, rotated.cert)

        assert await call(target, new_ca) == grpc.StatusCode.OK
        assert await call(target, old_ca) == grpc.StatusCode.UNAVAILABLE
        await stub.GetTicketingSettings(REQUEST, timeout=10)  # the open connection goes on


async def test_a_half_replaced_pair_keeps_the_loaded_certificate_until_the_pair_is_whole(
    tmp_path: Path, ca_file: Path, server_files: tuple[Path, Path]
) -> None:
    trusting = channel_credentials(ca_file)
    new_authority = CertificateAuthority("next-ca")
    trusting_new = channel_credentials(write_pem(tmp_path, "new-ca.crt", new_authority.pem))
    rotated = new_authority.issue("ticketing-server", server=True)
    cert_file, key_file = server_files
    async with serving(server_credentials(cert_file, key_file)) as target:
        key_file.unlink()
        assert await call(target, trusting) == grpc.StatusCode.OK
        replace_atomically(key_file, b"not yet written")
        assert await call(target, trusting) == grpc.StatusCode.OK
        replace_atomically(key_file, rotated.key)
        replace_atomically(cert_file, rotated.cert)
        assert await call(target, trusting_new) == grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("which", "content", "setting"),
    [
        ("cert", None, "TICKETING_TLS_CERT"),
        ("key", None, "TICKETING_TLS_KEY"),
        ("cert", b"hello", "TICKETING_TLS_CERT"),
        ("key", b"-----BEGIN CERTIFICATE-----", "TICKETING_TLS_KEY"),
    ],
)
def test_an_unreadable_or_non_pem_server_file_is_a_config_error_naming_its_setting(
    tmp_path: Path,
    server_files: tuple[Path, Path],
    which: str,
    content: bytes | None,
    setting: str,
) -> None:
    cert_file, key_file = server_files
    target = cert_file if which == "cert" else key_file
    if content is None:
        target.unlink()
    else:
        target.write_bytes(content)
    with pytest.raises(ConfigError, match=setting):
        server_credentials(cert_file, key_file)


def test_a_client_certificate_without_its_key_is_a_config_error(
    tmp_path: Path, client_ca: CertificateAuthority
) -> None:
    cert, _ = client_ca.issue("shim", server=False).write(tmp_path, "shim")
    with pytest.raises(ConfigError, match="TICKETING_TLS_CLIENT_KEY"):
        channel_credentials(None, cert, None)


async def test_during_a_ca_rotation_a_bundle_of_both_cas_trusts_either_side(
    tmp_path: Path, ca: CertificateAuthority, client_ca: CertificateAuthority
) -> None:
    next_ca, next_client_ca = CertificateAuthority("next-ca"), CertificateAuthority("next-client")
    both_cas = write_pem(tmp_path, "cas.crt", ca.pem + next_ca.pem)
    clients_of_both = write_pem(tmp_path, "client-cas.crt", client_ca.pem + next_client_ca.pem)
    old_client = client_ca.issue("shim", server=False).write(tmp_path, "old-shim")
    new_client = next_client_ca.issue("shim", server=False).write(tmp_path, "new-shim")
    for authority in (ca, next_ca):
        server = authority.issue("ticketing-server", server=True).write(tmp_path, "server")
        async with serving(server_credentials(*server, clients_of_both)) as target:
            for client in (old_client, new_client):
                credentials = channel_credentials(both_cas, *client)
                assert await call(target, credentials) == grpc.StatusCode.OK


async def test_the_python_client_wrapper_speaks_mutual_tls_with_its_token(
    ca: CertificateAuthority,
    client_ca: CertificateAuthority,
    mutual_tls: grpc.ServerCredentials,
) -> None:
    issued = client_ca.issue("python-client", server=False)
    async with (
        serving(mutual_tls, TOKEN) as target,
        TicketingClient.connect(
            target,
            token=TOKEN,
            root_certificates=ca.pem,
            certificate_chain=issued.cert,
            private_key=issued.key,
        ) as client,
    ):
        assert await client.get_ticketing_settings(REQUEST) == pb.GetTicketingSettingsResponse()
