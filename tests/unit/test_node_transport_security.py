"""The node refuses a plain-http hub off loopback and warns about loose file modes.

``node.toml`` is read by the real :func:`load_config`; the mode check runs on real files.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from medfed.common.errors import BadRequest
from medfed.node.config import load_config, warn_loose_modes


def _write(folder: Path, hub_url: str, extra: str = "") -> Path:
    path = folder / "node.toml"
    path.write_text(f'hub_url = "{hub_url}"\nsecret_file = "node.secret"\n{extra}')
    return path


@pytest.mark.parametrize("url", ["http://hub.example.org", "http://10.0.0.5:8000", "http://hub"])
def test_a_plain_http_hub_off_loopback_is_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(BadRequest) as refused:
        load_config(_write(tmp_path, url))
    assert "hub_url" in refused.value.message and "https" in refused.value.message


@pytest.mark.parametrize(
    "url",
    [
        "https://hub.example.org",
        "http://127.0.0.1:8000",
        "http://localhost:8000",
        "http://[::1]:8000",
    ],
)
def test_https_and_loopback_hubs_are_accepted(tmp_path: Path, url: str) -> None:
    assert load_config(_write(tmp_path, url)).hub_url == url


def test_insecure_true_allows_plain_http_on_purpose(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, "http://hub.test.lan", "insecure = true\n"))
    assert config.insecure is True


def test_the_node_warns_when_its_secret_or_data_are_readable_by_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "node.secret"
    secret.write_text("mfn_x\n")
    data = tmp_path / "var" / "node"
    data.mkdir(parents=True)
    (data / "runs.jsonl").write_text("{}\n")
    config = load_config(_write(tmp_path, "http://127.0.0.1:8000", 'data_dir = "var/node"\n'))
    os.chmod(secret, 0o644)
    os.chmod(data, 0o755)
    os.chmod(data / "runs.jsonl", 0o640)
    with caplog.at_level(logging.WARNING, logger="medfed.node.config"):
        found = warn_loose_modes(config)
    assert len(found) == 3 and all("chmod go-rwx" in f for f in found)
    assert str(secret) in caplog.text and "mode 644" in caplog.text

    os.chmod(secret, 0o600)
    os.chmod(data, 0o700)
    os.chmod(data / "runs.jsonl", 0o600)
    assert warn_loose_modes(config) == []
