"""Binary transport of large aggregates: named numpy arrays beside a small JSON part.

How it runs. A local step may put numpy arrays (``float64`` or ``int64``, any shape) at
the leaves of its output dict — Cox's risk-set sums, Kaplan-Meier's risk sets. The node's
gate checks them as arrays (:mod:`medfed.node.gate.rules`). Before the outcome is sent,
:func:`split` replaces every array by a reference ``{"$array": "<path>"}`` (the path of
keys that led to it, e.g. ``"s2.all"``) and collects the arrays by that name; the JSON
part then is small. :func:`encode_body` frames the two parts as one HTTP body::

    b"MEDFED-OUTCOME/1\\n"        magic (17 bytes)
    8 bytes, big-endian            length J of the JSON part
    J bytes                        the outcome as canonical JSON (UTF-8), references inside
    the rest                       the arrays as one safetensors file (little-endian data)

An outcome without arrays is sent as plain JSON, as before, so small outputs and every
algorithm that returns none are unchanged. The node hashes the exact body it sends (its
run log), the hub hashes the same bytes (ledger), checks the JSON part as any outcome,
checks that the safetensors part parses, holds only ``float64``/``int64`` and matches the
references one to one (:func:`decode_body`, :func:`check_references`), and stores the
safetensors bytes once as a blob named by their SHA-256 (the run row keeps the hash).
The aggregate step gets the arrays back in place by :func:`join`, without any JSON decoding
of the numbers. Errors name the problem, never a value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from medfed.common.errors import BadRequest

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = [
    "ALLOWED_DTYPES",
    "CONTENT_TYPE",
    "MAGIC",
    "REF",
    "check_references",
    "decode_arrays",
    "decode_body",
    "encode_arrays",
    "encode_body",
    "has_gaps",
    "join",
    "outcome_body",
    "references",
    "round_trip",
    "split",
]

MAGIC = b"MEDFED-OUTCOME/1\n"
CONTENT_TYPE = "application/vnd.medfed.outcome"
#: the key of a reference to an array in the JSON part
REF = "$array"
ALLOWED_DTYPES = (np.dtype(np.float64), np.dtype(np.int64))
_LENGTH = 8
_MAX_NAME = 300


def split(value: Any, path: str = "") -> tuple[Any, dict[str, np.ndarray]]:
    """``value`` with each numpy array replaced by a reference, and the arrays by name."""
    arrays: dict[str, np.ndarray] = {}

    def walk(item: Any, where: str) -> Any:
        if isinstance(item, np.ndarray):
            name = where or "array"
            if name in arrays or len(name) > _MAX_NAME:
                name = f"{len(arrays)}"
            arrays[name] = np.ascontiguousarray(item)
            return {REF: name}
        if isinstance(item, dict):
            return {k: walk(v, f"{where}.{k}" if where else str(k)) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(item)]
        return item

    return walk(value, path), arrays


def _is_ref(item: Any) -> bool:
    return isinstance(item, dict) and len(item) == 1 and REF in item


def references(value: Any) -> list[str]:
    """Every array name that ``value`` refers to, in document order."""
    if _is_ref(value):
        return [str(value[REF])]
    if isinstance(value, dict):
        return [name for item in value.values() for name in references(item)]
    if isinstance(value, list):
        return [name for item in value for name in references(item)]
    return []


def join(value: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    """The inverse of :func:`split`: each reference replaced by its array."""
    if _is_ref(value):
        name = value[REF]
        if not isinstance(name, str) or name not in arrays:
            raise BadRequest("arrays: the output refers to an array the body does not carry")
        return arrays[name]
    if isinstance(value, dict):
        return {k: join(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [join(v, arrays) for v in value]
    return value


def check_references(value: Any, arrays: Mapping[str, np.ndarray]) -> None:
    """Each array is referred to exactly once and every reference has its array."""
    names = references(value)
    if len(names) != len(set(names)) or set(names) != set(arrays):
        raise BadRequest(
            "arrays: the references in the output and the arrays in the body do not match"
        )


def encode_arrays(arrays: Mapping[str, np.ndarray]) -> bytes:
    """One safetensors file; only ``float64`` and ``int64`` arrays are sent."""
    for name, array in arrays.items():
        if array.dtype not in ALLOWED_DTYPES:
            raise ValueError(f"arrays: '{name}' is {array.dtype}, not float64 or int64")
    return bytes(st_save(dict(arrays)))


def decode_arrays(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file; a malformed file or another dtype is a BadRequest."""
    try:
        arrays = st_load(data)
    except Exception:  # any parse failure (SafetensorError, a bad header, …)
        raise BadRequest("arrays: the binary part is not a valid safetensors file") from None
    for array in arrays.values():
        if array.dtype not in ALLOWED_DTYPES:
            raise BadRequest("arrays: only float64 and int64 arrays are accepted")
    return arrays


def _canonical(document: Any) -> bytes:
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode()


def outcome_body(outcome: BaseModel) -> bytes:
    """The bytes a node sends for ``outcome``: canonical JSON, or the framed body when its
    ``output`` holds arrays."""
    part, arrays = split(getattr(outcome, "output", None), "output")
    document = outcome.model_copy(update={"output": part}).model_dump(mode="json")
    if not arrays:
        return _canonical(document)
    return encode_body(document, arrays)


def encode_body(document: Any, arrays: Mapping[str, np.ndarray]) -> bytes:
    """The framed body: ``document`` (JSON-able, references inside) and its arrays."""
    head = _canonical(document)
    return MAGIC + len(head).to_bytes(_LENGTH, "big") + head + encode_arrays(arrays)


def decode_body(raw: bytes) -> tuple[bytes, bytes | None]:
    """The JSON part and the safetensors part (None for a plain JSON body)."""
    if not raw.startswith(MAGIC):
        return raw, None
    start = len(MAGIC) + _LENGTH
    if len(raw) < start:
        raise BadRequest("arrays: the body is cut short in its frame header")
    length = int.from_bytes(raw[len(MAGIC) : start], "big")
    if length > len(raw) - start:
        raise BadRequest("arrays: the body's JSON part is longer than the body")
    return raw[start : start + length], raw[start + length :]


def has_gaps(values: Any) -> bool:
    """Whether a released series holds a suppressed cell (None in JSON, NaN in an array)."""
    if isinstance(values, np.ndarray):
        return values.dtype.kind == "f" and bool(np.isnan(values).any())
    return any(v is None for v in values)


def round_trip(value: Any) -> Any:
    """``value`` as the hub receives it: JSON part through JSON, arrays through safetensors
    (in-process federations, tests)."""
    part, arrays = split(value)
    document = json.loads(_canonical(part))
    if not arrays:
        return document
    return join(document, decode_arrays(encode_arrays(arrays)))
