"""The encrypted export package: build it for an approved transfer, open it at the recipient.

How :func:`build_package` runs (the steward's steps, in one call):

1. **select** — the cohort: rows of the source table (CSV/Parquet through
   :class:`~medfed.node.stores.tables.TableStore`) matching a text filter
   (:func:`~medfed.common.filter_text.parse_filter_text`);
2. **extract + pseudonymize** — apply the strategy's column rules with the node secret;
3. **verify** — the k-anonymity check (suppress or refuse as the strategy says), then the
   output's group sizes are recomputed and must all be ``>= k``;
4. **encrypt** — a fresh content key, AES-256-GCM per file (:mod:`.crypto`), the key
   wrapped to the recipient's X25519 public key;
5. **terms** — the terms-of-use text and its SHA-256 go into the manifest;
6. **transfer** — ``manifest.json``, ``manifest.mac`` (``manifest.sig`` when signed) and
   ``blobs/NNN.bin`` are written as one uncompressed tar, to a temporary name, then renamed.

How :func:`open_package` runs: it reads the tar's members into memory (regular files with
known names only), checks the signature (if any, and required with ``sender_key``), the
recipient fingerprint, unwraps the content key, checks the manifest tag and the terms'
hash, checks that the blobs present are exactly those listed, then decrypts every blob and
checks its size and SHA-256 — all before writing. Only then are the files written to a
temporary folder beside ``out`` and renamed to ``out``. Any failure raises
:class:`~medfed.common.errors.Refused` naming what failed, and nothing is written.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medfed.common.errors import BadRequest, Refused
from medfed.common.filter_text import parse_filter_text
from medfed.node.export import crypto
from medfed.node.ingest.tables.kanon import KAnonymityReport, verify
from medfed.node.ingest.tables.runner import deidentify_frame, read_table, table_bytes
from medfed.node.ingest.tables.strategy import Strategy
from medfed.node.stores.tables import TableStore

__all__ = ["ExportReport", "Manifest", "OpenedPackage", "build_package", "open_package"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_MANIFEST, _TAG, _SIG = "manifest.json", "manifest.mac", "manifest.sig"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileEntry(_Strict):
    name: str = Field(pattern=_NAME.pattern)
    blob: str = Field(pattern=r"^blobs/[0-9]{3,6}\.bin$")
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    nonce: str


class RecipientBlock(_Strict):
    fingerprint: str
    ephemeral_public: str
    wrap_nonce: str
    wrapped_key: str


class Terms(_Strict):
    text: str
    sha256: str


class Manifest(_Strict):
    format: Literal["medfed-export/1"]
    id: str
    created: str
    recipient: RecipientBlock
    sender: str | None = Field(description="fingerprint of the Ed25519 signing key, if signed")
    terms: Terms
    files: list[FileEntry]
    cohort: dict[str, Any]


class ExportReport(BaseModel):
    package: str
    manifest_id: str
    rows_selected: int
    rows_out: int
    k_anonymity: KAnonymityReport
    files: list[dict[str, Any]]
    recipient: str
    sender: str | None


class OpenedPackage(BaseModel):
    out: str
    manifest_id: str
    terms: str
    files: list[str]
    signed_by: str | None
    cohort: dict[str, Any]


def _select(
    source: Path,
    where: str | None,
    strategy: Strategy,
    person_column: str | None = None,
    excluded_persons: Callable[[], frozenset[str]] | None = None,
) -> pd.DataFrame:
    store = TableStore(
        read_table(source, text_columns=strategy.string_columns()),
        name=source.name,
        person_column=person_column,
        excluded_persons=excluded_persons,
    )
    try:
        condition = parse_filter_text(where) if where else None
        return store.select([c.name for c in store.columns], condition)
    finally:
        store.close()


def build_package(
    *,
    source: Path,
    out: Path,
    strategy: Strategy,
    secret: str,
    recipient: X25519PublicKey,
    terms: str,
    where: str | None = None,
    table_format: Literal["parquet", "csv"] = "parquet",
    sign_key: Ed25519PrivateKey | None = None,
    person_column: str | None = None,
    excluded_persons: Callable[[], frozenset[str]] | None = None,
) -> ExportReport:
    """Select, pseudonymize, verify, encrypt, attach terms, write the package (see above)."""
    if not terms.strip():
        raise BadRequest("export: the terms of use are empty")
    if out.exists():
        raise BadRequest(f"export: {out} exists; name a new package file")
    cohort = _select(Path(source), where, strategy, person_column, excluded_persons)
    if not len(cohort):
        raise BadRequest("export: the cohort filter selects no rows")
    frame, columns, kanon = deidentify_frame(cohort, strategy, secret=secret)
    verify(frame, strategy.k_anonymity)  # independent re-check of the rows released
    if list(frame.columns) != [c for c in cohort.columns if c in strategy.output_columns()]:
        raise Refused("export: verification failed: output columns differ from the strategy")
    cohort_info: dict[str, Any] = {
        "source": Path(source).name,
        "filter": where,
        "strategy_sha256": strategy.sha256(),
        "rows_selected": len(cohort),
        "rows": len(frame),
        "achieved_k": kanon.achieved_k,
    }
    report = {"cohort": cohort_info, "k_anonymity": kanon.model_dump()}
    report["columns"] = {n: c.model_dump() for n, c in columns.items()}
    plain = {
        f"data.{table_format}": table_bytes(frame, table_format),
        "deid-report.json": json.dumps(report, indent=2).encode(),
    }
    manifest_id = str(uuid.uuid4())
    content_key = crypto.new_content_key()
    ephemeral, wrap_nonce, wrapped = crypto.wrap_key(
        content_key, recipient, manifest_id=manifest_id
    )
    nonces = {name: os.urandom(12) for name in plain}
    manifest = Manifest(
        format="medfed-export/1",
        id=manifest_id,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        recipient=RecipientBlock(
            fingerprint=crypto.fingerprint(recipient),
            ephemeral_public=_b64(ephemeral),
            wrap_nonce=_b64(wrap_nonce),
            wrapped_key=_b64(wrapped),
        ),
        sender=crypto.fingerprint(sign_key.public_key()) if sign_key else None,
        terms=Terms(text=terms, sha256=hashlib.sha256(terms.encode()).hexdigest()),
        files=[
            FileEntry(
                name=name,
                blob=f"blobs/{i:03d}.bin",
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                nonce=_b64(nonces[name]),
            )
            for i, (name, data) in enumerate(plain.items())
        ],
        cohort=cohort_info,
    )
    manifest_bytes = json.dumps(manifest.model_dump(), indent=2, sort_keys=True).encode()
    manifest_hash = hashlib.sha256(manifest_bytes).digest()
    members: dict[str, bytes] = {
        _MANIFEST: manifest_bytes,
        _TAG: crypto.manifest_tag(content_key, manifest_bytes).hex().encode(),
    }
    if sign_key is not None:
        signature = {
            "algorithm": "ed25519",
            "public_key": _b64(crypto.raw_public(sign_key.public_key())),
            "signature": _b64(sign_key.sign(manifest_bytes)),
        }
        members[_SIG] = json.dumps(signature).encode()
    for entry in manifest.files:
        members[entry.blob] = crypto.encrypt_file(
            content_key,
            nonces[entry.name],
            plain[entry.name],
            manifest_hash=manifest_hash,
            name=entry.name,
        )
    _write_tar(Path(out), members)
    return ExportReport(
        package=str(out),
        manifest_id=manifest_id,
        rows_selected=len(cohort),
        rows_out=len(frame),
        k_anonymity=kanon,
        files=[{"name": f.name, "size": f.size, "sha256": f.sha256} for f in manifest.files],
        recipient=manifest.recipient.fingerprint,
        sender=manifest.sender,
    )


def _write_tar(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle, tarfile.open(fileobj=handle, mode="w") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_members(package: Path) -> dict[str, bytes]:
    if not package.is_file():
        raise BadRequest(f"package not found: {package}")
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(package, mode="r:") as tar:
            for info in tar:
                if not info.isreg():
                    raise Refused(f"package refused: member '{info.name}' is not a plain file")
                if info.name in members:
                    raise Refused(f"package refused: member '{info.name}' appears twice")
                handle = tar.extractfile(info)
                assert handle is not None
                members[info.name] = handle.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise Refused(f"package refused: not a readable tar file ({exc})") from None
    return members


def _check_signature(
    members: dict[str, bytes], manifest: Manifest, sender_key: Ed25519PublicKey | None
) -> str | None:
    if _SIG not in members:
        if sender_key is not None or manifest.sender is not None:
            raise Refused("package refused: manifest.sig is missing but a signature is required")
        return None
    try:
        sig = json.loads(members[_SIG])
        public = Ed25519PublicKey.from_public_bytes(_unb64(sig["public_key"]))
        signature = _unb64(sig["signature"])
    except (ValueError, KeyError, TypeError):
        raise Refused("package refused: manifest.sig is not a valid signature record") from None
    signer = crypto.fingerprint(public)
    if sender_key is not None and signer != crypto.fingerprint(sender_key):
        raise Refused(f"package refused: signed by key {signer[:16]}…, not the expected sender")
    if manifest.sender != signer:
        raise Refused("package refused: the manifest's sender does not match its signature key")
    try:
        crypto.verify_signature(public, signature, members[_MANIFEST])
    except crypto.CryptoFailure:
        raise Refused(
            "package refused: the manifest signature does not verify (manifest altered)"
        ) from None
    return signer


def _verify(
    members: dict[str, bytes], key: X25519PrivateKey, sender_key: Ed25519PublicKey | None
) -> tuple[Manifest, dict[str, bytes], str | None]:
    """Every check of the module docstring; the decrypted files by name, nothing written."""
    for required in (_MANIFEST, _TAG):
        if required not in members:
            raise Refused(f"package refused: {required} is missing")
    raw = members[_MANIFEST]
    try:
        manifest = Manifest.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise Refused(f"package refused: manifest.json is not a valid manifest ({exc})") from None
    signer = _check_signature(members, manifest, sender_key)
    mine = crypto.fingerprint(key.public_key())
    if manifest.recipient.fingerprint != mine:
        raise Refused(
            f"package refused: it is for recipient key {manifest.recipient.fingerprint[:16]}…, "
            f"not this key {mine[:16]}…"
        )
    try:
        block = manifest.recipient
        content_key = crypto.unwrap_key(
            _unb64(block.ephemeral_public),
            _unb64(block.wrap_nonce),
            _unb64(block.wrapped_key),
            key,
            manifest_id=manifest.id,
        )
        tag = bytes.fromhex(members[_TAG].decode())
    except (crypto.CryptoFailure, ValueError):
        raise Refused(
            "package refused: the content key does not unwrap with this key "
            "(key block altered or wrong key)"
        ) from None
    if not crypto.hmac_equal(crypto.manifest_tag(content_key, raw), tag):
        raise Refused("package refused: manifest.json was altered (manifest tag does not match)")
    if hashlib.sha256(manifest.terms.text.encode()).hexdigest() != manifest.terms.sha256:
        raise Refused("package refused: the terms text does not match its SHA-256")
    listed = {f.blob: f for f in manifest.files}
    names = [f.name for f in manifest.files]
    if len(set(names)) != len(names) or len(listed) != len(manifest.files):
        raise Refused("package refused: the manifest lists a file twice")
    for entry in manifest.files:
        if entry.blob not in members:
            raise Refused(f"package refused: file '{entry.name}' ({entry.blob}) is missing")
    for name in members:
        if name not in listed and name not in (_MANIFEST, _TAG, _SIG):
            raise Refused(f"package refused: unexpected member '{name}' not in the manifest")
    manifest_hash = hashlib.sha256(raw).digest()
    files: dict[str, bytes] = {}
    for entry in manifest.files:
        try:
            data = crypto.decrypt_file(
                content_key,
                _unb64(entry.nonce),
                members[entry.blob],
                manifest_hash=manifest_hash,
                name=entry.name,
            )
        except (crypto.CryptoFailure, ValueError):
            raise Refused(
                f"package refused: file '{entry.name}' ({entry.blob}) fails "
                "authentication (blob altered)"
            ) from None
        if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
            raise Refused(f"package refused: file '{entry.name}' does not match its SHA-256")
        files[entry.name] = data
    return manifest, files, signer


def open_package(
    package: Path,
    out: Path,
    *,
    key: X25519PrivateKey,
    sender_key: Ed25519PublicKey | None = None,
) -> OpenedPackage:
    """Verify everything, then decrypt into ``out`` (a new or empty folder) with TERMS.txt."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BadRequest(f"open: {out} exists and is not an empty folder")
    manifest, files, signer = _verify(_read_members(Path(package)), key, sender_key)
    if "TERMS.txt" in files:
        raise Refused("package refused: a file may not be named TERMS.txt")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        (tmp / "TERMS.txt").write_text(manifest.terms.text)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return OpenedPackage(
        out=str(out),
        manifest_id=manifest.id,
        terms=manifest.terms.text,
        files=sorted(files),
        signed_by=signer,
        cohort=manifest.cohort,
    )
