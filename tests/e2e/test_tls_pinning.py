"""Certificate pinning (``hub_cert_sha256``): a node talks only to the hub it pinned.

Real TLS throughout, with self-signed certificates made here by ``cryptography``:

* a bare TLS server in this process records every byte each connection sends after its
  handshake: with a wrong pin the node's client refuses the hub before sending anything
  (the server receives 0 bytes, the node secret never leaves) and the error names both
  fingerprints; with the right pin the same server receives the request, secret included
  (so the recording is real);
* the real hub (``medfed hub serve --ssl-certfile/--ssl-keyfile``) and real node
  processes: the pinned node registers its dataset and keeps reporting in; a node pinning
  another certificate exits with the mismatch in its log and the hub never sees it;
  ``medfed node hub-fingerprint`` prints the pin that works;
* ``node.toml`` checks: a malformed pin or a pin on an http:// hub are refused at start.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from medfed.cli.main import app as cli_app
from medfed.common.errors import BadRequest, NotFound
from medfed.hub.bootstrap import init_hub
from medfed.hub.config import HubSettings
from medfed.node.config import load_config
from medfed.node.hubclient import NodeHubClient
from medfed.node.tlspin import CertificatePinMismatch, fingerprint, hub_tls
from medfed.sdk.client import Client
from medfed.sdk.http import HubHTTP
from medfed.testing.processes import HubProcess, NodeProcess

pytestmark = pytest.mark.e2e

SECRET = "mfn_pinning-test-secret-0123456789"


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path
    sha256: str

    @property
    def colons(self) -> str:
        return ":".join(self.sha256[i : i + 2] for i in range(0, 64, 2)).upper()


def _make_cert(folder: Path, name: str) -> Cert:
    """A self-signed certificate for 127.0.0.1 and localhost (its own CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"medfed test hub {name}")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return Cert(cert_path, key_path, fingerprint(cert.public_bytes(serialization.Encoding.DER)))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Cert]:
    folder = tmp_path_factory.mktemp("tls")
    return {name: _make_cert(folder, name) for name in ("hub", "other")}


class RecordingTLSServer:
    """A TLS server that answers every request with 404 and records what each sent."""

    def __init__(self, cert: Cert) -> None:
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert.cert, cert.key)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.received: list[bytes] = []  # per connection, after its handshake
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._done.is_set():
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(raw,), daemon=True).start()

    def _one(self, raw: socket.socket) -> None:
        data = b""
        try:
            raw.settimeout(60)
            with self._context.wrap_socket(raw, server_side=True) as tls:
                while b"\r\n\r\n" not in data:
                    chunk = tls.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if data:
                    body = b'{"detail": "nothing here"}'
                    tls.sendall(
                        b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
                    )
        except (OSError, ssl.SSLError):
            pass
        self.received.append(data)

    def close(self) -> None:
        self._done.set()
        self._listener.close()


@pytest.fixture
def tls_server(certs: dict[str, Cert]) -> Iterator[RecordingTLSServer]:
    server = RecordingTLSServer(certs["hub"])
    try:
        yield server
    finally:
        server.close()


def _wait_until(predicate: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"not reached in time: {what}")


def test_a_wrong_pin_refuses_the_hub_before_a_single_byte_is_sent(
    tls_server: RecordingTLSServer, certs: dict[str, Cert]
) -> None:
    url = f"https://127.0.0.1:{tls_server.port}"
    stop = threading.Event()
    watchdog = threading.Timer(60.0, stop.set)  # were the mismatch retried, stop it anyway
    watchdog.start()
    wrong = hub_tls(pins=[certs["other"].sha256], ca_file=certs["hub"].cert)
    client = NodeHubClient(url, SECRET, stop=stop, verify=wrong)
    try:
        with pytest.raises(CertificatePinMismatch) as refused:
            client.me()
    finally:
        watchdog.cancel()
        client.close()
    assert not stop.is_set()  # refused at once, not retried as an outage
    message = refused.value.message
    assert f"presented a TLS certificate with SHA-256 {certs['hub'].colons}" in message
    assert f"pins hub_cert_sha256 {certs['other'].colons}" in message
    assert "refused before sending anything" in message
    _wait_until(lambda: len(tls_server.received) == 1, "the server closing the connection")
    assert tls_server.received == [b""]  # the handshake, then nothing: no request, no secret

    # the right pin (colon form, any case) on the same server: the request is sent
    right = hub_tls(pins=[certs["other"].sha256, certs["hub"].colons.lower()], ca_file=None)
    assert not isinstance(right, bool)
    right.load_verify_locations(cafile=str(certs["hub"].cert))
    http = HubHTTP(url, SECRET, verify=right)
    try:
        with pytest.raises(NotFound):
            http.request("GET", "/api/node/me")
    finally:
        http.close()
    _wait_until(lambda: len(tls_server.received) == 2, "the second connection")
    sent = tls_server.received[1]
    assert sent.startswith(b"GET /api/node/me HTTP/1.1")
    assert f"Bearer {SECRET}".encode() in sent


def test_the_pin_does_not_replace_certificate_verification(
    tls_server: RecordingTLSServer, certs: dict[str, Cert]
) -> None:
    """The right pin of an untrusted certificate still fails the handshake (no CA named)."""
    context = hub_tls(pins=[certs["hub"].sha256])  # the usual trust store: no test CA there
    http = HubHTTP(f"https://127.0.0.1:{tls_server.port}", SECRET, verify=context)
    try:
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
            http.request("GET", "/api/node/me")
    finally:
        http.close()
    _wait_until(lambda: len(tls_server.received) == 1, "the server closing the connection")
    assert tls_server.received == [b""]


