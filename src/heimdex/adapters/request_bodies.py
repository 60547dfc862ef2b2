"""``RequestBodyFiles``: request bodies the API spools to disk while it reads them (the legacy
``POST /metadata`` upload, probed from the file), and the sweep of those a killed process left.

A spooled body is deleted when its request ends; only a process killed mid-request leaves one,
and the scratch sweep removes it once nothing has written to it for the scratch age.
"""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path
from typing import IO

from heimdex.adapters.offload import run_blocking
from heimdex.adapters.scratch_files import sweep_old_files
from heimdex.domain.ports import ScratchFile

PREFIX = "body-"
SUFFIX = ".upload"


class RequestBodyFiles:
    """Named temporary files in ``directory`` (shared with other scratch: only this class's
    names are ever swept)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def spool(self) -> IO[bytes]:
        """A new named file, deleted when closed; blocking (call it off the event loop)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        return tempfile.NamedTemporaryFile(dir=self.directory, prefix=PREFIX, suffix=SUFFIX)

    async def sweep_scratch(self, modified_before: datetime) -> list[ScratchFile]:
        return await run_blocking(
            sweep_old_files,
            self.directory,
            modified_before.timestamp(),
            prefix=PREFIX,
            suffix=SUFFIX,
        )
