"""Finding a broker and managing vhosts, without a broker: closed ports, fakes, canned output."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
import yarl

from amqp_events._errors import ConfigurationError
from amqp_events._url import redact
from amqp_events.testing import (
    BindingInfo,
    BrokerHandle,
    BrokerNotFoundError,
    ExchangeInfo,
    QueueInfo,
    VhostAdminError,
    VhostView,
    _broker,
    find_broker,
)
from amqp_events.testing._broker import DELETE_BATCH, choose_vhost_admin
from amqp_events.testing._management_api import ManagementApiAdmin
from amqp_events.testing._rabbitmqctl import MADE_AHEAD, RabbitmqctlAdmin
from amqp_events.testing._urls import broker_answers, new_vhost_name, url_with_vhost

pytest_plugins = ("pytester",)

SECRET = "s3cr%40t"  # percent-encoded "s3cr@t": neither form may ever be shown


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A local port nothing listens on (bound, so no other process takes it meanwhile)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "AMQP_URL",
        "AMQP_MANAGEMENT_URL",
        "AMQP_EVENTS_REQUIRE_BROKER",
        "AMQP_EVENTS_DISRUPTIVE",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def container_starts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replaces starting a container by a failure like docker's; records each attempt."""
    attempts: list[str] = []

    def no_docker() -> Any:
        attempts.append("start")
        raise RuntimeError(
            "Error while fetching server API version: "
            "('Connection aborted.', FileNotFoundError(2, 'No such file or directory'))"
        )

    monkeypatch.setattr(_broker, "_start_container", no_docker)
    return attempts


def assert_no_secret(text: str) -> None:
    assert SECRET not in text
    assert "s3cr@t" not in text


# --- URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "vhost", "expected"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", "/", "amqp://guest:guest@127.0.0.1:5672/%2F"),
        (
            "amqp://u:p@h:5672",
            "amqp-events-test-0123456789ab",
            "amqp://u:p@h:5672/amqp-events-test-0123456789ab",
        ),
        ("amqp://h/old", "new", "amqp://h/new"),
        ("amqps://h/?heartbeat=5", "a b/c%", "amqps://h/a%20b%2Fc%25?heartbeat=5"),
    ],
)
def test_url_with_vhost(url: str, vhost: str, expected: str) -> None:
    result = url_with_vhost(url, vhost)

    assert result == expected
    # aiormq takes the vhost from yarl's decoded path: the client asks for the right one.
    assert yarl.URL(result).path[1:] == vhost


def test_new_vhost_names_are_prefixed_and_distinct() -> None:
    names = {new_vhost_name() for _ in range(100)}

    assert len(names) == 100
    for name in names:
        assert name.startswith("amqp-events-test-")
        assert len(name) == len("amqp-events-test-") + 12


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"amqp://guest:{SECRET}@127.0.0.1:5672/vh", "amqp://guest:***@127.0.0.1:5672/vh"),
        ("amqp://guest@127.0.0.1/", "amqp://guest@127.0.0.1/"),
        ("amqp://127.0.0.1:5672/", "amqp://127.0.0.1:5672/"),
        (f"amqps://u:{SECRET}@[::1]:5671/?x=1", "amqps://u:***@[::1]:5671/?x=1"),
    ],
)
def test_redact(url: str, expected: str) -> None:
    assert redact(url) == expected
    assert_no_secret(redact(url))


# --- broker_answers ----------------------------------------------------------------------------


def test_broker_answers_false_on_closed_port(closed_port: int) -> None:
    started = time.monotonic()

    assert not broker_answers(f"amqp://guest:guest@127.0.0.1:{closed_port}/")
    assert time.monotonic() - started < 1.0


def test_broker_answers_true_on_listening_port(listening_port: int) -> None:
    assert broker_answers(f"amqp://127.0.0.1:{listening_port}/")


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("amqp://broker/", ("broker", 5672)),
        ("amqps://broker", ("broker", 5671)),
        ("amqp://u:p@broker:1234/vh", ("broker", 1234)),
        ("amqp://[::1]/", ("::1", 5672)),
    ],
)
def test_broker_answers_default_ports(
    monkeypatch: pytest.MonkeyPatch, url: str, address: tuple[str, int]
) -> None:
    seen: list[tuple[str, int]] = []

    def refuse(addr: tuple[str, int], timeout: float) -> socket.socket:
        seen.append(addr)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket, "create_connection", refuse)  # the very module _urls uses

    assert not broker_answers(url)
    assert seen == [address]


def test_broker_answers_rejects_other_schemes() -> None:
    with pytest.raises(ConfigurationError, match="amqp://"):
        broker_answers("http://127.0.0.1:15672/")


# --- find_broker -------------------------------------------------------------------------------


