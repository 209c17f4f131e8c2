"""``medfed.common.extras``: which extra brings a module, and the one line that says so."""

from __future__ import annotations

import pytest

from medfed.common.errors import MedfedError
from medfed.common.extras import EXTRAS, MissingExtra, extra_for, hint, needed, require


def test_the_hint_is_one_pip_line() -> None:
    assert hint("node") == "this needs medfed[node]: pip install 'medfed[node]'"
    error = MissingExtra("postgres", "psycopg")
    assert isinstance(error, MedfedError)
    assert error.message == (
        "this needs medfed[postgres]: pip install 'medfed[postgres]' (no module 'psycopg')"
    )


def test_each_module_belongs_to_the_extra_named_for_its_people() -> None:
    assert extra_for("pydicom.dataset") == "node"
    assert extra_for("duckdb") == "node"  # the demo brings it too; a node names "node"
    assert extra_for("torch.nn") == "learn"
    assert extra_for("psycopg") == "postgres"
    assert extra_for("lifelines.datasets") == "demo"
    assert extra_for("numpy") is None
    assert set(EXTRAS) == {"node", "learn", "postgres", "demo"}


def test_require_names_the_first_missing_module() -> None:
    require("node", "json")  # present: nothing happens
    with pytest.raises(MissingExtra) as missing:
        require("learn", "json", "no_such_module_medfed_test")
    assert missing.value.extra == "learn" and missing.value.module == "no_such_module_medfed_test"


def test_needed_translates_only_an_extras_module() -> None:
    with pytest.raises(MissingExtra, match=r"medfed\[demo\]") as missing, needed("demo"):
        raise ModuleNotFoundError("No module named 'duckdb'", name="duckdb")
    assert missing.value.module == "duckdb"  # the preferred extra brings it as well
    with pytest.raises(MissingExtra, match=r"medfed\[learn\]"), needed("node"):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")
    with pytest.raises(ModuleNotFoundError), needed("node"):
        raise ModuleNotFoundError("No module named 'numpy'", name="numpy")
