"""The README is the front door: short, its links resolve, and its walkthrough runs as pasted
against `heimdex serve` on the embedded default."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from tests.fixtures.processes import SECRET, free_port, wait_until
from tests.requirements import require_binary

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def walkthrough_blocks() -> list[str]:
    """The ``sh`` blocks of the README's *Walkthrough*, in order."""
    section = README.split("\n## Walkthrough\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```sh\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)


def test_the_readme_is_a_short_front_door() -> None:
    assert len(README.splitlines()) <= 250
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), f"README links to a missing {target}"
    # The walkthrough sets every variable it uses from an answer: no placeholder to edit.
    for block in walkthrough_blocks():
        assert "…" not in block, block


def test_the_walkthrough_runs_as_pasted(tmp_path: Path) -> None:
    for tool in ("curl", "jq", "ffmpeg", "bash"):
        require_binary(tool)
    blocks = walkthrough_blocks()
    assert len(blocks) >= 7
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEIMDEX_")}
    env.update(HEIMDEX_JWT_SECRET=SECRET, HEIMDEX_API_URL=f"http://127.0.0.1:{port}")
    # A checkout as a newcomer has it: the blocks call `.venv/bin/heimdex`.
    (tmp_path / ".venv").symlink_to(sys.prefix)
    with (tmp_path / "serve.log").open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "heimdex", "serve", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5).is_success
            except httpx.TransportError:
                return False

        wait_until(healthy, 60, "heimdex serve did not answer /health")
        script = "set -euo pipefail\n" + "\n".join(blocks)
        result = subprocess.run(
            ["bash", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    out = result.stdout
    assert result.returncode == 0, result.stderr + out[-3000:]
    assert '"status":"ok"' in out
    assert re.search(r'"status": "committed"', out), out[-3000:]
    assert re.search(r"job [0-9a-f-]{36}: succeeded", out), out[-3000:]
    assert '"schema": "heimdex.sidecar/v1"' in out
    assert "200 image/jpeg" in out
    assert re.search(r"WEBVTT\n\n00:00:00\.000 --> 00:00:01\.000\nhttp\S+#xywh=0,0,160,90", out)
    assert '"chosen_by":"auto"' in out
    assert out.count("200 image/jpeg") == 3  # a thumbnail, the sprite sheet, the chosen poster
    assert out.rstrip().endswith("204"), out[-500:]
    assert "null" not in re.findall(r'"asset_id": (\S+)', out)
