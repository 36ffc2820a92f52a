"""The dispatcher's HTTP client against real servers on loopback: each server below answers the
way a receiver might (kept alive, chunked, until close, silent, garbage, TLS), written byte by
byte so the client's parsing and connection handling are what is tested."""

from __future__ import annotations

import asyncio
import datetime
import ssl
import time
from collections.abc import Awaitable, Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from yarl import URL

from runtime.subscriptions.http_client import HttpClient, HttpError

Handler = Callable[["Server", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A loopback server running ``handler(server, reader, writer)`` per connection, counting
    connections and keeping every request it read (head and body)."""

    def __init__(self, handler: Handler, *, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        body = await reader.readexactly(length)
        self.requests.append((head, body))
        return head, body

    def url(self, path: str = "/hook", scheme: str = "http") -> URL:
        return URL(f"{scheme}://127.0.0.1:{self.port}{path}")


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


def echo(*, close_after: bool = False) -> Handler:
    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _, body = await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
            if close_after:  # without saying so: the client finds out when it reuses the connection
                return

    return handler


def replying(*answers: bytes) -> Handler:
    """Reads a request and writes the next of ``answers`` (as they are), until none is left."""

    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers:
            await server.read_request(reader)
            writer.write(answer)
            await writer.drain()

    return handler


def test_requests_reuse_at_most_limit_kept_alive_connections() -> None:
    async def test() -> None:
        async with Server(echo()) as server:
            client = HttpClient(limit=4, timeout_s=5)
            bodies = [b"event-%d" % i for i in range(200)]
            answers = await asyncio.gather(*(client.post(server.url(), b, {"x-n": "1"}) for b in bodies))
            await client.close()
        assert [a.status for a in answers] == [200] * 200
        assert [a.body for a in answers] == bodies  # each answer is its own request's
        assert 1 <= server.connections <= 4
        assert len(server.requests) == 200

    run(test)


def test_a_connection_the_receiver_closed_after_answering_is_replaced_without_an_error() -> None:
    async def test() -> None:
        async with Server(echo(close_after=True)) as server:
            client = HttpClient(limit=1, timeout_s=5)
            answers = []
            for i in range(5):
                answers.append(await client.post(server.url(), b"%d" % i, {}))
                await asyncio.sleep(0)  # the close may or may not have arrived yet: both must work
            await client.close()
        assert [a.body for a in answers] == [b"0", b"1", b"2", b"3", b"4"]
        assert len(server.requests) == 5 and server.connections == 5

    run(test)


def test_chunked_answer_with_retry_after_and_an_interim_answer_before_it() -> None:
    async def test() -> None:
        busy = (
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 503 Busy\r\nRetry-After: 7\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nslow \r\n4\r\ndown\r\n0\r\n\r\n"
        )
        async with Server(replying(busy, b"HTTP/1.1 204 No Content\r\n\r\n")) as server:
            client = HttpClient(limit=1, timeout_s=5)
            first = await client.post(server.url(), b"{}", {})
            second = await client.post(server.url(), b"{}", {})  # on the connection kept
            await client.close()
        assert (first.status, first.body, first.retry_after) == (503, b"slow down", "7")
        assert (second.status, second.retry_after) == (204, None)
        assert server.connections == 1

    run(test)


def test_an_answer_read_until_close_ends_the_connection() -> None:
    async def test() -> None:
        async with Server(replying(b"HTTP/1.1 500 Oops\r\nconnection: close\r\n\r\nboom")) as server:
            client = HttpClient(limit=1, timeout_s=5)
            answers = [await client.post(server.url(), b"x", {}) for _ in range(2)]
            await client.close()
        assert [(a.status, a.body) for a in answers] == [(500, b"boom"), (500, b"boom")]
        assert server.connections == 2

    run(test)


def test_a_silent_receiver_times_out_and_the_client_goes_on() -> None:
    async def test() -> None:
        silent = asyncio.Event()

        async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if not silent.is_set():
                silent.set()
                await server.read_request(reader)
                await asyncio.sleep(10)  # never answers
                return
            await echo()(server, reader, writer)

        async with Server(handler) as server:
            client = HttpClient(limit=1, timeout_s=0.5)
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await client.post(server.url(), b"first", {})
            assert 0.4 < time.monotonic() - started < 2
            answer = await client.post(server.url(), b"second", {})  # not the silent connection's late answer
            await client.close()
        assert (answer.status, answer.body) == (200, b"second")

    run(test)


@pytest.mark.parametrize(
    ("reply", "name"),
    [
        (b"HELLO\r\n\r\n", "RemoteProtocolError"),
        (b"", "RemoteProtocolError"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", "RemoteProtocolError"),
    ],
    ids=["garbage", "closed-without-answer", "body-cut-short"],
)
def test_what_is_not_a_complete_answer_is_a_remote_protocol_error(reply: bytes, name: str) -> None:
    async def test() -> None:
        async with Server(replying(reply)) as server:
            client = HttpClient(limit=1, timeout_s=5)
            with pytest.raises(HttpError) as raised:
                await client.post(server.url(), b"x", {})
            await client.close()
        assert raised.value.name == name
        assert len(server.requests) == 1  # a new connection's failure is not sent again

    run(test)


def test_nothing_listening_is_a_connect_error() -> None:
    async def test() -> None:
        async with Server(echo()) as server:
            url = server.url()
        client = HttpClient(limit=1, timeout_s=5)
        with pytest.raises(HttpError) as raised:
            await client.post(url, b"x", {})
        assert raised.value.name == "ConnectError"

    run(test)


def test_headers_are_sent_once_each_and_the_body_framing_is_the_clients() -> None:
    async def test() -> None:
        async with Server(echo()) as server:
            client = HttpClient(limit=1, timeout_s=5)
            headers = {"Content-Type": "text/plain", "content-type": "application/json", "Content-Length": "999"}
            await client.post(server.url("/a?b=1"), b"body", {**headers, "Authorization": "Bearer t"})
            with pytest.raises(ValueError):
                await client.post(server.url(), b"x", {"x-evil": "a\r\nx-injected: 1"})
            await client.close()
        head = server.requests[0][0].decode().lower().split("\r\n")
        assert head[0] == "post /a?b=1 http/1.1"
        assert [h for h in head if h.startswith("content-type:")] == ["content-type: application/json"]
        assert [h for h in head if h.startswith("content-length:")] == ["content-length: 4"]
        assert f"host: 127.0.0.1:{server.port}" in head and "authorization: bearer t" in head
        assert len(server.requests) == 1  # the refused header sent nothing

    run(test)


def _self_signed(name: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


def test_tls_verifies_the_name_given_apart_from_the_address_connected_to(tmp_path) -> None:
    """The dispatcher connects to the address it checked and verifies the site's own name."""
    cert, key = _self_signed("receiver.example")
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    trusted = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))

    async def test() -> None:
        async with Server(echo(), tls=served) as server:
            client = HttpClient(limit=1, timeout_s=5, ssl_context=trusted)
            url = server.url(scheme="https")
            answer = await client.post(url, b"sealed", {"host": "receiver.example"}, server_hostname="receiver.example")
            with pytest.raises(HttpError) as raised:  # the address is not the certificate's name
                await client.post(url, b"x", {})
            await client.close()
        assert (answer.status, answer.body) == (200, b"sealed")
        assert raised.value.name == "ConnectError"

    run(test)


def test_a_connection_that_never_completes_its_tls_handshake_times_out() -> None:
    """The time limit covers connecting too: a peer that accepts TCP and never answers the TLS
    handshake ends the request at the limit, as a TimeoutError like a silent answer."""

    async def test() -> None:
        async def silent(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(10)

        async with Server(silent) as server:
            client = HttpClient(limit=1, timeout_s=0.5)
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await client.post(server.url(scheme="https"), b"x", {})
            assert 0.4 < time.monotonic() - started < 2
            await client.close()

    run(test)
