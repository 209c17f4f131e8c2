"""Models in safely, consent, subgroups under the gate, training rows left out, errors.

* :func:`check_model` refuses malformed graphs, inputs that do not match the declared
  features, custom operators, external data and files over the limit — without running
  anything — and describes a good model (skl2onnx, torch.onnx).
* A shared study counts only the sites whose steward consented; a site that does not
  share its own results shows none in the result.
* A subgroup variable with a level too small is withheld whole at that site.
* A model derived from a registry training leaves that training's rows out at the node.
* A model that fails or gives scores outside [0, 1] is refused with a message that holds
  no input value, in process and in the bubblewrap sandbox.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest
from lifelines.datasets import load_gbsg2
from onnx import TensorProto, helper

from medfed.algorithms.learning.holdout import HoldoutRule, split
from medfed.algorithms.validation.model_check import OutputSpec, check_model
from medfed.algorithms.validation.params import ModelRef
from medfed.algorithms.validation.scoring import Consent, InProcessScorer, ModelFailed
from medfed.common.errors import BadRequest
from medfed.node.executors.onnx_consent import ConsentStore
from medfed.node.executors.onnx_process import sanitize
from medfed.node.executors.onnx_services import score_in_sandbox
from medfed.node.executors.sandbox import SandboxLimits, bwrap_usable
from medfed.node.stores.tables import TableStore
from medfed.testing.local import run_locally
from validationtools import identity_onnx, model_ref, reshape_onnx, sha, sklearn_onnx

FEATURES = ["age", "tsize", "pnodes", "progrec", "estrec", "hormone"]
LIMIT = 10 * 1024**2


@pytest.fixture(scope="module")
def gbsg2() -> tuple[pd.DataFrame, bytes]:
    frame = load_gbsg2()
    frame = frame.assign(hormone=(frame.horTh == "yes").astype(int))
    return frame, sklearn_onnx(frame, FEATURES, "cens")


def test_a_good_model_is_described(gbsg2: tuple[pd.DataFrame, bytes]) -> None:
    _, data = gbsg2
    d = check_model(
        data, features=FEATURES, output=OutputSpec(name="probabilities"), max_bytes=LIMIT
    )
    assert (d.sha256, d.input, d.classes, d.features) == (sha(data), "input", 2, FEATURES)
    assert d.opsets[""] if "" in d.opsets else d.opsets["ai.onnx"] == 17


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("garbage", "not an ONNX model"),
        ("features", "takes 6 features but 5 were declared"),
        ("output", "has no output 'score'"),
        ("column", "column 2 does not exist"),
        ("large", "larger than this hub's limit"),
        ("custom", "outside the standard domains"),
        ("malformed", "malformed"),
        ("external", "external data"),
    ],
)
def test_bad_models_are_refused(gbsg2: tuple[pd.DataFrame, bytes], case: str, message: str) -> None:
    _, data = gbsg2
    features, output, limit = FEATURES, OutputSpec(name="probabilities"), LIMIT
    if case == "garbage":
        data = b"\x08\x07not a protobuf at all" * 10
    elif case == "features":
        features = FEATURES[:5]
    elif case == "output":
        output = OutputSpec(name="score")
    elif case == "column":
        output = OutputSpec(name="probabilities", positive_index=2)
    elif case == "large":
        limit = len(data) - 1
    elif case == "custom":
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6])
        y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", 2])
        node = helper.make_node("Exfiltrate", ["x"], ["probabilities"], domain="com.evil")
        graph = helper.make_graph([node], "g", [x], [y])
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.evil", 1)],
        )
        data = model.SerializeToString()
    elif case == "malformed":
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6])
        y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", 2])
        node = helper.make_node("Relu", ["nowhere"], ["probabilities"])  # undefined input
        graph = helper.make_graph([node], "g", [x], [y])
        data = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", 17)]
        ).SerializeToString()
    elif case == "external":
        model = onnx.load_model_from_string(identity_onnx())
        features, output = ["score"], OutputSpec(name="score", positive_index=0)
        tensor = model.graph.initializer[0]
        tensor.data_location = TensorProto.EXTERNAL
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", "/etc/passwd"
        data = model.SerializeToString()
    with pytest.raises(BadRequest, match=message):
        check_model(data, features=features, output=output, max_bytes=limit)


def _params(data: bytes, **extra: Any) -> dict[str, Any]:
    return {
        "model": model_ref(data, FEATURES, "probabilities", 1),
        "outcome": {"column": "cens", "positive": 1},
        **extra,
    }


def _halves(frame: pd.DataFrame) -> list[TableStore]:
    return [
        TableStore(frame[frame.index % 3 == i].reset_index(drop=True), name=f"s{i}")
        for i in range(3)
    ]


def test_shared_study_counts_only_consenting_sites(gbsg2: tuple[pd.DataFrame, bytes]) -> None:
    frame, data = gbsg2
    stores = _halves(frame)
    consents = {7: Consent(take_part=True, share_site=True)}
    scorers = [
        InProcessScorer({sha(data): data}, consents, 0),
        InProcessScorer({sha(data): data}, {7: Consent(take_part=True, share_site=False)}, 1),
        InProcessScorer({sha(data): data}, {}, 2),  # this steward said nothing
    ]
    withheld: list[str] = []
    shared = run_locally(
        "validation",
        _params(data, mode="shared", study_id=7),
        stores,
        services=lambda i: scorers[i],
        withheld=withheld,
    )
    assert shared["contributing"] == [0, 1]
    assert any("has not consented" in w for w in withheld)
    only = run_locally(
        "validation",
        _params(data),
        stores[:2],
        services=lambda i: InProcessScorer({sha(data): data}, dataset=i),
    )
    assert shared["overall"] == only["overall"]
    assert shared["calibration_slope"] == only["calibration_slope"]
    sites = {s["dataset_id"]: s for s in shared["sites"]}
    assert sites[0]["shared"] and sites[0]["summary"]["n"] == only["sites"][0]["summary"]["n"]
    assert not sites[1]["shared"] and sites[1]["summary"] is None
    assert sites[2]["status"] == "withheld" and sites[2]["summary"] is None


def test_a_small_subgroup_is_withheld_whole(gbsg2: tuple[pd.DataFrame, bytes]) -> None:
    frame, data = gbsg2
    frame = frame.assign(rare=np.where(frame.index % 100 == 0, "rare", "common"))
    result = run_locally(
        "validation",
        _params(
            data,
            subgroups=[{"name": "rare", "column": "rare"}, {"name": "meno", "column": "menostat"}],
        ),
        _halves(frame),
        services=lambda i: InProcessScorer({sha(data): data}, dataset=i),
    )
    assert result["subgroups"]["rare"]["sites_withheld"] == 3
    assert result["subgroups"]["rare"]["levels"] == {}
    assert result["subgroups"]["meno"]["sites_reporting"]  # the other variable still shows


def test_training_rows_of_a_registry_model_are_left_out(gbsg2: tuple[pd.DataFrame, bytes]) -> None:
    frame, data = gbsg2
    stores = _halves(frame)
    rule = HoldoutRule(fraction=0.3, seed=4)
    exclude = {"dataset_ids": [1], "columns": [*FEATURES, "cens"], "holdout": rule.model_dump()}
    result = run_locally(
        "validation",
        _params(data, exclude_training=exclude),
        stores,
        services=lambda i: InProcessScorer({sha(data): data}, dataset=i),
    )
    _, held = split(np.arange(stores[1].row_count), rule)
    expected = stores[0].row_count + len(held) + stores[2].row_count
    assert result["overall"]["n"] == expected


def test_scores_outside_0_1_are_refused_without_values() -> None:
    frame = pd.DataFrame({"score": np.linspace(-3.0, 4.0, 60), "y": np.arange(60) % 2})
    data = identity_onnx()
    withheld: list[str] = []
    with pytest.raises(BadRequest):
        run_locally(
            "validation",
            {
                "model": model_ref(data, ["score"], "score", 0),
                "outcome": {"column": "y", "positive": 1},
            },
            [TableStore(frame)],
            services=lambda i: InProcessScorer({sha(data): data}, dataset=i),
            withheld=withheld,
        )
    assert withheld == ["the model gave a score outside [0, 1] (declare a probability output)"]


def test_sanitize_masks_numbers_but_keeps_shapes() -> None:
    line = sanitize("Got value 0.7315 and 1e-05 at index 3 for shape {95,30}\nsecond line")
    assert line == "Got value … and … at index 3 for shape {95,30}"


needs_bwrap = pytest.mark.skipif(bwrap_usable() is not None, reason="no bubblewrap sandbox here")


@needs_bwrap
def test_the_sandbox_scores_like_onnxruntime_and_hides_values(
    tmp_path: Path, gbsg2: tuple[pd.DataFrame, bytes]
) -> None:
    frame, data = gbsg2
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    ref = ModelRef.model_validate(model_ref(data, FEATURES, "probabilities", 1))
    x = frame[FEATURES].to_numpy(np.float32)[:50]
    limits = SandboxLimits(memory_mb=4096, cpu_seconds=120)
    got = score_in_sandbox(path, ref, x, root=tmp_path / "jobs", sandbox="bwrap", limits=limits)
    scorer = InProcessScorer({sha(data): data})
    assert np.array_equal(got, scorer.score(ref, x))
    bad = reshape_onnx(6)
    bad_path = tmp_path / "bad.onnx"
    bad_path.write_bytes(bad)
    bad_ref = ModelRef.model_validate(model_ref(bad, FEATURES, "score", 0))
    with pytest.raises(ModelFailed) as caught:
        score_in_sandbox(
            bad_path, bad_ref, x, root=tmp_path / "jobs", sandbox="bwrap", limits=limits
        )
    assert "the model failed at the node" in caught.value.message
    assert "reshape" in caught.value.message.lower()
    assert not any(f"{v:.3f}"[:5] in caught.value.message for v in x[0] if v % 1)


def test_consent_store_round_trip(tmp_path: Path) -> None:
    store = ConsentStore(tmp_path)
    assert store.get(3) is None
    store.give(3, share_site=True, by="steward-anna")
    assert store.get(3) == Consent(take_part=True, share_site=True)
    assert store.withdraw(3) and store.get(3) is None
    store.give(model="ab" * 32, share_site=False)  # every shared study of one model file
    assert store.get(4, model="ab" * 32) == Consent(take_part=True, share_site=False)
    assert store.get(4, model="cd" * 32) is None


class _Forgetful(InProcessScorer):
    """A node that lost its kept scores between rounds (restarted): it scores again."""

    def recall(self, key: str) -> Any:
        return None

    def for_dataset(self, dataset_id: int) -> _Forgetful:
        return _Forgetful(self.models, self.consents, dataset_id, _cache=self._cache)


def test_a_node_that_lost_its_scores_scores_again(gbsg2: tuple[pd.DataFrame, bytes]) -> None:
    frame, data = gbsg2
    kept = InProcessScorer({sha(data): data})
    lost = _Forgetful({sha(data): data})
    runs = [
        run_locally("validation", _params(data), _halves(frame), services=s.for_dataset)
        for s in (kept, lost)
    ]
    assert runs[0]["calibration_slope"] == runs[1]["calibration_slope"]
    assert runs[0]["overall"] == runs[1]["overall"]
