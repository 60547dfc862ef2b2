"""Fuzzing the HTTP API with schemathesis against the OpenAPI document the app itself serves.

The app runs in-process (ASGI) on the embedded default: SQLite, local storage, in-process jobs,
under a temporary data directory. Every operation in ``/schema/openapi.json`` is generated from
its schema — valid and invalid data — with a fixed seed (``derandomize``) and ``MAX_EXAMPLES``
examples per operation, and every response goes through all of schemathesis' default checks:
no 5xx, status codes, content types, headers and bodies as declared, invalid data rejected, valid
data accepted, auth not ignored, a missing required header refused, unsupported methods answered
405, use-after-free and resource availability (stateful). Two more checks of our own:

- ``no_org_b_ids``: every answer to organisation A is searched (status line aside: body and
  headers) for the ids of organisation B's upload, asset and job, made before the run through
  the real API, and for B's name. An id that the request itself carried may be echoed back (a
  problem's ``instance`` is the request path); anything else is a leak. ``map_path_parameters``
  and ``map_body`` hooks aim a share of the generated requests at B's ids, so the check is
  exercised on the answers that would leak if tenancy broke.
- problem responses are narrowed in the document to their status and codes, so the schema
  conformance check also proves every problem ``code`` a route answers is declared.

Stateful runs follow the links the served document carries: init → PUT upload → commit →
sidecar → job (and asset reads, probe, delete) with ``as_state_machine()``.

Auth: an ``@schema.auth()`` provider sends an org-A bearer token with the ``admin`` scope on
every operation that declares security; the PUT upload takes either that token or the URL's
signature (declared as ``signedUrl``), so it is fuzzed with the token.

Exclusions and loosened expectations, each for a reason:

- ``GET /v1/files/{key}`` answers only a URL the server signed; a fuzzer cannot forge the HMAC,
  so only its refusals (401/404/410/422) are exercised — its 200 is covered by
  ``tests/integration/test_http_sidecar.py``.
- ``positive_data_acceptance`` also accepts the statuses a schema-valid request gets for
  reasons JSON Schema cannot state: 400 for a ``cursor`` this API did not issue (opaque) or
  an upload body whose length is not the declared one; 410 for an expired slot; 413/415 for a
  size over ``HEIMDEX_MAX_UPLOAD_SIZE_BYTES`` or a type that is not video/audio; 422 for bytes
  that are not media, a ``source_uri`` that is not the caller's, or an ``Idempotency-Key``
  reused with another body.
- ``GET /v1/admin/health`` may answer 503 with its report (documented) when a dependency check
  fails; here the thumbnailer's decode pool can report itself closed, so ``not_a_server_error``
  accepts that one 503 for this one route.
- ``POST /metadata`` (legacy) is off in this app (``HEIMDEX_ENABLE_LEGACY=false``): it answers
  404 to everything, which is what is checked.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import hypothesis
import jwt
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.python import asgi

from heimdex.entrypoints.http.app import create_app
from heimdex.settings import Settings

SECRET = "fuzz-secret-that-is-at-least-32-bytes-long"
ORG_A = "fuzz-org-a"
ORG_B = "fuzz-org-b"
MAX_EXAMPLES = 50
SEED = 20261124

# One app for the module: its data directory lives as long as the module's tests.
DATA_DIR = Path(tempfile.mkdtemp(prefix="heimdex-fuzz-"))
APP = create_app(
    settings=Settings(
        data_dir=DATA_DIR / "data",
        jwt_secret=SECRET,
        # Small enough that the fuzzer reaches the limit, large enough for the fixture clip.
        max_upload_size_bytes=4 * 1024 * 1024,
    )
)

# Answers to schema-valid data that JSON Schema cannot rule out (see the module docstring).
_POSITIVE = ["2xx", "3xx", "401", "403", "404", "409", "429"]
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        # The document's own links drive the stateful runs. Schemathesis' dependency analysis
        # reads `org_id` in a body as a reference to an "Org" resource nothing creates, and so
        # would never start a scenario at init or commit.
        "phases": {"stateful": {"inference": {"algorithms": []}}},
        "operations": [
            {
                "include-name": name,
                "checks": {"positive_data_acceptance": {"expected-statuses": _POSITIVE + extra}},
            }
            for name, extra in [
                ("GET /v1/assets", ["400"]),
                ("POST /v1/ingest/init", ["413", "415", "422"]),
                ("POST /v1/ingest/commit", ["400", "410", "422"]),
                ("POST /v1/ingest/probe", ["400", "422"]),
                ("POST /v1/assets/{asset_id}/sidecar", ["422"]),
                ("DELETE /v1/assets/{asset_id}", ["422"]),
                ("PUT /v1/uploads/{upload_id}", ["400", "410", "413", "422"]),
                ("GET /v1/files/{key}", ["410", "422"]),
            ]
        ]
        + [
            {
                # 503 with the report is this route's documented answer when a dependency check
                # fails; the fuzz app's decode pool is not what is under test here.
                "include-name": "GET /v1/admin/health",
                "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "4xx", "503"]}},
            }
        ],
    }
)


async def _served_openapi() -> dict[str, Any]:
    """The document exactly as the app serves it (no lifespan needed to read it)."""
    transport = httpx.ASGITransport(app=APP)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/schema/openapi.json")
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document


schema = schemathesis.openapi.from_dict(anyio.run(_served_openapi), config=CONFIG)
schema.app = APP
schema.location = "/schema/openapi.json"


def token(org: str, *scopes: str) -> str:
    payload: dict[str, Any] = {"org_id": org}
    if scopes:
        payload["scopes"] = list(scopes)
    return jwt.encode(payload, SECRET, algorithm="HS256")


@schema.auth()
class OrgAToken:
    """Organisation A, with the admin scope, on every operation that declares security."""

    def get(self, case: Any, context: Any) -> str:
        return token(ORG_A, "admin")

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


# Organisation B's ids, filled by the org_b fixture before any generated request.
ORG_B_IDS: dict[str, str] = {}
# A real clip, so stateful scenarios can get past the upload to commit, sidecar and job.
CLIP: dict[str, bytes] = {}


@pytest.fixture(scope="module", autouse=True)
def org_b(h264_aac_mp4: Path) -> Iterator[dict[str, str]]:
    """Organisation B's upload, asset and finished sidecar job, through the real API."""
    headers = {"Authorization": f"Bearer {token(ORG_B)}"}
    with asgi.get_client(APP) as client:
        init = client.post(
            "/v1/ingest/init",
            headers=headers,
            json={
                "source_name": "b.mp4",
                "content_type": "video/mp4",
                "content_length": h264_aac_mp4.stat().st_size,
            },
        )
        assert init.status_code == 201, init.text
        slot = init.json()
        put = client.put(
            slot["upload_url"], data=h264_aac_mp4.read_bytes(), headers=slot["headers"]
        )
        assert put.status_code == 200, put.text
        commit = client.post(
            "/v1/ingest/commit", headers=headers, json={"upload_id": slot["upload_id"]}
        )
        assert commit.status_code == 201, commit.text
        asset_id = commit.json()["asset_id"]
        sidecar = client.post(f"/v1/assets/{asset_id}/sidecar", headers=headers, json={})
        assert sidecar.status_code == 202, sidecar.text
        job_id = sidecar.json()["job_id"]
        deadline = time.monotonic() + 60
        while (job := client.get(f"/v1/jobs/{job_id}", headers=headers).json())["status"] not in (
            "succeeded",
            "failed",
        ):
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
        assert job["status"] == "succeeded", job
        # A second slot that is never committed.
        pending = client.post(
            "/v1/ingest/init",
            headers=headers,
            json={"source_name": "c.mp4", "content_type": "video/mp4", "content_length": 10},
        )
        assert pending.status_code == 201, pending.text
    CLIP["bytes"] = h264_aac_mp4.read_bytes()
    ORG_B_IDS.update(
        upload_id=slot["upload_id"],
        asset_id=asset_id,
        job_id=job_id,
        pending_upload_id=pending.json()["upload_id"],
    )
    yield dict(ORG_B_IDS)
    asgi.shutdown_lifespans()
    shutil.rmtree(DATA_DIR, ignore_errors=True)