def test_find_broker_nothing_answers_and_no_docker(
    monkeypatch: pytest.MonkeyPatch, closed_port: int, container_starts: list[str]
) -> None:
    monkeypatch.setattr(
        _broker, "DEFAULT_AMQP_URL", f"amqp://guest:{SECRET}@127.0.0.1:{closed_port}/"
    )

    assert find_broker(require=False) is None
    with pytest.raises(BrokerNotFoundError) as caught:
        find_broker(require=True)

    assert container_starts == ["start", "start"]
    reasons = caught.value.reasons
    assert len(reasons) == 2
    assert reasons[0].startswith(f"amqp://guest:***@127.0.0.1:{closed_port}/ does not answer")
    assert "refused" in reasons[0].lower()
    assert reasons[1].startswith("no RabbitMQ container could start: RuntimeError: ")
    assert "fetching server API version" in reasons[1]
    message = str(caught.value)
    assert all(reason in message for reason in reasons)
    assert "AMQP_URL" in message  # says how to fix it
    assert_no_secret(message)


def test_find_broker_explicit_url_is_not_second_guessed(
    monkeypatch: pytest.MonkeyPatch,
    closed_port: int,
    listening_port: int,
    container_starts: list[str],
) -> None:
    # The default broker answers, but AMQP_URL names another one: no silent fallback.
    monkeypatch.setattr(_broker, "DEFAULT_AMQP_URL", f"amqp://127.0.0.1:{listening_port}/")
    monkeypatch.setenv("AMQP_URL", f"amqp://guest:{SECRET}@127.0.0.1:{closed_port}/vh")

    with pytest.raises(BrokerNotFoundError) as caught:
        find_broker(require=True)

    [reason] = caught.value.reasons
    assert reason.startswith(
        f"AMQP_URL=amqp://guest:***@127.0.0.1:{closed_port}/vh does not answer: "
        f"127.0.0.1:{closed_port}: "
    )
    assert container_starts == []
    assert_no_secret(str(caught.value))


def test_find_broker_malformed_explicit_url(
    monkeypatch: pytest.MonkeyPatch, container_starts: list[str]
) -> None:
    monkeypatch.setenv("AMQP_URL", f"http://guest:{SECRET}@127.0.0.1:15672/")

    with pytest.raises(BrokerNotFoundError, match="AMQP_URL=http://guest:\\*\\*\\*@") as caught:
        find_broker(require=True)

    assert_no_secret(str(caught.value))


def test_find_broker_uses_explicit_url(
    monkeypatch: pytest.MonkeyPatch, listening_port: int, container_starts: list[str]
) -> None:
    url = f"amqp://u:p@127.0.0.1:{listening_port}/vh"
    monkeypatch.setenv("AMQP_URL", url)

    handle = find_broker(require=True)

    assert handle == BrokerHandle(url)
    assert container_starts == []


def test_find_broker_uses_local_default(
    monkeypatch: pytest.MonkeyPatch, listening_port: int, container_starts: list[str]
) -> None:
    url = f"amqp://guest:guest@127.0.0.1:{listening_port}/"
    monkeypatch.setattr(_broker, "DEFAULT_AMQP_URL", url)

    handle = find_broker(require=False)

    assert handle is not None
    assert handle.url == url
    assert handle.container is None
    assert container_starts == []


