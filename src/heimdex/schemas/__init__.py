"""Published JSON Schemas of Heimdex's documents, shipped inside the package.

The files are read through ``importlib.resources`` so they are found the same way from a source
tree, an installed wheel or a zip import.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Final

SCHEMA_MEDIA_TYPE: Final = "application/schema+json"
"""The media type to serve a schema with."""

SIDECAR_V1_SCHEMA_ID: Final = "https://heimdex.dev/schemas/sidecar/v1"
"""The ``$id`` of the sidecar v1 schema."""


@cache  # a packaged file never changes while the process runs
def sidecar_schema_v1() -> bytes:
    """The JSON Schema (draft 2020-12) of the sidecar v1 document, as the file's bytes."""
    return files(__name__).joinpath("sidecar-v1.schema.json").read_bytes()


WEBHOOK_EVENTS_V1_SCHEMA_ID: Final = "https://heimdex.dev/schemas/webhook-events/v1"
"""The ``$id`` of the webhook events v1 schema."""


@cache
def webhook_events_schema_v1() -> bytes:
    """The JSON Schema (draft 2020-12) of every webhook body, one branch per event type."""
    return files(__name__).joinpath("webhook-events-v1.schema.json").read_bytes()
