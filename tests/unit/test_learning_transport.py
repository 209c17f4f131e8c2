"""A 100 MB model through a real hub process: streamed up and down, never held whole."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

import httpx
import numpy as np
from safetensors.numpy import load_file, save_file

from medfed.hub.bootstrap import init_hub
from medfed.hub.config import HubSettings
from medfed.sdk.client import Client
from medfed.testing.processes import HubProcess


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def test_a_100_mb_model_round_trips_through_the_hub_streamed(tmp_path: Path) -> None:
    model = tmp_path / "model.safetensors"
    weights = np.random.default_rng(0).standard_normal(25_000_000, dtype=np.float32)
    save_file({"w": weights}, str(model))
    del weights
    assert model.stat().st_size > 100_000_000

    hub_dir = tmp_path / "hub"
    settings = HubSettings(data_dir=hub_dir, dev_mode=True)
    _, token = init_hub(settings, organization="Hub", username="admin", password="pw-12345678")
    hub = HubProcess(hub_dir)
    hub.start()
    try:
        admin = Client(hub.url, token)
        org = admin.organizations.create("Hospital")
        node = admin.nodes.create("node", organization_id=org.id)
        assert hub.process is not None
        before = _peak_rss_mb(hub.process.pid)

        sha = admin.learning.upload_weights(model)  # streamed from the file
        assert sha == _sha(model)
        stored = hub_dir / "blobs" / sha[:2] / sha
        assert stored.stat().st_size == model.stat().st_size

        back = tmp_path / "back.safetensors"
        with httpx.stream(
            "GET",
            f"{hub.url}/api/node/blobs/{sha}",
            headers={"Authorization": f"Bearer {node.secret}"},
            timeout=120,
        ) as response:
            assert response.status_code == 200
            with open(back, "wb") as handle:
                for block in response.iter_bytes(1 << 20):
                    handle.write(block)
        assert _sha(back) == sha
        assert load_file(str(back))["w"].shape == (25_000_000,)
        grown = _peak_rss_mb(hub.process.pid) - before
        print(f"hub peak RSS grew by {grown:.1f} MB for a {model.stat().st_size / 1e6:.0f} MB blob")
        assert grown < 50, f"the hub's peak memory grew by {grown:.0f} MB for a 100 MB body"

        wrong = httpx.put(
            f"{hub.url}/api/blobs",
            content=b"not the announced bytes",
            headers={"Authorization": f"Bearer {token}", "X-Content-SHA256": secrets.token_hex(32)},
        )
        assert wrong.status_code == 422
    finally:
        hub.stop()
