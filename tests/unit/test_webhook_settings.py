"""The HEIMDEX_WEBHOOK_* settings: parsed, defaulted, and refused when they make no sense."""

from __future__ import annotations

import pytest

from heimdex.settings import SettingsError, load_settings


def test_defaults_keep_private_networks_closed() -> None:
    settings = load_settings({}, env_file=None)
    assert settings.webhooks.allow_private_networks is False
    assert settings.webhooks.timeout_seconds == 10.0
    assert settings.webhooks.endpoint_concurrency <= settings.webhooks.org_concurrency
    assert settings.webhooks.org_concurrency <= settings.webhooks.concurrency
    # The process's cap below the organisation's default is not an error (it caps both).
    assert (
        load_settings({"HEIMDEX_WEBHOOK_CONCURRENCY": "2"}, env_file=None).webhooks.concurrency == 2
    )


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"HEIMDEX_WEBHOOK_TIMEOUT_SECONDS": "0"}, "HEIMDEX_WEBHOOK_TIMEOUT_SECONDS"),
        ({"HEIMDEX_WEBHOOK_CONCURRENCY": "-1"}, "HEIMDEX_WEBHOOK_CONCURRENCY"),
        ({"HEIMDEX_WEBHOOK_SECRET_GRACE_SECONDS": "-5"}, "HEIMDEX_WEBHOOK_SECRET_GRACE_SECONDS"),
        (
            {"HEIMDEX_WEBHOOK_CONCURRENCY": "2", "HEIMDEX_WEBHOOK_ENDPOINT_CONCURRENCY": "4"},
            "HEIMDEX_WEBHOOK_ENDPOINT_CONCURRENCY",
        ),
        (
            {"HEIMDEX_WEBHOOK_ORG_CONCURRENCY": "2", "HEIMDEX_WEBHOOK_ENDPOINT_CONCURRENCY": "3"},
            "HEIMDEX_WEBHOOK_ENDPOINT_CONCURRENCY",
        ),
        ({"HEIMDEX_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "maybe"}, "HEIMDEX_WEBHOOK_ALLOW_PRIVATE"),
    ],
)
def test_bad_values_are_refused_by_name(environ: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(environ, env_file=None)
    assert any(named in problem for problem in raised.value.problems)
