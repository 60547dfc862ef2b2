"""Rules every tenant-scoped use case applies to the caller."""

from __future__ import annotations

from heimdex.domain.errors import InsufficientScope, OrgMismatch
from heimdex.domain.model import Principal


def ensure_same_org(principal: Principal, body_org_id: str | None) -> None:
    """A body may name the organisation, but only the caller's own (DESIGN.md §3)."""
    if body_org_id is not None and body_org_id != principal.org_id:
        raise OrgMismatch("org_id in the body does not match the token's organisation")


def ensure_scope(principal: Principal, scope: str) -> None:
    if not principal.has_scope(scope):
        raise InsufficientScope(f"this operation needs the {scope!r} scope")
