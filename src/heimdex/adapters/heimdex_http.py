"""The ``IngestTarget`` port over HTTP (httpx): any Heimdex, given its URL and a token.

The upload goes exactly where and how the upload slot says (its method, URL and headers: the
server's own signed URL, or a presigned S3 URL whose signature covers those headers), streamed
from the file with its length declared, so memory stays flat whatever the file's size.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Self
from urllib.parse import urljoin

import httpx

from heimdex.application.bulk_ingest import (
    LIMIT_WAIT_SECONDS,
    IngestFailure,
    KnownAsset,
    UploadSlot,
)

_TIMEOUT = httpx.Timeout(300.0, connect=10.0)
#: how often --wait asks about a job
_POLL_SECONDS = 0.25
#: how long an unfinished resumable slot's termination may take (Ctrl-C waits for it)
_TERMINATE_SECONDS = 5.0


class HttpIngestTarget:
    """A Heimdex at ``api_url``, as the organisation of ``token``."""

    def __init__(self, api_url: str, token: str, *, connections: int = 8) -> None:
        self._base = api_url.rstrip("/") + "/"
        self._token = token
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        tls = httpx.create_ssl_context()  # loading the CA bundle once costs tens of ms
        self._api = httpx.AsyncClient(
            base_url=self._base,
            headers={"Authorization": f"Bearer {token}"},
            timeout=_TIMEOUT,
            limits=limits,
            verify=tls,
        )
        # Upload URLs carry their own authority (a signature); no bearer token goes with them.
        self._uploads = httpx.AsyncClient(timeout=_TIMEOUT, limits=limits, verify=tls)

    async def __aenter__(self) -> Self:
        # One question before any file: a wrong URL or token is then one line, not the same
        # failure once for every file of the folder.
        try:
            await self._call("GET", "v1/assets", params={"limit": 1})
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._api.aclose()
        await self._uploads.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API request. A 429 (the organisation's rate limit, a probe or job quota) means
        nothing was done: wait as its ``Retry-After`` says and ask again, for up to
        ``LIMIT_WAIT_SECONDS`` in all — a folder goes past a rate limit within seconds, and
        ending each file at its first 429 ended them all."""
        waited = 0.0
        while True:
            try:
                response = await self._api.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                raise IngestFailure("unreachable", f"{self._base}: {exc}") from None
            pause = _retry_after(response)
            if response.status_code != 429 or waited + pause > LIMIT_WAIT_SECONDS:
                _raise_for_problem(response)
                return response
            await asyncio.sleep(pause)
            waited += pause

    async def find_asset(self, sha256: str) -> KnownAsset | None:
        response = await self._call("GET", "v1/assets", params={"sha256": sha256, "limit": 1})
        items = response.json()["items"]
        if not items:
            return None
        # "committed": no sidecar job was ever asked for (a request makes it "processing").
        return KnownAsset(
            asset_id=str(items[0]["asset_id"]), needs_sidecar=items[0]["status"] == "committed"
        )

    async def init_upload(
        self, name: str, size: int, content_type: str, sha256: str, *, resumable: bool = False
    ) -> UploadSlot:
        body: dict[str, object] = {
            "source_name": name,
            "content_length": size,
            "content_type": content_type,
            "sha256": sha256,
        }
        if resumable:
            body["resumable"] = True
        answer = (await self._call("POST", "v1/ingest/init", json=body)).json()
        return UploadSlot(
            upload_id=answer["upload_id"],
            url=urljoin(self._base, answer["upload_url"]),
            method=answer["method"],
            headers=dict(answer["headers"]),
            resumable=resumable,
        )

    async def upload(self, slot: UploadSlot, size: int, chunks: AsyncIterator[bytes]) -> None:
        headers = dict(slot.headers)
        if not any(k.lower() == "content-length" for k in headers):
            headers["Content-Length"] = str(size)  # never chunked: S3 refuses it
        if slot.resumable:  # tus: the whole file as one PATCH at offset 0, with our token
            headers |= {"Upload-Offset": "0", "Authorization": f"Bearer {self._token}"}
        try:
            response = await self._uploads.request(
                slot.method, slot.url, headers=headers, content=chunks
            )
            _raise_for_problem(response)
        except BaseException as exc:
            if slot.resumable:
                # After Ctrl-C too: the run's cancellation reaches this task once, so this
                # request still goes.
                await self._terminate(slot)
            if isinstance(exc, httpx.HTTPError):
                raise IngestFailure("upload_failed", f"{exc}") from None
            raise

    async def _terminate(self, slot: UploadSlot) -> None:
        """tus termination of a resumable slot, at best effort: the slot and its bytes go. The
        server may not have ended the PATCH we cut off yet (409 ``upload_in_progress``): then
        ask again, a moment later."""
        headers = {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {self._token}"}
        with contextlib.suppress(httpx.HTTPError, TimeoutError):
            async with asyncio.timeout(_TERMINATE_SECONDS):
                while True:
                    response = await self._uploads.delete(slot.url, headers=headers)
                    if _problem_code(response) != "upload_in_progress":
                        return
                    await asyncio.sleep(0.1)

    async def commit(self, upload_id: str) -> str:
        answer = await self._call("POST", "v1/ingest/commit", json={"upload_id": upload_id})
        return str(answer.json()["asset_id"])

    async def request_sidecar(self, asset_id: str) -> str:
        answer = await self._call("POST", f"v1/assets/{asset_id}/sidecar", json={})
        return str(answer.json()["job_id"])

    async def wait_for_job(self, job_id: str) -> str | None:
        while True:
            job = (await self._call("GET", f"v1/jobs/{job_id}")).json()
            if job["status"] == "succeeded":
                return None
            if job["status"] == "failed":
                error = job.get("error") or {}
                return str(error.get("code") or "job_failed")
            await asyncio.sleep(_POLL_SECONDS)


def _retry_after(response: httpx.Response) -> float:
    """The seconds ``Retry-After`` asks for (whole seconds, as Heimdex sends it), at least 1."""
    value = response.headers.get("Retry-After", "")
    return float(max(1, int(value))) if value.isascii() and value.isdigit() else 1.0


def _problem_code(response: httpx.Response) -> str | None:
    """An error answer's problem ``code``, if it has one."""
    if response.status_code < 400:
        return None
    try:
        problem = response.json()
    except ValueError:
        return None
    return str(problem.get("code")) if isinstance(problem, dict) else None


def _raise_for_problem(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    code, detail = f"http_{response.status_code}", response.reason_phrase
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if isinstance(problem, dict):
        code = str(problem.get("code") or code)
        detail = str(problem.get("detail") or problem.get("title") or detail)
    elif "<Code>" in response.text:  # S3's XML error
        code = "storage_" + response.text.split("<Code>", 1)[1].split("</Code>", 1)[0]
    raise IngestFailure(code, detail)
