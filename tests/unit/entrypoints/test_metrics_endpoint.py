"""The metrics endpoint: any scraper's request answered, idle connections cut, a clean stop."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from ticketing_service.config import ConfigError, ListenError
from ticketing_service.entrypoints.metrics_endpoint import MetricsServer, start_metrics_server

DEADLINE_SECONDS = 0.3
CUT_WITHIN_SECONDS = 10.0  # the bound on waiting for the cut; the deadline is far shorter


@pytest.fixture
def endpoint() -> Iterator[MetricsServer]:
    registry = CollectorRegistry()
    Counter("ticketing_example", "A counter to find in the answer.", registry=registry).inc(3)
    server = start_metrics_server("127.0.0.1:0", registry, read_timeout_seconds=DEADLINE_SECONDS)
    yield server
    server.close()


def test_a_scrape_gets_the_text_format(endpoint: MetricsServer) -> None:
    response = httpx.get(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "ticketing_example_total 3.0" in response.text


def test_openmetrics_is_served_to_a_scraper_that_asks_for_it(endpoint: MetricsServer) -> None:
    accept = {"accept": "application/openmetrics-text; version=1.0.0"}
    response = httpx.get(f"http://127.0.0.1:{endpoint.port}/", headers=accept, timeout=5)
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


def test_an_accept_header_that_is_not_utf8_gets_the_default_format(
    endpoint: MetricsServer,
) -> None:
    # prometheus_client's own ASGI app decodes headers as UTF-8 and would answer 500.
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: m\r\nAccept: \xff\xfe\r\n\r\n")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"text/plain; version=0.0.4" in answer


def test_a_method_other_than_get_or_head_is_refused(endpoint: MetricsServer) -> None:
    url = f"http://127.0.0.1:{endpoint.port}/metrics"
    refused = httpx.post(url, content=b"x" * 1000, timeout=5)
    head = httpx.head(url, timeout=5)
    assert (refused.status_code, refused.headers["allow"]) == (405, "GET, HEAD")
    assert (head.status_code, head.content) == (200, b"")


def test_a_connection_that_sends_no_request_is_cut_at_the_deadline(
    endpoint: MetricsServer,
) -> None:
    with socket.create_connection(("127.0.0.1", endpoint.port)) as idle:
        idle.settimeout(CUT_WITHIN_SECONDS)
        assert idle.recv(1) == b""  # closed by the server, with nothing written


def test_every_interface_in_ipv6_notation_takes_ipv4_scrapes_too() -> None:
    # As the standard library's server did; socket.create_server would bind [::] IPv6 only.
    server = start_metrics_server("[::]:0", CollectorRegistry())
    try:
        response = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
    finally:
        server.close()
    assert response.status_code == 200


def test_close_stops_serving_and_frees_the_port() -> None:
    server = start_metrics_server("127.0.0.1:0", CollectorRegistry())
    server.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5)
    with socket.create_server(("127.0.0.1", server.port)):
        pass  # bound again: nothing holds it


@pytest.mark.parametrize("listen", ["9464", "localhost", "127.0.0.1:http", ":9464"])
def test_a_malformed_address_is_a_config_error_naming_the_setting(listen: str) -> None:
    with pytest.raises(ConfigError, match="TICKETING_METRICS_LISTEN"):
        start_metrics_server(listen, CollectorRegistry())


def test_a_taken_address_is_a_listen_error_naming_it() -> None:
    with socket.create_server(("127.0.0.1", 0)) as holder:
        taken = f"127.0.0.1:{holder.getsockname()[1]}"
        with pytest.raises(ListenError, match=f"^cannot listen on {taken} for metrics: "):
            start_metrics_server(taken, CollectorRegistry())
