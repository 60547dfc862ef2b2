"""The reference for benchmarks/upload.py: a bare Litestar endpoint that streams a request body
into a file, hashing it (sha256) as it goes, and answers the sha256 — served exactly as
`heimdex serve` serves (``heimdex.entrypoints.http.server.serve``: uvicorn, uvloop, httptools,
the same connection limits).

    python benchmarks/_bare_upload_app.py DIRECTORY PORT

No auth, no database, no thread hops: what is left of an upload once Heimdex's own work is taken
away. The file is written with fsync, as Heimdex stores an upload.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, put

from heimdex.entrypoints.http.server import ConnectionLimits, serve

DIRECTORY = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")


@put("/bare/{name:str}", request_max_body_size=None)
async def bare(name: str, request: Request[Any, Any, Any]) -> dict[str, Any]:
    digest = hashlib.sha256()
    size = 0
    with (DIRECTORY / name).open("wb") as handle:
        async for chunk in request.stream():
            digest.update(chunk)
            handle.write(chunk)
            size += len(chunk)
        handle.flush()
        os.fsync(handle.fileno())
    return {"size_bytes": size, "sha256": digest.hexdigest()}


app = Litestar(route_handlers=[bare], openapi_config=None)

if __name__ == "__main__":
    serve(
        app,
        host="127.0.0.1",
        port=int(sys.argv[2]),
        limits=ConnectionLimits(
            max_header_bytes=65_536,
            header_timeout_seconds=10.0,
            keep_alive_seconds=5.0,
            max_connections=4096,
        ),
    )
