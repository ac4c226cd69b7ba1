from __future__ import annotations

import pytest

from amqp_events import ConfigurationError, Connection
from amqp_events._url import check_urls, redact


def test_comma_hosts_expand_to_one_url_each() -> None:
    assert check_urls("amqp://u:p@h1:5672,h2:5673/vh") == [
        "amqp://u:p@h1:5672/vh",
        "amqp://u:p@h2:5673/vh",
    ]


def test_a_list_of_urls_is_taken_as_is() -> None:
    assert check_urls(["amqp://a/", "amqps://b:5671/"]) == ["amqp://a/", "amqps://b:5671/"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ([], "empty"),
        (["memory://", "memory://x"], "single URL"),
        ("amqp://u:p@h1,/", "names no host"),
        (["amqp://a/", "ftp://b/"], "unknown scheme 'ftp'"),
    ],
)
def test_bad_url_lists(url: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        check_urls(url)  # type: ignore[arg-type]


def test_passwords_never_show() -> None:
    url = "amqp://user:hunter2@h1,h2/"
    assert redact(url) == "amqp://user:***@h1,h2/"
    conn = Connection("svc", url)
    assert "hunter2" not in repr(conn)
    assert "hunter2" not in conn.url
