"""The reference for benchmarks/api_load.py: a bare Litestar endpoint served the way
`heimdex serve` serves (uvicorn, one process, uvloop + httptools, no access log).

    python benchmarks/_bare_app.py PORT

It answers a fixed JSON document about as large as a job, with no auth, no database and no
logging: what is left of a request once Heimdex's own work is taken away.
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn
from litestar import Litestar, get

DOCUMENT: dict[str, Any] = {
    "id": "00000000-0000-0000-0000-000000000000",
    "kind": "sidecar",
    "status": "succeeded",
    "progress": 1.0,
    "attempts": 1,
    "max_attempts": 3,
    "error": None,
    "created_at": "2026-11-24T00:00:00Z",
    "updated_at": "2026-11-24T00:00:01Z",
    "links": {"sidecar": "/v1/assets/x/sidecar", "thumbnails": "/v1/assets/x/thumbnails"},
}


@get("/bare/{item_id:str}", sync_to_thread=False)
def bare(item_id: str) -> dict[str, Any]:
    return {**DOCUMENT, "id": item_id}


app = Litestar(route_handlers=[bare], openapi_config=None)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_config=None, access_log=False)
