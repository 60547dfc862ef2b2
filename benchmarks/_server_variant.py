"""One HTTP server set-up for benchmarks/server_load.py, serving the Heimdex app from the
environment (HEIMDEX_*) on 127.0.0.1.

    python benchmarks/_server_variant.py VARIANT PORT

- ``guarded``: what `heimdex serve` runs (uvicorn, uvloop, httptools with Heimdex's limits);
- ``httptools``: what `heimdex serve` ran before (uvicorn's defaults: uvloop, httptools);
- ``h11``: uvicorn's pure-Python parser, with its header cap set;
- ``granian``, ``hypercorn``: when installed (they are not Heimdex dependencies).
"""

from __future__ import annotations

import asyncio
import sys

from heimdex.bootstrap import preflight
from heimdex.entrypoints.cli import main as heimdex_main
from heimdex.entrypoints.http.app import create_app
from heimdex.logs import configure_logging
from heimdex.settings import load_settings


def run(variant: str, port: int) -> None:
    if variant == "guarded":
        sys.exit(heimdex_main(["serve", "--host", "127.0.0.1", "--port", str(port)]))
    settings = load_settings()
    configure_logging(settings.log.level, settings.log.format)
    asyncio.run(preflight(settings))
    if variant in ("httptools", "h11"):
        import uvicorn

        uvicorn.run(
            create_app(settings=settings, warm_decoders=True),
            host="127.0.0.1",
            port=port,
            http=variant,
            h11_max_incomplete_event_size=65536,
            log_config=None,
            access_log=False,
        )
    elif variant == "granian":
        from granian import Granian

        Granian(
            "heimdex.entrypoints.http.app:create_app_from_environment",
            factory=True,
            address="127.0.0.1",
            port=port,
            interface="asgi",
            loop="uvloop",
            workers=1,
            log_enabled=False,
        ).serve()
    elif variant == "hypercorn":
        import uvloop
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.accesslog = None
        uvloop.run(serve(create_app(settings=settings, warm_decoders=True), config))
    else:
        raise SystemExit(f"unknown variant {variant!r}")


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]))
