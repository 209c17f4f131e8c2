"""The order in which test files are handed to pytest-xdist's workers: slowest first.

``make test`` runs with ``--dist loadfile --no-loadscope-reorder``: each file goes whole
to one worker, in collection order, as workers become free. (Without the second option
xdist hands out the files with the most tests first: the many-case API and unit files,
so the one-test end-to-end files, each minutes long, ran last, alone, while the other
workers idled.) Handing out the longest files first (the longest-job-first
rule) leaves only short files for the tail.

``SLOWEST`` lists the files that took longest in a full run (``pytest --durations=0``,
summed per file), longest first; any other file follows by folder — real-process folders
first — and then in its usual order. The list only orders; a file missing from it, or a
name in it that no longer exists, changes nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

SLOWEST = (
    "tests/e2e/test_faults_outage.py",
    "tests/e2e/test_learning_e2e.py",
    "tests/packaging/test_extras.py",
    "tests/e2e/test_cli.py",
    "tests/api/test_input_validation.py",
    "tests/api/test_authorization_matrix.py",
    "tests/e2e/test_faults.py",
    "tests/api/test_catalogue_lifecycle.py",
    "tests/contract/test_hub_storage.py",
    "tests/e2e/test_readme_walkthrough.py",
    "tests/e2e/test_federated_stats.py",
    "tests/e2e/test_glm_e2e.py",
    "tests/e2e/test_two_hubs.py",
    "tests/web/test_result_pages.py",
    "tests/e2e/test_survival_e2e.py",
    "tests/unit/test_bigtable.py",
    "tests/e2e/test_ingest_cli.py",
    "tests/web/test_browser.py",
    "tests/e2e/test_faults_drift.py",
    "tests/web/test_pages.py",
    "tests/e2e/test_redteam.py",
    "tests/e2e/test_audit.py",
    "tests/e2e/test_cohorts_e2e.py",
    "tests/web/test_browser_results.py",
    "tests/web/test_validation_pages.py",
    "tests/e2e/test_optout_e2e.py",
    "tests/web/test_browser_cohorts.py",
    "tests/e2e/test_descriptives_e2e.py",
    "tests/e2e/test_sdk_submission_retry.py",
    "tests/e2e/test_steward_audit_e2e.py",
    "tests/e2e/test_catalogue_e2e.py",
    "tests/api/test_task_idempotency.py",
    "tests/web/test_browser_plans.py",
    "tests/e2e/test_sandbox_e2e.py",
    "tests/web/test_oidc_login.py",
    "tests/web/test_browser_airlock.py",
    "tests/web/test_browser_describe.py",
    "tests/e2e/test_entitlements_e2e.py",
)

FOLDERS = ("e2e", "web", "packaging", "contract", "api", "unit")


def file_rank(path: str) -> tuple[int, int]:
    """Sort key of a test file (its path relative to the repository root)."""
    if path in SLOWEST:
        return (0, SLOWEST.index(path))
    parts = path.split("/")
    folder = parts[1] if len(parts) > 2 else ""
    return (1, FOLDERS.index(folder) if folder in FOLDERS else len(FOLDERS))


def slowest_files_first(items: Sequence[pytest.Item]) -> list[pytest.Item]:
    """The items with each file's tests together, files in ``file_rank`` order (stable)."""
    first_seen: dict[str, int] = {}
    for index, item in enumerate(items):
        first_seen.setdefault(item.nodeid.split("::")[0], index)

    def key(pair: tuple[int, pytest.Item]) -> tuple[tuple[int, int], int, int]:
        index, item = pair
        path = item.nodeid.split("::")[0]
        return (file_rank(path), first_seen[path], index)

    return [item for _, item in sorted(enumerate(items), key=key)]
