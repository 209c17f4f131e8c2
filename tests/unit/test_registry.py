"""The algorithm registry: every listed name imports, is the algorithm of that name, and
is loaded once; an unknown name is refused naming the known ones, and importing the
registry imports no algorithm (a process pays only for the algorithms it runs)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medfed.algorithms.base import Algorithm
from medfed.algorithms.registry import HUB_CONTEXT, algorithm_names, get_algorithm
from medfed.common.errors import BadRequest


@pytest.mark.parametrize("name", algorithm_names())
def test_every_entry_is_the_algorithm_of_its_name(name: str) -> None:
    algorithm = get_algorithm(name)
    assert isinstance(algorithm, Algorithm)
    assert algorithm.name == name
    assert get_algorithm(name) is algorithm  # loaded once


def test_an_unknown_name_is_refused_with_the_known_ones() -> None:
    with pytest.raises(BadRequest, match=r"unknown algorithm 'nope'.*cox.*glm"):
        get_algorithm("nope")
    with pytest.raises(BadRequest, match="unknown algorithm"):
        get_algorithm(None)  # type: ignore[arg-type]


def test_importing_the_registry_imports_no_algorithm() -> None:
    code = (
        "import sys; import medfed.algorithms.registry as r; "
        "print(sorted(m for m in sys.modules if m.startswith('medfed.algorithms.') "
        "and m.count('.') >= 3))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    code = "import medfed.algorithms.registry as r; r.get_algorithm('count'); import sys; " + (
        "print('scipy.stats' in sys.modules, 'medfed.algorithms.survival.cox' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout


def test_the_hub_context_set_is_exactly_the_algorithms_that_use_it() -> None:
    using = {name for name in algorithm_names() if get_algorithm(name).uses_hub_context}
    assert using == HUB_CONTEXT