def _one_in_four(value: Any) -> bool:
    """A stable choice (``hash`` of a str changes with every interpreter)."""
    return zlib.crc32(str(value).encode("utf-8", "surrogatepass")) % 4 == 0


def _b_value_for(name: str) -> str | None:
    return {
        "asset_id": ORG_B_IDS.get("asset_id"),
        "job_id": ORG_B_IDS.get("job_id"),
        "upload_id": ORG_B_IDS.get("pending_upload_id"),
    }.get(name)


@schema.hook
def map_path_parameters(context: Any, path_parameters: Any) -> Any:
    """Aim about one request in four at organisation B's resources."""
    if not isinstance(path_parameters, dict):
        return path_parameters
    for name in list(path_parameters):
        value = _b_value_for(name)
        if value is not None and _one_in_four(path_parameters[name]):
            path_parameters[name] = value
    return path_parameters


@schema.hook
def map_body(context: Any, body: Any) -> Any:
    """Aim about one body in four at B's resources; name the caller's own organisation in
    three of four bodies that carry an ``org_id`` (else nearly all would be 403
    ``org_mismatch`` and little would get past it)."""
    if isinstance(body, dict):
        if isinstance(body.get("org_id"), str) and not _one_in_four(body["org_id"]):
            body["org_id"] = ORG_A
        for name in ("upload_id", "asset_id"):
            value = _b_value_for(name)
            if name in body and value is not None and _one_in_four(body[name]):
                body[name] = value
    return body