def test_find_broker_uses_container_when_nothing_local(
    monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    container = FakeContainer()
    monkeypatch.setattr(_broker, "DEFAULT_AMQP_URL", f"amqp://127.0.0.1:{closed_port}/")
    monkeypatch.setattr(
        _broker, "_start_container", lambda: (container, "amqp://guest:guest@localhost:32768/")
    )

    handle = find_broker(require=True)
    assert handle is not None
    assert handle.url == "amqp://guest:guest@localhost:32768/"
    assert handle.container is container
    handle.close()

    assert container.stopped


def test_find_broker_without_testcontainers(
    monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    monkeypatch.setattr(_broker, "DEFAULT_AMQP_URL", f"amqp://127.0.0.1:{closed_port}/")
    # None in sys.modules makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "testcontainers.community.rabbitmq", None)
    monkeypatch.setitem(sys.modules, "testcontainers.rabbitmq", None)

    with pytest.raises(BrokerNotFoundError, match="testcontainers is not installed"):
        find_broker(require=True)


def test_find_broker_real_testcontainers_without_docker(
    monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    config = pytest.importorskip("testcontainers.core.config")
    if config.testcontainers_config.tc_properties_get_tc_host():
        pytest.skip("~/.testcontainers.properties names a docker host, which beats DOCKER_HOST")
    monkeypatch.setattr(_broker, "DEFAULT_AMQP_URL", f"amqp://127.0.0.1:{closed_port}/")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")

    with pytest.raises(BrokerNotFoundError) as caught:
        find_broker(require=True)

    assert caught.value.reasons[1].startswith("no RabbitMQ container could start: ")


# --- choose_vhost_admin ------------------------------------------------------------------------


def test_choose_vhost_admin_says_why_nothing_works(
    monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    monkeypatch.setenv("AMQP_MANAGEMENT_URL", f"http://127.0.0.1:{closed_port}")

    with pytest.raises(VhostAdminError) as caught:
        choose_vhost_admin(f"amqp://guest:{SECRET}@192.0.2.10:5672/")

    message = str(caught.value)
    assert message.startswith("cannot create vhosts on amqp://guest:***@192.0.2.10:5672/")
    assert f"GET http://127.0.0.1:{closed_port}/api/whoami" in message
    assert "192.0.2.10 is not a loopback address" in message
    assert "rabbitmq_management" in message  # says how to fix it
    assert_no_secret(message)


def test_choose_vhost_admin_without_rabbitmqctl(
    monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    monkeypatch.setenv("AMQP_MANAGEMENT_URL", f"http://127.0.0.1:{closed_port}/api/")
    monkeypatch.setattr(shutil, "which", lambda name: None)  # the very module _broker uses

    with pytest.raises(VhostAdminError, match="rabbitmqctl: not found on PATH"):
        choose_vhost_admin("amqp://guest:guest@localhost:5672/")


def test_choose_vhost_admin_uses_management_url(
    monkeypatch: pytest.MonkeyPatch, management: type[FakeManagement]
) -> None:
    monkeypatch.setenv("AMQP_MANAGEMENT_URL", management.url)

    admin = choose_vhost_admin("amqp://guest:guest@192.0.2.10:5672/")

    assert isinstance(admin, ManagementApiAdmin)
    assert admin.api_url == f"{management.url}/api"


def test_broker_handle_remembers_why_no_admin(
    monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    monkeypatch.setenv("AMQP_MANAGEMENT_URL", f"http://127.0.0.1:{closed_port}")
    calls: list[str] = []
    real = _broker.choose_vhost_admin

    def counting(url: str, container: Any = None) -> Any:
        calls.append(url)
        return real(url, container)

    monkeypatch.setattr(_broker, "choose_vhost_admin", counting)
    handle = BrokerHandle("amqp://guest:guest@192.0.2.10:5672/")

    for _ in range(2):
        with pytest.raises(VhostAdminError, match="cannot create vhosts"):
            handle.create_vhost()

    assert len(calls) == 1


# --- management API, against a fake ------------------------------------------------------------


class FakeManagement(BaseHTTPRequestHandler):
    """Answers like the management API; records what it was asked."""

    requests: ClassVar[list[tuple[str, str, str | None, Any]]] = []
    # Not `responses`: that is BaseHTTPRequestHandler's table of status phrases.
    canned: ClassVar[dict[tuple[str, str], tuple[int, Any]]] = {}
    port: ClassVar[int] = 0
    url: ClassVar[str] = ""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.requests.append((self.command, self.path, self.headers.get("Authorization"), body))
        status, payload = self.canned.get((self.command, self.path), (204, None))
        if isinstance(payload, bytes):  # sent as it is, JSON or not
            data = payload
        else:
            data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean


@pytest.fixture
def management() -> Iterator[type[FakeManagement]]:
    class Handler(FakeManagement):
        """A class of its own per test, so that records and answers start empty."""

    Handler.requests = []
    Handler.canned = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Handler.port = server.server_address[1]
    Handler.url = f"http://127.0.0.1:{Handler.port}"
    Handler.canned[("GET", "/api/whoami")] = (200, {"name": "guest", "tags": ["administrator"]})
    # A short poll interval: shutdown() waits for the serving loop to notice.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield Handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_management_create_and_delete_quote_names(management: type[FakeManagement]) -> None:
    admin = ManagementApiAdmin.for_url(
        "amqp://us%20er:p%40ss@127.0.0.1:5672/", management_url=management.url
    )
    management.canned[("DELETE", "/api/vhosts/gone")] = (404, {"error": "Object Not Found"})

    admin.probe()
    admin.create_vhost("a/b c")
    admin.delete_vhost("a/b c")
    admin.delete_vhost("gone")

    auth = basic("us er", "p@ss")
    assert management.requests == [
        ("GET", "/api/whoami", auth, None),
        ("PUT", "/api/vhosts/a%2Fb%20c", auth, {}),
        (
            "PUT",
            "/api/permissions/a%2Fb%20c/us%20er",
            auth,
            {"configure": ".*", "write": ".*", "read": ".*"},
        ),
        ("DELETE", "/api/vhosts/a%2Fb%20c", auth, None),
        ("DELETE", "/api/vhosts/gone", auth, None),
    ]


def test_management_credentials_in_management_url(management: type[FakeManagement]) -> None:
    admin = ManagementApiAdmin.for_url(
        "amqp://guest:guest@127.0.0.1/",
        management_url=f"http://admin:{SECRET}@127.0.0.1:{management.port}/api",
    )
    management.canned[("GET", "/api/vhosts")] = (200, [{"name": "/"}, {"name": "v"}])

    assert admin.list_vhosts() == ["/", "v"]
    admin.create_vhost("v")

    assert [(method, path, auth) for method, path, auth, _ in management.requests] == [
        ("GET", "/api/vhosts", basic("admin", "s3cr@t")),
        ("PUT", "/api/vhosts/v", basic("admin", "s3cr@t")),
        # The admin account logs in; the user the tests connect as gets the permissions.
        ("PUT", "/api/permissions/v/guest", basic("admin", "s3cr@t")),
    ]

    assert_no_secret(admin.describe())


def test_management_refused_credentials(management: type[FakeManagement]) -> None:
    management.canned[("GET", "/api/whoami")] = (401, {"error": "not_authorised"})
    admin = ManagementApiAdmin.for_url(
        f"amqp://guest:{SECRET}@127.0.0.1/", management_url=management.url
    )

    with pytest.raises(VhostAdminError, match="HTTP 401") as caught:
        admin.probe()

    assert "refused the credentials of user 'guest'" in str(caught.value)
    assert_no_secret(str(caught.value))


def test_management_probe_needs_administrator(management: type[FakeManagement]) -> None:
    management.canned[("GET", "/api/whoami")] = (200, {"name": "app", "tags": ["monitoring"]})
    admin = ManagementApiAdmin.for_url("amqp://app:pw@127.0.0.1/", management_url=management.url)

    with pytest.raises(VhostAdminError, match="'app' lacks the administrator tag"):
        admin.probe()


def test_management_queues_and_bindings_normalized(management: type[FakeManagement]) -> None:
    management.canned[("GET", "/api/queues/v%2F1")] = (
        200,
        [
            {
                "name": "zz",
                "vhost": "v/1",
                "durable": False,
                "auto_delete": True,
                "exclusive": True,
                "arguments": [],  # how old versions rendered an empty table
                "messages": 3,
                "messages_ready": 2,
                "messages_unacknowledged": 1,
                "consumers": 1,
            },
            {  # not sampled yet: no counters
                "name": "orders",
                "vhost": "v/1",
                "durable": True,
                "auto_delete": False,
                "exclusive": False,
                "arguments": {"x-expires": 432000000, "x-list": ["a", 1]},
                "type": "classic",
            },
        ],
    )
    management.canned[("GET", "/api/bindings/v%2F1")] = (
        200,
        [
            {
                "source": "events",
                "vhost": "v/1",
                "destination": "orders",
                "destination_type": "queue",
                "routing_key": "Order.#",
                "arguments": {},
                "properties_key": "Order.%23",
            },
            {
                "source": "",
                "vhost": "v/1",
                "destination": "orders",
                "destination_type": "queue",
                "routing_key": "orders",
                "arguments": {},
                "properties_key": "orders",
            },
            {
                "source": "events",
                "vhost": "v/1",
                "destination": "audit",
                "destination_type": "exchange",
                "routing_key": "#",
                "arguments": {},
                "properties_key": "%23",
            },
            {
                "source": "billing",
                "vhost": "v/1",
                "destination": "orders",
                "destination_type": "queue",
                "routing_key": "",
                "arguments": {"x-match": "all", "service": "shop"},
                "properties_key": "~abc",
            },
        ],
    )
    admin = ManagementApiAdmin.for_url("amqp://127.0.0.1/", management_url=management.url)

    assert admin.queues("v/1") == [
        QueueInfo(
            name="orders",
            durable=True,
            exclusive=False,
            auto_delete=False,
            arguments={"x-expires": 432000000, "x-list": ["a", 1]},
            messages_ready=0,
            messages_unacknowledged=0,
            consumers=0,
        ),
        QueueInfo(
            name="zz",
            durable=False,
            exclusive=True,
            auto_delete=True,
            arguments={},
            messages_ready=2,
            messages_unacknowledged=1,
            consumers=1,
        ),
    ]
    # The default exchange's implicit binding and exchange-to-exchange bindings are left out.
    assert admin.bindings("v/1") == [
        BindingInfo("orders", "billing", "", {"x-match": "all", "service": "shop"}),
        BindingInfo("orders", "events", "Order.#", {}),
    ]


def test_management_exchanges_normalized(management: type[FakeManagement]) -> None:
    management.canned[("GET", "/api/exchanges/v%2F1")] = (
        200,
        [
            {
                "name": "events",
                "vhost": "v/1",
                "type": "topic",
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": {"alternate-exchange": "lost"},
                "user_who_performed_action": "guest",
            },
            {
                "name": "",
                "vhost": "v/1",
                "type": "direct",
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": [],
            },
        ],
    )
    admin = ManagementApiAdmin.for_url("amqp://127.0.0.1/", management_url=management.url)

    assert admin.exchanges("v/1") == [
        ExchangeInfo("", "direct", durable=True, auto_delete=False, internal=False, arguments={}),
        ExchangeInfo(
            "events",
            "topic",
            durable=True,
            auto_delete=False,
            internal=False,
            arguments={"alternate-exchange": "lost"},
        ),
    ]


def test_management_answer_that_is_not_json(management: type[FakeManagement]) -> None:
    management.canned[("GET", "/api/whoami")] = (200, b"<html><body>RabbitMQ</body></html>")
    admin = ManagementApiAdmin.for_url("amqp://127.0.0.1/", management_url=management.url)

    with pytest.raises(VhostAdminError, match="not JSON"):
        admin.probe()


def test_management_unknown_vhost_has_no_queues(management: type[FakeManagement]) -> None:
    for kind in ("queues", "exchanges", "bindings"):
        management.canned[("GET", f"/api/{kind}/nope")] = (404, {"error": "Object Not Found"})
    admin = ManagementApiAdmin.for_url("amqp://127.0.0.1/", management_url=management.url)

    assert admin.queues("nope") == []
    assert admin.exchanges("nope") == []
    assert admin.bindings("nope") == []


# --- rabbitmqctl, with output captured from RabbitMQ 3.10.8 --------------------------------------

# `rabbitmqctl list_queues -p V name durable auto_delete exclusive arguments messages_ready
# messages_unacknowledged consumers --formatter json -q`:
# arguments are [key, type, value] triples; an array is an object keyed by element type,
# duplicate keys included; a decimal is [scale, unscaled]; void is "undefined".
LIST_QUEUES = """[
{"name":"amq.gen-3xjHp9J-ZP9jypHZSVRWgw","durable":false,"auto_delete":false,"exclusive":true,"arguments":[],"messages_ready":0,"messages_unacknowledged":0,"consumers":1}
,{"name":"q-plain","durable":false,"auto_delete":true,"exclusive":false,"arguments":[],"messages_ready":4,"messages_unacknowledged":2,"consumers":3}
,{"name":"q-args","durable":true,"auto_delete":false,"exclusive":false,"arguments":[["x-big","long",1099511627776],["x-dead-letter-exchange","longstr","dlx"],["x-expires","signedint",432000000],["x-flag","bool",true],["x-float","float",1.5],["x-list","array",{"longstr":"a","byte":1}],["x-max-length","byte",5],["x-message-ttl","short",1000],["x-neg","byte",-3],["x-queue-type","longstr","classic"],["x-table","table",[["k","longstr","v"]]]],"messages_ready":0,"messages_unacknowledged":0,"consumers":0}
,{"name":"q-edge","durable":true,"auto_delete":false,"exclusive":false,"arguments":[["x-dec","decimal",[2,125]],["x-empty","array",[]],["x-emptytab","table",[]],["x-nested","array",{"array":{"byte":1,"byte":2},"array":{"byte":3}}],["x-none","void","undefined"],["x-same","array",{"longstr":"a","longstr":"b","longstr":"c"}],["x-tabarr","table",[["a","array",{"byte":1,"longstr":"x"}]]],["x-tables","array",{"table":[["k","byte",1]],"table":[["k","byte",2]]}],["x-ts","timestamp",1704067200],["x-uni","longstr","héllo ✓"]],"messages_ready":0,"messages_unacknowledged":0,"consumers":0}
]
"""  # noqa: E501 (verbatim output)

# `rabbitmqctl list_exchanges -p V name type durable auto_delete internal arguments
# --formatter json -q`, trimmed
LIST_EXCHANGES = """[
{"name":"amq.rabbitmq.trace","type":"topic","durable":true,"auto_delete":false,"internal":true,"arguments":[]}
,{"name":"ex1","type":"headers","durable":false,"auto_delete":true,"internal":false,"arguments":[["alternate-exchange","longstr","lost"]]}
,{"name":"","type":"direct","durable":true,"auto_delete":false,"internal":false,"arguments":[]}
]
"""

# `rabbitmqctl list_bindings -p V source_name destination_name destination_kind routing_key
# arguments --formatter json -q`
LIST_BINDINGS = """[
{"source_name":"","destination_name":"q-args","destination_kind":"queue","routing_key":"q-args","arguments":[]}
,{"source_name":"ex1","destination_name":"q-args","destination_kind":"queue","routing_key":"a.*","arguments":[["n","byte",3],["x-match","longstr","all"]]}
,{"source_name":"ex1","destination_name":"ex2","destination_kind":"exchange","routing_key":"c","arguments":[]}
]
"""

# `rabbitmqctl status --formatter json -q`, trimmed to what the probe reads.
STATUS = """{"listeners":[{"interface":"127.0.0.1","node":"rabbit@localhost","port":25672,"protocol":"clustering","purpose":"inter-node and CLI tool communication"},{"interface":"127.0.0.1","node":"rabbit@localhost","port":5672,"protocol":"amqp","purpose":"AMQP 0-9-1 and AMQP 1.0"}],"rabbitmq_version":"3.10.8"}"""  # noqa: E501


class ScriptedRabbitmqctl(RabbitmqctlAdmin):
    """rabbitmqctl whose answers are scripted by command name; records the calls."""

    def __init__(self, answers: dict[str, tuple[int, str]], **kwargs: Any) -> None:
        super().__init__("guest", **kwargs)
        self.answers = answers
        self.calls: list[tuple[tuple[str, ...], str | None]] = []

    def _exec(self, args: Sequence[str], stdin: str | None) -> tuple[int, str]:
        self.calls.append((tuple(args), stdin))
        return self.answers.get(args[0], (0, ""))


def test_rabbitmqctl_queues_normalized() -> None:
    ctl = ScriptedRabbitmqctl({"list_queues": (0, LIST_QUEUES)})

    queues = {q.name: q for q in ctl.queues("v")}

    assert ctl.calls == [
        (
            (
                "list_queues",
                "-p",
                "v",
                "name",
                "durable",
                "auto_delete",
                "exclusive",
                "arguments",
                "messages_ready",
                "messages_unacknowledged",
                "consumers",
                "--formatter",
                "json",
                "--quiet",
            ),
            None,
        )
    ]
    assert list(queues) == sorted(queues)
    assert queues["q-plain"] == QueueInfo(
        name="q-plain",
        durable=False,
        exclusive=False,
        auto_delete=True,
        arguments={},
        messages_ready=4,
        messages_unacknowledged=2,
        consumers=3,
    )
    assert queues["amq.gen-3xjHp9J-ZP9jypHZSVRWgw"].exclusive is True
    assert queues["q-args"].arguments == {
        "x-big": 1099511627776,
        "x-dead-letter-exchange": "dlx",
        "x-expires": 432000000,
        "x-flag": True,
        "x-float": 1.5,
        "x-list": ["a", 1],
        "x-max-length": 5,
        "x-message-ttl": 1000,
        "x-neg": -3,
        "x-queue-type": "classic",
        "x-table": {"k": "v"},
    }
    assert queues["q-edge"].arguments == {
        "x-dec": Decimal("1.25"),
        "x-empty": [],
        "x-emptytab": {},
        "x-nested": [[1, 2], [3]],
        "x-none": None,
        "x-same": ["a", "b", "c"],
        "x-tabarr": {"a": [1, "x"]},
        "x-tables": [{"k": 1}, {"k": 2}],
        "x-ts": 1704067200,
        "x-uni": "héllo ✓",
    }


def test_rabbitmqctl_bindings_normalized() -> None:
    ctl = ScriptedRabbitmqctl({"list_bindings": (0, LIST_BINDINGS)})

    # The default exchange's implicit binding and the exchange-to-exchange one are left out.
    assert ctl.bindings("v") == [BindingInfo("q-args", "ex1", "a.*", {"n": 3, "x-match": "all"})]


def test_vhost_view_looks_up_and_filters() -> None:
    ctl = ScriptedRabbitmqctl(
        {
            "list_queues": (0, LIST_QUEUES),
            "list_exchanges": (0, LIST_EXCHANGES),
            "list_bindings": (0, LIST_BINDINGS),
        }
    )
    view = VhostView(ctl, "v", "amqp://127.0.0.1/v")

    assert view.queue("q-plain").messages == 6
    assert view.exchange("ex1").type == "headers"
    assert view.bindings("q-args") == view.bindings() != []
    assert view.bindings("q-plain") == []
    with pytest.raises(LookupError, match=r"no exchange 'nope' in vhost 'v' \(exchanges: '', "):
        view.exchange("nope")
    with pytest.raises(LookupError, match=r"no queue 'nope' in vhost 'v' \(queues: 'amq.gen-"):
        view.queue("nope")


def test_rabbitmqctl_exchanges_normalized() -> None:
    ctl = ScriptedRabbitmqctl({"list_exchanges": (0, LIST_EXCHANGES)})

    exchanges = ctl.exchanges("v")

    [(args, _)] = ctl.calls
    assert args[:3] == ("list_exchanges", "-p", "v")
    assert exchanges == [
        ExchangeInfo("", "direct", durable=True, auto_delete=False, internal=False, arguments={}),
        ExchangeInfo(
            "amq.rabbitmq.trace",
            "topic",
            durable=True,
            auto_delete=False,
            internal=True,
            arguments={},
        ),
        ExchangeInfo(
            "ex1",
            "headers",
            durable=False,
            auto_delete=True,
            internal=False,
            arguments={"alternate-exchange": "lost"},
        ),
    ]


def test_rabbitmqctl_create_imports_definitions_in_one_call() -> None:
    ctl = ScriptedRabbitmqctl({})

    ctl.create_vhost("amqp-events-test-0123456789ab")

    [(args, stdin)] = ctl.calls
    assert args == ("import_definitions", "--format", "json", "--quiet")
    assert stdin is not None
    assert json.loads(stdin) == {
        "vhosts": [{"name": "amqp-events-test-0123456789ab"}],
        "permissions": [
            {
                "user": "guest",
                "vhost": "amqp-events-test-0123456789ab",
                "configure": ".*",
                "write": ".*",
                "read": ".*",
            }
        ],
    }


def test_rabbitmqctl_makes_fresh_vhosts_ahead_in_one_call_and_hands_each_out_once() -> None:
    ctl = ScriptedRabbitmqctl({})

    handed_out = [ctl.create_fresh_vhost() for _ in range(MADE_AHEAD + 1)]

    assert len(set(handed_out)) == len(handed_out)
    assert [args[0] for args, _ in ctl.calls] == ["import_definitions"] * 2  # two batches
    first_stdin = ctl.calls[0][1]
    assert first_stdin is not None
    first_batch = json.loads(first_stdin)
    names = [v["name"] for v in first_batch["vhosts"]]
    assert len(names) == MADE_AHEAD
    assert {p["vhost"] for p in first_batch["permissions"]} == set(names)
    assert set(handed_out[:MADE_AHEAD]) == set(names)
    # What was made ahead and never used is given back, once, for deletion.
    unused = ctl.unused_vhosts()
    assert len(unused) == MADE_AHEAD - 1
    assert not set(unused) & set(handed_out)
    assert ctl.unused_vhosts() == []


def test_rabbitmqctl_deletes_several_vhosts_with_one_eval() -> None:
    ctl = ScriptedRabbitmqctl({})

    ctl.delete_vhosts(["t-1", "t-2", "t-3"])

    [(args, stdin)] = ctl.calls
    assert args[0] == "eval"
    assert args[1] == (
        '_ = [catch rabbit_vhost:delete(V, <<"guest">>) || '
        'V <- [<<"t-1">>, <<"t-2">>, <<"t-3">>]], ok.'
    )
    assert stdin is None


def test_rabbitmqctl_deletes_one_by_one_when_eval_fails_or_a_name_needs_quoting() -> None:
    failing = ScriptedRabbitmqctl({"eval": (70, "Error: eval is disabled")})
    failing.delete_vhosts(["t-1", "t-2"])
    assert [c[0][0] for c in failing.calls] == ["eval", "delete_vhost", "delete_vhost"]

    quoted = ScriptedRabbitmqctl({})
    quoted.delete_vhosts(["t-1", 'a"b'])
    assert [c[0] for c in quoted.calls] == [
        ("delete_vhost", "--quiet", "t-1"),
        ("delete_vhost", "--quiet", 'a"b'),
    ]


def test_a_broker_handle_deletes_finished_vhosts_a_batch_at_a_time_and_the_rest_at_close() -> None:
    ctl = ScriptedRabbitmqctl({})
    broker = BrokerHandle("amqp://guest:guest@127.0.0.1:5672/", admin=ctl)
    made = [broker.create_vhost(f"v-{i}") for i in range(DELETE_BATCH + 2)]
    ctl.calls.clear()

    for vhost in made:
        broker.delete_vhost_later(vhost)

    assert [c[0][0] for c in ctl.calls] == ["eval"]  # the first DELETE_BATCH, at once
    assert all(f'<<"{v}">>' in ctl.calls[0][0][1] for v in made[:DELETE_BATCH])
    broker.close()
    assert [c[0][0] for c in ctl.calls] == ["eval", "eval"]  # the last two, at close
    assert all(f'<<"{v}">>' in ctl.calls[1][0][1] for v in made[DELETE_BATCH:])


def test_a_broker_handle_deletes_vhosts_made_ahead_and_unused_in_one_batch_at_close() -> None:
    ctl = ScriptedRabbitmqctl({})
    broker = BrokerHandle("amqp://guest:guest@127.0.0.1:5672/", admin=ctl)
    used = broker.create_vhost()  # makes MADE_AHEAD at once, hands out one
    broker.delete_vhost_later(used)
    ctl.calls.clear()

    broker.close()

    [(args, _)] = ctl.calls  # one eval for the used one and every unused one
    assert args[0] == "eval"
    assert args[1].count('<<"') == MADE_AHEAD + 1  # the user's name, and each vhost


def test_rabbitmqctl_delete_missing_vhost_is_no_error() -> None:
    ctl = ScriptedRabbitmqctl({"delete_vhost": (65, "Virtual host 'gone' does not exist")})

    ctl.delete_vhost("gone")

    assert ctl.calls == [(("delete_vhost", "--quiet", "gone"), None)]


def test_rabbitmqctl_failure_says_what_failed() -> None:
    ctl = ScriptedRabbitmqctl(
        {"list_vhosts": (69, "Error: unable to perform an operation on node")}
    )

    with pytest.raises(
        VhostAdminError, match="list_vhosts .* exited with status 69: Error: unable"
    ):
        ctl.list_vhosts()


def test_rabbitmqctl_probe_checks_the_listener_port() -> None:
    ScriptedRabbitmqctl({"status": (0, STATUS)}, expected_port=5672).probe()  # passes: no error

    with pytest.raises(VhostAdminError, match=r"listening for AMQP on \[5672\], not on port 5673"):
        ScriptedRabbitmqctl({"status": (0, STATUS)}, expected_port=5673).probe()


def test_rabbitmqctl_output_that_is_not_json() -> None:
    ctl = ScriptedRabbitmqctl({"list_vhosts": (0, "warning: the VM is running with latin1\n[]")})

    with pytest.raises(VhostAdminError, match="rabbitmqctl printed no JSON: 'warning"):
        ctl.list_vhosts()


def test_rabbitmqctl_missing_executable() -> None:
    ctl = RabbitmqctlAdmin("guest", executable="/nonexistent/rabbitmqctl")

    with pytest.raises(VhostAdminError, match="/nonexistent/rabbitmqctl status"):
        ctl.probe()


# --- container admin ---------------------------------------------------------------------------


class FakeExecResult:
    def __init__(self, exit_code: int, output: bytes) -> None:
        self.exit_code = exit_code
        self.output = output


class FakeContainer:
    """Stands in for a testcontainers RabbitMqContainer whose management API is not up."""

    def __init__(self) -> None:
        self.commands: list[list[str]] = []
        self.stopped = False

    def exec(self, command: list[str]) -> FakeExecResult:
        self.commands.append(command)
        if command[1] == "list_vhosts":
            return FakeExecResult(0, b'[\n{"name":"/"}\n]\n')
        return FakeExecResult(0, b"")

    def stop(self) -> None:
        self.stopped = True

    def get_container_host_ip(self) -> str:
        return "127.0.0.1"

    def get_exposed_port(self, port: int) -> int:
        raise RuntimeError(f"port {port} is not exposed")


def test_container_admin_falls_back_to_exec() -> None:
    container = FakeContainer()

    admin = choose_vhost_admin("amqp://guest:guest@localhost:32768/", container)
    admin.create_vhost("v1")
    vhosts = admin.list_vhosts()
    admin.delete_vhost("v1")

    assert admin.describe() == "rabbitmqctl in the container"
    assert vhosts == ["/"]
    assert container.commands == [
        ["rabbitmqctl", "status", "--formatter", "json", "--quiet"],
        ["rabbitmqctl", "add_vhost", "--quiet", "v1"],
        ["rabbitmqctl", "set_permissions", "--quiet", "-p", "v1", "guest", ".*", ".*", ".*"],
        ["rabbitmqctl", "list_vhosts", "name", "--formatter", "json", "--quiet"],
        ["rabbitmqctl", "delete_vhost", "--quiet", "v1"],
    ]


# --- the pytest plugin -------------------------------------------------------------------------

PLUGIN_TESTS = """
def test_uses_broker(amqp_events_rabbitmq_url):
    pass

def test_needs_nothing():
    pass
"""


@pytest.fixture
def pytester(pytester: pytest.Pytester) -> pytest.Pytester:
    """pytester whose inner runs configure pytest-asyncio and do not warn about it."""
    pytester.makeini(
        """
        [pytest]
        asyncio_default_fixture_loop_scope = function
        # The outer session imported amqp_events before the inner one could rewrite it.
        filterwarnings = ignore::pytest.PytestAssertRewriteWarning
        """
    )
    return pytester


@pytest.fixture
def unreachable_broker(
    monkeypatch: pytest.MonkeyPatch, closed_port: int, pytester: pytest.Pytester
) -> int:
    monkeypatch.setenv("AMQP_URL", f"amqp://guest:{SECRET}@127.0.0.1:{closed_port}/")
    pytester.makepyfile(PLUGIN_TESTS)
    return closed_port


def test_plugin_registers_markers(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")

    result.stdout.fnmatch_lines(["@pytest.mark.rabbitmq: *", "@pytest.mark.disruptive: *"])


def test_plugin_marks_broker_tests(pytester: pytest.Pytester, unreachable_broker: int) -> None:
    result = pytester.runpytest("-m", "not rabbitmq", "--strict-markers")

    result.assert_outcomes(passed=1, deselected=1)


def test_plugin_skips_without_broker(pytester: pytest.Pytester, unreachable_broker: int) -> None:
    result = pytester.runpytest("-rs")

    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "SKIPPED * no RabbitMQ broker found:",
            f"  - AMQP_URL=amqp://guest:***@127.0.0.1:{unreachable_broker}/ does not answer: *",
        ]
    )
    assert_no_secret(result.stdout.str())


def test_plugin_fails_without_broker_when_required(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, unreachable_broker: int
) -> None:
    monkeypatch.setenv("AMQP_EVENTS_REQUIRE_BROKER", "1")

    result = pytester.runpytest()

    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*no RabbitMQ broker found*", "*AMQP_EVENTS_REQUIRE_BROKER is set*"]
    )
    assert_no_secret(result.stdout.str())


DISRUPTIVE_TESTS = """
import pytest

@pytest.mark.disruptive
def test_restarts_the_broker():
    pass

def test_harmless():
    pass
"""


def test_plugin_skips_disruptive_tests_unless_asked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(DISRUPTIVE_TESTS)

    result = pytester.runpytest("-rs")

    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED * runs only with AMQP_EVENTS_DISRUPTIVE=1*"])


def test_plugin_runs_disruptive_tests_when_asked(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(DISRUPTIVE_TESTS)
    monkeypatch.setenv("AMQP_EVENTS_DISRUPTIVE", "1")

    result = pytester.runpytest()

    result.assert_outcomes(passed=2)