def _toml(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "node.toml"
    path.write_text(text)
    return path


def test_node_toml_checks_the_pin_at_start(tmp_path: Path, certs: dict[str, Cert]) -> None:
    head = 'hub_url = "https://hub.example.org"\nsecret = "mfn_x"\n'
    with pytest.raises(BadRequest, match="is not a SHA-256 fingerprint: give 64 hex digits"):
        load_config(_toml(tmp_path / "a", head + 'hub_cert_sha256 = "abc123"\n'))
    with pytest.raises(BadRequest, match="hub_cert_sha256"):
        load_config(_toml(tmp_path / "b", head + f'hub_cert_sha256 = "{"g" * 64}"\n'))
    plain = f'hub_url = "http://127.0.0.1:8000"\nsecret = "x"\nhub_cert_sha256 = "{"a" * 64}"\n'
    with pytest.raises(BadRequest, match=r"pins a TLS certificate, but hub_url .* is not https"):
        load_config(_toml(tmp_path / "c", plain))
    with pytest.raises(BadRequest, match=r"hub_ca_file: .* is not a file"):
        load_config(_toml(tmp_path / "d", head + 'hub_ca_file = "missing.pem"\n'))
    rotation = f'hub_cert_sha256 = ["{certs["hub"].colons}", "{certs["other"].sha256.upper()}"]\n'
    config = load_config(_toml(tmp_path / "e", head + rotation))
    assert config.hub_cert_sha256 == [certs["hub"].sha256, certs["other"].sha256]
    single = load_config(
        _toml(tmp_path / "f", head + f'hub_cert_sha256 = "{certs["hub"].sha256}"\n')
    )
    assert single.hub_cert_sha256 == [certs["hub"].sha256]
    assert load_config(_toml(tmp_path / "g", head)).tls_verify() is True  # httpx's defaults


@dataclass
class PinnedNode(NodeProcess):
    """A node process whose ``node.toml`` pins a certificate and names the hub's CA."""

    pin: str = ""
    ca_file: Path | None = None

    def write_config(self) -> Path:
        path = super().write_config()
        extra = f'hub_cert_sha256 = "{self.pin}"\nhub_ca_file = "{self.ca_file}"\n'
        path.write_text(extra + path.read_text())
        return path


def test_a_real_hub_over_tls_serves_the_pinned_node_and_not_the_other(
    tmp_path: Path, certs: dict[str, Cert], gbsg2: pd.DataFrame
) -> None:
    hub_dir = tmp_path / "hub"
    settings = HubSettings(data_dir=hub_dir, dev_mode=True)
    _, token = init_hub(settings, organization="Hub", username="admin", password="admin-pw-123")
    hub = HubProcess(hub_dir, tls=(certs["hub"].cert, certs["hub"].key))
    nodes: list[NodeProcess] = []
    hub.start()
    trust = ssl.create_default_context(cafile=str(certs["hub"].cert))
    admin = Client(hub.url, token, http_client=httpx.Client(base_url=hub.url, verify=trust))
    try:
        assert hub.url.startswith("https://")
        # what an operator runs to learn the pin
        shown = CliRunner().invoke(
            cli_app, ["node", "hub-fingerprint", hub.url, "--ca-file", str(certs["hub"].cert)]
        )
        assert shown.exit_code == 0, shown.output
        assert f'hub_cert_sha256 = "{certs["hub"].sha256}"' in shown.output
        assert "medfed test hub hub" in shown.output

        org = admin.organizations.create("Hospital")
        data = tmp_path / "share.csv"
        gbsg2.head(200).to_csv(data, index=False)
        for name, pin in (("pinned", certs["hub"].colons), ("mispinned", certs["other"].sha256)):
            created = admin.nodes.create(name, organization_id=org.id)
            node = PinnedNode(
                name,
                tmp_path / name,
                hub.url,
                created.secret,
                {"gbsg2": data},
                pin=pin,
                ca_file=certs["hub"].cert,
            )
            node.start()
            nodes.append(node)
        pinned, mispinned = nodes

        def registered() -> bool:
            return any(d.name == "gbsg2" for d in admin.datasets.list())

        _wait_until(registered, "the pinned node registering its dataset over TLS")
        _wait_until(
            lambda: {n.name: n.online for n in admin.nodes.list()}["pinned"],
            "the pinned node reporting in",
        )
        assert mispinned.process is not None
        _wait_until(
            lambda: mispinned.process is not None and mispinned.process.poll() is not None,
            "the mispinned node exiting",
        )
        assert mispinned.process.returncode != 0
        log = (mispinned.folder / "node.log").read_text()
        assert f"presented a TLS certificate with SHA-256 {certs['hub'].colons}" in log
        assert f"pins hub_cert_sha256 {certs['other'].colons}" in log
        seen = {n.name: n.last_seen_at for n in admin.nodes.list()}
        assert seen["mispinned"] is None and seen["pinned"] is not None
        assert [d.node_id for d in admin.datasets.list()] == [
            n.id for n in admin.nodes.list() if n.name == "pinned"
        ]
        assert pinned.process is not None and pinned.process.poll() is None
    finally:
        admin.close()
        for node in nodes:
            node.stop()
        hub.stop()