def _sent(case: Any) -> str:
    return " ".join(str(part) for part in (case.path_parameters, case.query, case.body))


@schemathesis.check
def no_org_b_ids(ctx: Any, response: Any, case: Any) -> bool | None:
    """No answer to organisation A carries an id of organisation B it was not sent."""
    answer = response.text + " " + " ".join(f"{k}: {v}" for k, v in response.headers.items())
    sent = _sent(case)
    leaked = sorted(
        value for value in [*ORG_B_IDS.values(), ORG_B] if value in answer and value not in sent
    )
    if leaked:
        raise AssertionError(f"an answer to {ORG_A} names {ORG_B}'s {leaked}")
    return None


_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@schema.parametrize()
@_SETTINGS
def test_every_operation_conforms(case: Any) -> None:
    case.call_and_validate(additional_checks=[no_org_b_ids])


class Workflow(schema.as_state_machine()):  # type: ignore[misc]
    """Scenarios along the document's links. About one init in four declares the real clip
    (stable choice on the generated name), and a PUT into such a slot sends it, so scenarios
    reach commit → sidecar → job with real media, not only the refusals of random bytes."""

    rule_order_seed = SEED

    def setup(self) -> None:
        self.clip_slots: set[str] = set()

    def before_call(self, case: Any) -> None:
        label = case.operation.label
        if label == "POST /v1/ingest/init" and isinstance(case.body, dict):
            if _one_in_four(case.body.get("source_name")):
                case.body = {
                    "source_name": "clip.mp4",
                    "content_type": "video/mp4",
                    "content_length": len(CLIP["bytes"]),
                }
        elif (
            label == "PUT /v1/uploads/{upload_id}"
            and str((case.path_parameters or {}).get("upload_id")) in self.clip_slots
        ):
            case.body = CLIP["bytes"]

    def after_call(self, response: Any, case: Any) -> None:
        if (
            case.operation.label == "POST /v1/ingest/init"
            and response.status_code == 201
            and isinstance(case.body, dict)
            and case.body.get("source_name") == "clip.mp4"
        ):
            self.clip_slots.add(response.json()["upload_id"])

    def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
        super().validate_response(response, case, additional_checks=[no_org_b_ids], **kwargs)


def test_workflows_along_the_links(org_b: dict[str, str]) -> None:
    """Stateful scenarios with a fixed seed. Only the generate phase: the app's state outlives
    a scenario, so replaying one to shrink it would not see the same answers."""
    hypothesis.seed(SEED)(Workflow)
    Workflow.run(
        settings=settings(
            max_examples=MAX_EXAMPLES,
            stateful_step_count=8,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
    )


def test_org_b_resources_answer_404_to_org_a(org_b: dict[str, str]) -> None:
    """The fixture's ids are real, and organisation A cannot see them."""
    headers = {"Authorization": f"Bearer {token(ORG_A)}"}
    with asgi.get_client(APP) as client:
        answers = [
            client.get(f"/v1/assets/{org_b['asset_id']}", headers=headers),
            client.get(f"/v1/jobs/{org_b['job_id']}", headers=headers),
            client.get(f"/v1/assets/{org_b['asset_id']}/sidecar", headers=headers),
            client.post(
                "/v1/ingest/commit", headers=headers, json={"upload_id": org_b["upload_id"]}
            ),
        ]
    assert [a.status_code for a in answers] == [404, 404, 404, 404]
    assert all(a.json()["code"] == "not_found" for a in answers)
