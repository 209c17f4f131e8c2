"""Binary transport of large aggregates (issue 18 item 4): envelope, gate, hub storage.

The envelope (``medfed.common.arrays``) round-trips arrays exactly and gives the same bytes
for the same outcome; a malformed body is a clear 400 that names no value and stores
nothing; the gate applies the same rules to an array as to the list it replaces; the hub
stores the arrays once as a blob and gives them back to the aggregate step in place.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from hubtools import World
from medfed.algorithms.base import Cells, Grid, MinRows
from medfed.common.arrays import (
    MAGIC,
    decode_arrays,
    decode_body,
    encode_arrays,
    encode_body,
    join,
    outcome_body,
    round_trip,
    split,
)
from medfed.common.errors import BadRequest
from medfed.common.resources import RunOutcome
from medfed.hub.db.models import LedgerEntry, Run
from medfed.hub.services.outputs import payload_of
from medfed.node.gate import GatePolicy, apply_gate

SECRET = 987654.321  # a value that must never appear in an error message


def _output() -> dict[str, Any]:
    rng = np.random.default_rng(7)
    return {
        "rows": 40,
        "at_risk": {"all": np.array([40, 31, 12, 0], dtype=np.int64)},
        "s2": {"all": rng.normal(size=(4, 6)), "x": np.array([SECRET, -0.0, 1e-300])},
        "xsum": [1.5, 2.5],
    }


def test_arrays_round_trip_exactly_beside_their_json_part() -> None:
    output = _output()
    part, arrays = split(output)
    assert part["at_risk"] == {"all": {"$array": "at_risk.all"}}
    assert part["xsum"] == [1.5, 2.5] and set(arrays) == {"at_risk.all", "s2.all", "s2.x"}
    body = encode_body({"output": part}, arrays)
    document, binary = decode_body(body)
    assert body.startswith(MAGIC) and binary is not None
    back = join(json.loads(document)["output"], decode_arrays(binary))
    for key in ("all", "x"):
        np.testing.assert_array_equal(back["s2"][key], output["s2"][key])
        assert back["s2"][key].dtype == np.float64
    np.testing.assert_array_equal(back["at_risk"]["all"], output["at_risk"]["all"])
    assert back["at_risk"]["all"].dtype == np.int64
    assert round_trip({"a": [1, 2]}) == {"a": [1, 2]}  # no arrays: plain JSON


def test_the_same_outcome_gives_the_same_bytes_and_hash() -> None:
    first = RunOutcome(lease_id="L1", status="done", output_status="ok", output=_output())
    again = RunOutcome(lease_id="L1", status="done", output_status="ok", output=_output())
    a, b = outcome_body(first), outcome_body(again)
    assert a == b and hashlib.sha256(a).hexdigest() == hashlib.sha256(b).hexdigest()
    small = RunOutcome(lease_id="L1", status="done", output_status="ok", output={"rows": 3})
    assert (
        outcome_body(small) == b'{"duration_s":null,"error":null,"filter_hash":null,'
        b'"lease_id":"L1","output":{"rows":3},"output_status":"ok","rowset_fingerprint":null,'
        b'"rule":null,"status":"done"}'
    )  # small outputs stay plain JSON


@pytest.mark.parametrize(
    "body",
    [
        MAGIC + b"\x00\x00",  # cut in the frame header
        MAGIC + (10**9).to_bytes(8, "big") + b"{}",  # JSON part longer than the body
    ],
)
def test_a_broken_frame_is_a_clear_error(body: bytes) -> None:
    with pytest.raises(BadRequest, match="arrays:"):
        decode_body(body)


def test_a_malformed_or_foreign_binary_part_names_no_value() -> None:
    with pytest.raises(BadRequest, match="not a valid safetensors") as caught:
        decode_arrays(b"\x10\x00\x00\x00\x00\x00\x00\x00{" + str(SECRET).encode())
    assert str(SECRET) not in caught.value.message
    from safetensors.numpy import save

    with pytest.raises(BadRequest, match="only float64 and int64"):
        decode_arrays(save({"a": np.array([SECRET], dtype=np.float32)}))
    with pytest.raises(ValueError, match="not float64 or int64"):
        encode_arrays({"a": np.array([1], dtype=np.int8)})


def test_the_gate_refuses_and_suppresses_arrays_as_it_does_lists() -> None:
    policy = GatePolicy(min_cell_count=5)
    counts = [40, 12, 4, 3, 0]
    as_list = apply_gate({"rows": 40, "at_risk": {"a": counts}}, [Cells("at_risk")], policy)
    as_array = apply_gate(
        {"rows": 40, "at_risk": {"a": np.array(counts, dtype=np.int64)}}, [Cells("at_risk")], policy
    )
    assert as_list.payload is not None and as_array.payload is not None
    gated = as_array.payload["at_risk"]["a"]
    assert [v is None for v in as_list.payload["at_risk"]["a"]] == np.isnan(gated).tolist()
    assert as_list.suppressed_cells == as_array.suppressed_cells == 2
    for rule, output in (
        (Grid("cells"), {"rows": 40, "cells": np.array([[10, 3], [0, 9]], dtype=np.int64)}),
        (MinRows("rows"), {"rows": 4, "cells": np.array([1.0, 2.0])}),
    ):
        listed = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in output.items()}
        assert apply_gate(listed, [rule], policy).status == "suppressed"
        assert apply_gate(output, [rule], policy).status == "suppressed"
    with pytest.raises(ValueError, match="negative count") as caught:
        apply_gate({"rows": 9, "c": np.array([5, -7], dtype=np.int64)}, [Cells("c")], policy)
    assert "-7" not in str(caught.value)
    with pytest.raises(ValueError, match="not plain JSON"):
        apply_gate({"rows": 9, "c": np.array([1], dtype=np.int32)}, [], policy)
    floats = apply_gate({"rows": 9, "s": np.array([1.0, np.inf])}, [], policy).payload
    assert floats is not None and np.isnan(floats["s"][1])  # non-finite: the array's None


def _claimed(world: World) -> tuple[dict[str, Any], Any]:
    world.create_task()
    for node in (world.node_a, world.node_b):
        assignment = world.claim(node)
        if assignment is not None:
            return assignment, node
    raise AssertionError("no run to claim")


def test_the_hub_stores_the_arrays_once_and_aggregates_them_in_place(world: World) -> None:
    assignment, node = _claimed(world)
    run_id = assignment["run_id"]
    extra = np.arange(12, dtype=np.float64).reshape(3, 4) + SECRET
    output = {"rows": 10, "n": {"age": 10}, "stats": {"age": {"sum": 400.0}}, "extra": extra}
    outcome = RunOutcome(
        lease_id=assignment["lease_id"], status="done", output_status="ok", output=output
    )
    body = outcome_body(outcome)
    url = f"/api/node/runs/{run_id}/outcome"
    bad = [
        body[: len(MAGIC) + 3],  # cut short
        body[:-5],  # safetensors part truncated
        encode_body(outcome.model_copy(update={"output": {"rows": 10}}).model_dump(), {"x": extra}),
    ]
    for broken in bad:
        response = world.api.post(url, content=broken, headers=node.headers)
        assert response.status_code == 422, response.text  # BadRequest
        assert "arrays:" in response.json()["detail"]
        assert str(SECRET)[:6] not in response.text
    with world.app.state.sessionmaker() as session:
        assert session.get(Run, run_id).status == "claimed"  # nothing changed
    response = world.api.post(url, content=body, headers=node.headers)
    assert response.status_code == 200, response.text
    with world.app.state.sessionmaker() as session:
        run = session.get(Run, run_id)
        assert run.output["extra"] == {"$array": "output.extra"}
        assert run.output_blob == hashlib.sha256(decode_body(body)[1] or b"").hexdigest()
        payload = payload_of(run, world.app.state.settings)
        assert payload is not None
        np.testing.assert_array_equal(payload["extra"], extra)
        bodies = [e.body for e in session.scalars(select(LedgerEntry))]
        assert any(hashlib.sha256(body).hexdigest() in text for text in bodies)  # exact bytes
