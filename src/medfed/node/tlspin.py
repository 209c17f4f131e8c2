"""Certificate pinning for the node's TLS connections to the hub (``hub_cert_sha256``).

How it runs: :func:`hub_tls` builds the one :class:`ssl.SSLContext` every HTTPS client of
the node uses (the hub client and the learning services). Trust comes first, as httpx
would have it — the ``SSL_CERT_FILE``/``SSL_CERT_DIR`` of the environment, else certifi's
bundle — or only ``hub_ca_file`` when ``node.toml`` names one; hostname checks stay on.
With pins, the context is a :class:`PinnedContext`: httpcore opens each new connection
with ``wrap_socket``, which completes the TLS handshake; right after it, before httpx
writes a single byte of the request (whose ``Authorization`` header carries the node
secret), the SHA-256 of the hub's DER leaf certificate is compared with the pins. A
mismatch closes the socket and raises :class:`CertificatePinMismatch`, naming the pinned
and the presented fingerprints. It is not a transport error: the request fails at once and
the node's retry loop does not treat it as an outage (a node that meets it at start
exits, and its supervisor's log shows why). Kept-alive connections were checked when
they were opened.

A pin is 64 hex digits (colons and either case accepted, as ``openssl x509 -fingerprint
-sha256`` prints it); several pins allow a certificate rotation. :func:`fetch_certificate`
is ``medfed node hub-fingerprint``: it connects once and reports what the hub presents.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from medfed.common.errors import BadRequest, MedfedError


class CertificatePinMismatch(MedfedError):
    """The hub presented a TLS certificate whose SHA-256 is not pinned in ``node.toml``.

    Raised after the handshake and before any request byte is written. Its status (495,
    as nginx names a certificate error) is below 500: never retried as an outage.
    """

    status_code = 495


def normalize_pin(value: str) -> str:
    """``value`` as 64 lowercase hex digits; colons and spaces are dropped, case ignored."""
    digits = value.replace(":", "").replace(" ", "").strip().lower()
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        raise ValueError(
            f"hub_cert_sha256 '{value}' is not a SHA-256 fingerprint: give 64 hex digits "
            "(colons allowed), as `medfed node hub-fingerprint URL` prints them"
        )
    return digits


def fingerprint(der: bytes) -> str:
    """The pin of a DER-encoded certificate: its SHA-256 as lowercase hex."""
    return hashlib.sha256(der).hexdigest()


def _colons(pin: str) -> str:
    return ":".join(pin[i : i + 2] for i in range(0, len(pin), 2)).upper()


class PinnedContext(ssl.SSLContext):
    """An SSL context that refuses a connection whose leaf certificate is not pinned."""

    pins: frozenset[str]

    def wrap_socket(
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        wrapped = super().wrap_socket(
            sock,
            server_side=server_side,
            do_handshake_on_connect=do_handshake_on_connect,
            suppress_ragged_eofs=suppress_ragged_eofs,
            server_hostname=server_hostname,
            session=session,
        )
        if not do_handshake_on_connect:
            wrapped.do_handshake()  # the pin is checked before the caller may write
        der = wrapped.getpeercert(binary_form=True)
        seen = fingerprint(der) if der else "(no certificate)"
        if seen not in self.pins:
            wrapped.close()
            host = (
                server_hostname.decode() if isinstance(server_hostname, bytes) else server_hostname
            )
            expected = " or ".join(_colons(p) for p in sorted(self.pins))
            raise CertificatePinMismatch(
                f"the hub at {host} presented a TLS certificate with SHA-256 "
                f"{_colons(seen) if der else seen}, but node.toml pins hub_cert_sha256 "
                f"{expected}: refused before sending anything. If the hub's certificate was "
                "renewed, check the new one (`medfed node hub-fingerprint URL`) and add its "
                "fingerprint to hub_cert_sha256"
            )
        return wrapped

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        # TLS inside TLS (an https:// proxy): the handshake happens later, out of our sight
        raise CertificatePinMismatch(
            "hub_cert_sha256 cannot be checked through an https:// proxy; "
            "reach the hub directly or through an http:// (CONNECT) proxy"
        )


def _load_trust(context: ssl.SSLContext, ca_file: Path | None) -> None:
    """The certificates the node trusts: ``ca_file`` only, else what httpx would use."""
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise BadRequest(f"cannot read hub_ca_file {ca_file}: {exc}") from None
    elif os.environ.get("SSL_CERT_FILE"):
        context.load_verify_locations(cafile=os.environ["SSL_CERT_FILE"])
    elif os.environ.get("SSL_CERT_DIR"):
        context.load_verify_locations(capath=os.environ["SSL_CERT_DIR"])
    else:
        import certifi

        context.load_verify_locations(cafile=certifi.where())


def _client_context(cls: type[ssl.SSLContext], ca_file: Path | None) -> ssl.SSLContext:
    context = cls(ssl.PROTOCOL_TLS_CLIENT)  # hostname checks and CERT_REQUIRED on
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_trust(context, ca_file)
    return context


def hub_tls(*, pins: Iterable[str] = (), ca_file: Path | None = None) -> ssl.SSLContext | bool:
    """What the node's HTTP clients pass as httpx's ``verify``.

    ``True`` (httpx's own defaults) when nothing is pinned and no CA file named; else a
    context trusting ``ca_file`` (or the usual store) that, with ``pins``, checks them.
    """
    wanted = frozenset(normalize_pin(p) for p in pins)
    if not wanted and ca_file is None:
        return True
    if not wanted:
        return _client_context(ssl.SSLContext, ca_file)
    context = _client_context(PinnedContext, ca_file)
    assert isinstance(context, PinnedContext)
    context.pins = wanted
    return context


@dataclass(frozen=True)
class HubCertificate:
    """What a hub presented: the pin, and enough to recognise the certificate by eye."""

    sha256: str
    subject: str
    issuer: str
    not_after: datetime
    verified: bool

    @property
    def colons(self) -> str:
        return _colons(self.sha256)


def fetch_certificate(
    url: str, *, ca_file: Path | None = None, verify: bool = True, timeout: float = 10.0
) -> HubCertificate:
    """Connect to ``url`` once and return its leaf certificate's fingerprint and names.

    With ``verify`` the certificate must be trusted (the usual store, or ``ca_file``) and
    name the host; without, it is only read (for a first look at a self-signed hub).
    """
    from cryptography import x509

    parts = urlsplit(url if "://" in url else f"https://{url}")
    if parts.scheme != "https" or not parts.hostname:
        raise BadRequest(f"'{url}' is not an https:// URL")
    host, port = parts.hostname, parts.port or 443
    context = _client_context(ssl.SSLContext, ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except ssl.SSLCertVerificationError as exc:
        raise BadRequest(
            f"the certificate of {host}:{port} is not trusted ({exc.verify_message}); name its "
            "CA with --ca-file, or look without checking (--no-verify) and compare the "
            "fingerprint with the hub operator's"
        ) from None
    except OSError as exc:
        raise BadRequest(f"cannot connect to {host}:{port}: {exc}") from None
    if not der:
        raise BadRequest(f"{host}:{port} presented no certificate")
    cert = x509.load_der_x509_certificate(der)
    return HubCertificate(
        sha256=fingerprint(der),
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_after=cert.not_valid_after_utc,
        verified=verify,
    )


def pins_of(value: str | Sequence[str] | None) -> list[str]:
    """``hub_cert_sha256`` from ``node.toml`` (one string or a list) as normalized pins."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    return [normalize_pin(v) for v in items]
