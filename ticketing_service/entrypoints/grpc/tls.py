"""Transport security for the gRPC server and its clients (SPEC section 4).

The server's credentials reload themselves: each new TLS handshake first checks whether the
certificate, key or client CA files were replaced (Kubernetes swaps a mounted Secret's files
atomically) and, if so, serves the new ones. Connections already open keep the certificate they
started with, so a rotation drops no call and needs no restart.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc

from ticketing_service.config import ConfigError

CERT_SETTING = "TICKETING_TLS_CERT"
KEY_SETTING = "TICKETING_TLS_KEY"
CLIENT_CA_SETTING = "TICKETING_TLS_CLIENT_CA"
CA_SETTING = "TICKETING_TLS_CA"
CLIENT_CERT_SETTING = "TICKETING_TLS_CLIENT_CERT"
CLIENT_KEY_SETTING = "TICKETING_TLS_CLIENT_KEY"

_CERTIFICATE_MARK = b"-----BEGIN CERTIFICATE-----"
_KEY_MARK = b"PRIVATE KEY-----"

log = logging.getLogger(__name__)

FileStamp = tuple[int, int, int]


def _read_pem(path: str | os.PathLike[str], setting: str, mark: bytes) -> bytes:
    """The file's bytes; a ConfigError naming the setting when unreadable or not PEM."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(
            f"{setting} names {path}, which cannot be read: {error.strerror}."
        ) from None
    if mark not in data:
        what = "a PEM certificate" if mark == _CERTIFICATE_MARK else "a PEM private key"
        raise ConfigError(f"{setting} names {path}, which does not hold {what}.")
    return data


def _stamp(path: str | os.PathLike[str]) -> FileStamp:
    # stat() follows symlinks: a Kubernetes Secret update repoints them at new files.
    status = os.stat(path)
    return (status.st_ino, status.st_mtime_ns, status.st_size)


@dataclass(frozen=True, slots=True)
class _ServerFiles:
    cert: str | os.PathLike[str]
    key: str | os.PathLike[str]
    client_ca: str | os.PathLike[str] | None

    def paths(self) -> list[str | os.PathLike[str]]:
        return [p for p in (self.cert, self.key, self.client_ca) if p is not None]

    def stamps(self) -> tuple[FileStamp, ...]:
        return tuple(_stamp(path) for path in self.paths())

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        pair = (
            _read_pem(self.key, KEY_SETTING, _KEY_MARK),
            _read_pem(self.cert, CERT_SETTING, _CERTIFICATE_MARK),
        )
        client_ca = (
            None
            if self.client_ca is None
            else _read_pem(self.client_ca, CLIENT_CA_SETTING, _CERTIFICATE_MARK)
        )
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=client_ca)


class _Reloader:
    """gRPC's certificate fetcher: a new configuration when the files changed, else None."""

    def __init__(self, files: _ServerFiles, loaded: tuple[FileStamp, ...]) -> None:
        self._files = files
        self._loaded = loaded
        self._failed: tuple[FileStamp, ...] | None = None

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        try:
            stamps = self._files.stamps()
        except OSError as error:  # a file is missing for a moment during a manual swap
            self._warn_once((), error)
            return None
        if stamps in (self._loaded, self._failed):
            return None
        try:
            configuration = self._files.configuration()
        except (OSError, ConfigError) as error:
            self._warn_once(stamps, error)
            return None
        self._loaded = stamps
        log.info("TLS certificate reloaded from %s", self._files.cert)
        return configuration

    def _warn_once(self, stamps: tuple[FileStamp, ...], error: Exception) -> None:
        # Mid-rotation (one file replaced, the next not yet): keep serving the loaded pair.
        if stamps != self._failed:
            log.warning("TLS files changed but cannot be loaded yet: %s", error)
        self._failed = stamps


def server_credentials(
    cert_path: str | os.PathLike[str],
    key_path: str | os.PathLike[str],
    client_ca_path: str | os.PathLike[str] | None = None,
) -> grpc.ServerCredentials:
    """TLS credentials for the server; with a client CA, clients must present a certificate
    it signed (mutual TLS). Files replaced later are picked up by new connections."""
    files = _ServerFiles(cert_path, key_path, client_ca_path)
    try:
        stamps = files.stamps()  # before reading: a change in between is reloaded, not missed
    except OSError:
        stamps = ()  # configuration() names the file that cannot be read
    initial = files.configuration()  # a clear ConfigError now rather than failed handshakes
    # The stubs say the fetcher always returns a configuration; gRPC documents None as
    # "no change", which is what _Reloader answers on almost every handshake.
    fetcher = cast("Callable[[], grpc.ServerCertificateConfiguration]", _Reloader(files, stamps))
    return grpc.dynamic_ssl_server_credentials(
        initial,
        fetcher,
        require_client_authentication=client_ca_path is not None,
    )


def channel_credentials(
    ca_path: str | os.PathLike[str] | None = None,
    client_cert_path: str | os.PathLike[str] | None = None,
    client_key_path: str | os.PathLike[str] | None = None,
) -> grpc.ChannelCredentials:
    """TLS credentials for a client: trust `ca_path` (the system's roots without it), and
    present a client certificate for mutual TLS when both its files are given."""
    if (client_cert_path is None) != (client_key_path is None):
        raise ConfigError(
            f"Set both {CLIENT_CERT_SETTING} and {CLIENT_KEY_SETTING} for mutual TLS, or neither."
        )
    root = None if ca_path is None else _read_pem(ca_path, CA_SETTING, _CERTIFICATE_MARK)
    if client_cert_path is None or client_key_path is None:
        return grpc.ssl_channel_credentials(root_certificates=root)
    return grpc.ssl_channel_credentials(
        root_certificates=root,
        private_key=_read_pem(client_key_path, CLIENT_KEY_SETTING, _KEY_MARK),
        certificate_chain=_read_pem(client_cert_path, CLIENT_CERT_SETTING, _CERTIFICATE_MARK),
    )
