"""Find a real RabbitMQ for tests and give each test a vhost of its own.

Nothing here imports pytest: scripts and other test runners can use it too. The broker is
searched in this order (see :func:`find_broker`):

1. ``AMQP_URL`` when set: an explicit choice, so nothing else is tried when it does not answer;
2. :data:`DEFAULT_AMQP_URL`, a broker on this machine;
3. a throw-away container started with testcontainers (needs Docker).

Vhosts are created and deleted by a :class:`VhostAdmin`; :func:`choose_vhost_admin` tries the
management HTTP API, then the local ``rabbitmqctl``, then ``rabbitmqctl`` inside the container.
"""

from __future__ import annotations

import abc
import base64
import contextlib
import ipaddress
import json
import logging
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, TypedDict
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from .._errors import AmqpEventsError, ConfigurationError
from .._url import check_url, redact

__all__ = [
    "DEFAULT_AMQP_URL",
    "DEFAULT_CONTAINER_IMAGE",
    "ENV_AMQP_URL",
    "ENV_CONTAINER_IMAGE",
    "ENV_MANAGEMENT_URL",
    "MANAGEMENT_PORT",
    "VHOST_PREFIX",
    "BindingInfo",
    "BrokerHandle",
    "BrokerNotFoundError",
    "ContainerLike",
    "ContainerRabbitmqctlAdmin",
    "ManagementApiAdmin",
    "QueueInfo",
    "RabbitmqctlAdmin",
    "VhostAdmin",
    "VhostAdminError",
    "VhostView",
    "broker_answers",
    "choose_vhost_admin",
    "find_broker",
    "new_vhost_name",
    "redact",
    "url_with_vhost",
]

logger = logging.getLogger(__name__)

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_CONTAINER_IMAGE = "rabbitmq:4.1-management"  # the same as docker-compose.yml
ENV_AMQP_URL = "AMQP_URL"
ENV_MANAGEMENT_URL = "AMQP_MANAGEMENT_URL"
ENV_CONTAINER_IMAGE = "AMQP_EVENTS_RABBITMQ_IMAGE"
MANAGEMENT_PORT = 15672
VHOST_PREFIX = "amqp-events-test-"

_FULL_PERMISSIONS = {"configure": ".*", "write": ".*", "read": ".*"}
# Long enough for a loaded CI broker, short enough that a hung call does not stall a session.
_ADMIN_TIMEOUT = 60.0
_PROBE_TIMEOUT = 3.0


class VhostAdminError(AmqpEventsError):
    """A vhost could not be created, deleted or inspected, or no way to do so was found."""


class BrokerNotFoundError(AmqpEventsError):
    """No broker answered; ``reasons`` says what was tried and why each attempt failed."""

    def __init__(self, reasons: Sequence[str]) -> None:
        self.reasons = list(reasons)
        lines = "\n".join(f"  - {reason}" for reason in self.reasons)
        super().__init__(
            f"no RabbitMQ broker found:\n{lines}\n"
            f"Start RabbitMQ on 127.0.0.1:5672, set {ENV_AMQP_URL}, "
            "or start Docker so that testcontainers can run one."
        )


class QueueInfo(TypedDict):
    """A queue as :meth:`VhostAdmin.queues` returns it, whichever admin answered."""

    name: str
    vhost: str
    durable: bool
    auto_delete: bool
    exclusive: bool | None
    arguments: dict[str, Any]


class BindingInfo(TypedDict):
    """A binding as :meth:`VhostAdmin.bindings` returns it, whichever admin answered."""

    source: str
    destination: str
    destination_type: str
    routing_key: str
    arguments: dict[str, Any]


# --------------------------------------------------------------------------------------------
# URLs


@dataclass(frozen=True)
class _AmqpTarget:
    host: str
    port: int
    username: str
    password: str


def _target(url: str) -> _AmqpTarget:
    parts = check_url(url)
    if parts.scheme not in ("amqp", "amqps"):
        raise ConfigurationError(f"broker URL {redact(url)!r} is not amqp:// or amqps://")
    return _AmqpTarget(
        host=parts.hostname or "localhost",
        port=parts.port or (5671 if parts.scheme == "amqps" else 5672),
        # Defaults as in the AMQP URI spec and in every client: guest/guest.
        username=unquote(parts.username) if parts.username is not None else "guest",
        password=unquote(parts.password) if parts.password is not None else "guest",
    )


def _host_in_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_with_vhost(url: str, vhost: str) -> str:
    """``url`` pointing into ``vhost`` (URL-quoted in the path: ``/`` becomes ``%2F``)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))


def new_vhost_name() -> str:
    """A fresh vhost name, ``amqp-events-test-<12 hex digits>``."""
    return f"{VHOST_PREFIX}{uuid.uuid4().hex[:12]}"


def _tcp_problem(url: str, timeout: float) -> str | None:
    """Why a TCP connection to the broker of ``url`` fails, or None when it succeeds."""
    target = _target(url)
    try:
        with socket.create_connection((target.host, target.port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{target.host}:{target.port}: {exc.strerror or exc}"


def broker_answers(url: str, timeout: float = 2.0) -> bool:
    """Whether a TCP connection to the host and port of ``url`` succeeds (no AMQP handshake).

    A URL that is not ``amqp://`` or ``amqps://`` raises :class:`ConfigurationError`.
    """
    return _tcp_problem(url, timeout) is None


# --------------------------------------------------------------------------------------------
# Vhost administration


class VhostAdmin(abc.ABC):
    """Creates, deletes and inspects vhosts, granting :attr:`user` full permissions on them.

    :attr:`user` is the user of the AMQP URL, the one the tests connect as.
    """

    def __init__(self, user: str) -> None:
        self.user = user

    @abc.abstractmethod
    def describe(self) -> str:
        """A short human description, e.g. ``management API at http://127.0.0.1:15672/api``."""

    @abc.abstractmethod
    def probe(self) -> None:
        """Raise :class:`VhostAdminError` saying why this admin cannot be used."""

    @abc.abstractmethod
    def create_vhost(self, vhost: str) -> None:
        """Create ``vhost`` with configure/write/read ``.*`` for :attr:`user`."""

    @abc.abstractmethod
    def delete_vhost(self, vhost: str) -> None:
        """Delete ``vhost`` and everything in it; a vhost that does not exist is no error."""

    @abc.abstractmethod
    def list_vhosts(self) -> list[str]:
        """Names of all vhosts on the broker."""

    @abc.abstractmethod
    def queues(self, vhost: str) -> list[QueueInfo]:
        """Queues of ``vhost`` sorted by name (an unknown vhost has none)."""

    @abc.abstractmethod
    def bindings(self, vhost: str) -> list[BindingInfo]:
        """Bindings of ``vhost``, default-exchange ones included, in a stable order."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


def _sorted_bindings(bindings: list[BindingInfo]) -> list[BindingInfo]:
    return sorted(
        bindings,
        key=lambda b: (b["source"], b["destination_type"], b["destination"], b["routing_key"]),
    )


class ManagementApiAdmin(VhostAdmin):
    """Vhost admin over the management plugin's HTTP API (standard library only).

    It logs in as ``user``, unless ``api_url`` carries credentials of its own (an admin
    account, say): then those log in and ``user`` is only granted the permissions.
    """

    def __init__(
        self, api_url: str, user: str, password: str, timeout: float = _ADMIN_TIMEOUT
    ) -> None:
        super().__init__(user)
        parts = urlsplit(api_url)
        path = parts.path.rstrip("/")
        if not path.endswith("/api"):
            path += "/api"
        self.login = user
        if parts.username is not None:
            self.login = unquote(parts.username)
            password = unquote(parts.password or "")
        # Shown in messages, so without the credentials.
        netloc = parts.netloc.rpartition("@")[2]
        self.api_url = urlunsplit((parts.scheme, netloc, path, "", ""))
        self._auth = "Basic " + base64.b64encode(f"{self.login}:{password}".encode()).decode()
        self._timeout = timeout
        host = parts.hostname or ""
        # A proxy taken from the environment cannot reach this machine's loopback interface.
        handlers = [urllib.request.ProxyHandler({})] if _is_loopback(host) else []
        self._opener = urllib.request.build_opener(*handlers)

    @classmethod
    def for_url(cls, amqp_url: str, management_url: str | None = None) -> ManagementApiAdmin:
        """The admin for the broker of ``amqp_url``: ``management_url``, else its port 15672."""
        target = _target(amqp_url)
        if management_url is None:
            management_url = f"http://{_host_in_url(target.host)}:{MANAGEMENT_PORT}/api"
        return cls(management_url, target.username, target.password)

    def describe(self) -> str:
        return f"management API at {self.api_url}"

    def _request(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        timeout: float | None = None,
        ok_statuses: tuple[int, ...] = (),
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.api_url + path, data=data, method=method)
        request.add_header("Authorization", self._auth)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(request, timeout=timeout or self._timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code in ok_statuses:
                return None
            detail = exc.read().decode("utf-8", "replace").strip()[:300]
            if exc.code == 401:
                detail = f"the broker refused the credentials of user {self.login!r}"
            raise VhostAdminError(
                f"{method} {self.api_url}{path}: HTTP {exc.code} {exc.reason}: {detail}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise VhostAdminError(f"{method} {self.api_url}{path}: {reason}") from None
        try:
            return json.loads(raw) if raw.strip() else None
        except ValueError:  # e.g. an HTML page: something else listens there
            raise VhostAdminError(
                f"{method} {self.api_url}{path}: the answer is not JSON: {raw[:100]!r}"
            ) from None

    def probe(self) -> None:
        whoami = self._request("GET", "/whoami", timeout=_PROBE_TIMEOUT)
        tags = whoami.get("tags", []) if isinstance(whoami, dict) else []
        # Before 3.9 the tags were one comma-separated string.
        if isinstance(tags, str):
            tags = tags.split(",")
        if "administrator" not in tags:
            raise VhostAdminError(
                f"{self.describe()}: user {self.login!r} lacks the administrator tag "
                "needed to create vhosts"
            )

    def create_vhost(self, vhost: str) -> None:
        name = quote(vhost, safe="")
        self._request("PUT", f"/vhosts/{name}", {})
        self._request("PUT", f"/permissions/{name}/{quote(self.user, safe='')}", _FULL_PERMISSIONS)

    def delete_vhost(self, vhost: str) -> None:
        self._request("DELETE", f"/vhosts/{quote(vhost, safe='')}", ok_statuses=(404,))

    def list_vhosts(self) -> list[str]:
        return [str(v["name"]) for v in self._request("GET", "/vhosts") or []]

    def queues(self, vhost: str) -> list[QueueInfo]:
        rows = self._request("GET", f"/queues/{quote(vhost, safe='')}", ok_statuses=(404,))
        queues = [
            QueueInfo(
                name=row["name"],
                vhost=row.get("vhost", vhost),
                durable=bool(row.get("durable")),
                auto_delete=bool(row.get("auto_delete")),
                exclusive=row.get("exclusive"),
                arguments=_management_table(row.get("arguments")),
            )
            for row in rows or []
        ]
        return sorted(queues, key=lambda q: q["name"])

    def bindings(self, vhost: str) -> list[BindingInfo]:
        rows = self._request("GET", f"/bindings/{quote(vhost, safe='')}", ok_statuses=(404,))
        return _sorted_bindings(
            [
                BindingInfo(
                    source=row["source"],
                    destination=row["destination"],
                    destination_type=row["destination_type"],
                    routing_key=row["routing_key"],
                    arguments=_management_table(row.get("arguments")),
                )
                for row in rows or []
            ]
        )


def _management_table(value: object) -> dict[str, Any]:
    # Old management versions rendered an empty table as [].
    return dict(value) if isinstance(value, dict) else {}


class _Pairs(list[tuple[str, Any]]):
    """A JSON object kept as its key/value pairs, duplicate keys included."""


def _parse_ctl_json(text: str) -> Any:
    # rabbitmqctl renders an AMQP array as an object keyed by element type, e.g.
    # {"longstr":"a","longstr":"b"}: a plain dict would keep only the last element.
    try:
        return json.loads(text, object_pairs_hook=_Pairs) if text.strip() else []
    except ValueError:  # e.g. a warning mixed into the output of container.exec
        raise VhostAdminError(f"rabbitmqctl printed no JSON: {text[:200]!r}") from None


def _ctl_value(kind: str, value: Any) -> Any:
    """The Python value of one typed value in rabbitmqctl's JSON."""
    if kind == "table":
        return _ctl_table(value)
    if kind == "array":
        # An empty array comes out as [] rather than {}.
        return [_ctl_value(k, v) for k, v in value] if isinstance(value, _Pairs) else []
    if kind == "decimal":
        scale, unscaled = value
        return Decimal(unscaled).scaleb(-scale)
    if kind == "void":
        return None
    return value


def _ctl_table(value: Any) -> dict[str, Any]:
    """rabbitmqctl's ``[[key, type, value], ...]`` as a dict of Python values."""
    if not isinstance(value, list) or isinstance(value, _Pairs):
        return {}
    return {key: _ctl_value(kind, item) for key, kind, item in value}


def _ctl_rows(text: str) -> list[dict[str, Any]]:
    return [dict(row) for row in _parse_ctl_json(text)]


class RabbitmqctlAdmin(VhostAdmin):
    """Vhost admin that runs the local ``rabbitmqctl`` (each call starts an Erlang VM: ~0.6 s).

    ``expected_port`` is the AMQP port of the broker URL: :meth:`probe` checks that the node
    ``rabbitmqctl`` talks to listens there, so that vhosts are not made on another broker.
    """

    def __init__(
        self,
        user: str,
        *,
        expected_port: int | None = None,
        executable: str = "rabbitmqctl",
        timeout: float = _ADMIN_TIMEOUT,
    ) -> None:
        super().__init__(user)
        self.expected_port = expected_port
        self.executable = executable
        self._timeout = timeout

    def describe(self) -> str:
        return f"local {self.executable}"

    def _exec(self, args: Sequence[str], stdin: str | None) -> tuple[int, str]:
        """Run ``rabbitmqctl *args``: exit code and output (stdout, or stderr on failure)."""
        try:
            done = subprocess.run(
                [self.executable, *args],
                input=stdin,
                capture_output=True,
                text=True,
                encoding="utf-8",
                errors="replace",
                timeout=self._timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise VhostAdminError(f"{self.describe()} {' '.join(args)}: {exc}") from None
        if done.returncode != 0:
            return done.returncode, (done.stderr.strip() or done.stdout.strip())
        return 0, done.stdout

    def _ctl(self, *args: str, stdin: str | None = None, missing_ok: bool = False) -> str:
        code, output = self._exec(args, stdin)
        if code == 0:
            return output
        if missing_ok and "does not exist" in output:
            return ""
        raise VhostAdminError(
            f"{self.describe()} {' '.join(args)} exited with status {code}: {output[:500]}"
        )

    def probe(self) -> None:
        status = dict(_parse_ctl_json(self._ctl("status", "--formatter", "json", "--quiet")))
        if self.expected_port is None or "listeners" not in status:
            return
        listeners = [dict(listener) for listener in status["listeners"]]
        # "amqp" and "amqp/ssl"; not "clustering", "http", "stomp", ...
        amqp = [lst for lst in listeners if str(lst.get("protocol", "")).startswith("amqp")]
        ports = sorted({int(lst["port"]) for lst in amqp})
        if self.expected_port not in ports:
            raise VhostAdminError(
                f"{self.describe()} manages a node listening for AMQP on {ports}, "
                f"not on port {self.expected_port}: it is another broker"
            )

    def create_vhost(self, vhost: str) -> None:
        # One import instead of add_vhost + set_permissions: one Erlang start-up, not two.
        definitions = {
            "vhosts": [{"name": vhost}],
            "permissions": [{"user": self.user, "vhost": vhost, **_FULL_PERMISSIONS}],
        }
        stdin = json.dumps(definitions)
        self._ctl("import_definitions", "--format", "json", "--quiet", stdin=stdin)

    def delete_vhost(self, vhost: str) -> None:
        self._ctl("delete_vhost", "--quiet", vhost, missing_ok=True)

    def list_vhosts(self) -> list[str]:
        output = self._ctl("list_vhosts", "name", "--formatter", "json", "--quiet")
        return [str(row["name"]) for row in _ctl_rows(output)]

    def queues(self, vhost: str) -> list[QueueInfo]:
        columns = ("name", "durable", "auto_delete", "exclusive", "arguments")
        output = self._ctl("list_queues", "-p", vhost, *columns, "--formatter", "json", "--quiet")
        queues = [
            QueueInfo(
                name=row["name"],
                vhost=vhost,
                durable=bool(row["durable"]),
                auto_delete=bool(row["auto_delete"]),
                exclusive=row.get("exclusive"),
                arguments=_ctl_table(row["arguments"]),
            )
            for row in _ctl_rows(output)
        ]
        return sorted(queues, key=lambda q: q["name"])

    def bindings(self, vhost: str) -> list[BindingInfo]:
        columns = (
            "source_name",
            "destination_name",
            "destination_kind",
            "routing_key",
            "arguments",
        )
        output = self._ctl("list_bindings", "-p", vhost, *columns, "--formatter", "json", "--quiet")
        return _sorted_bindings(
            [
                BindingInfo(
                    source=row["source_name"],
                    destination=row["destination_name"],
                    destination_type=row["destination_kind"],
                    routing_key=row["routing_key"],
                    arguments=_ctl_table(row["arguments"]),
                )
                for row in _ctl_rows(output)
            ]
        )


class ContainerLike(Protocol):
    """What this module needs of a testcontainers ``RabbitMqContainer``."""

    def exec(self, command: list[str]) -> Any: ...

    def stop(self) -> None: ...

    def get_container_host_ip(self) -> str: ...

    def get_exposed_port(self, port: int) -> int: ...


class ContainerRabbitmqctlAdmin(RabbitmqctlAdmin):
    """``rabbitmqctl`` run inside a testcontainers container with ``container.exec``."""

    def __init__(self, container: ContainerLike, user: str) -> None:
        # The container maps its ports: the URL's port says nothing about the node's listeners.
        super().__init__(user, expected_port=None)
        self.container = container

    def describe(self) -> str:
        return "rabbitmqctl in the container"

    def _exec(self, args: Sequence[str], stdin: str | None) -> tuple[int, str]:
        if stdin is not None:
            raise VhostAdminError(f"{self.describe()}: cannot pass standard input")
        try:
            result = self.container.exec([self.executable, *args])
        except Exception as exc:  # docker raises its own hierarchy; any failure is a reason
            raise VhostAdminError(f"{self.describe()} {' '.join(args)}: {exc}") from None
        output = bytes(result.output or b"").decode("utf-8", "replace")
        return int(result.exit_code or 0), output

    def create_vhost(self, vhost: str) -> None:
        # container.exec has no standard input, so no import_definitions here.
        self._ctl("add_vhost", "--quiet", vhost)
        self._ctl("set_permissions", "--quiet", "-p", vhost, self.user, ".*", ".*", ".*")


def choose_vhost_admin(url: str, container: ContainerLike | None = None) -> VhostAdmin:
    """The first admin that works for the broker of ``url``, or :class:`VhostAdminError`.

    Tried in order: the management API (``AMQP_MANAGEMENT_URL``, else the container's mapped
    port 15672, else port 15672 of the URL's host), the local ``rabbitmqctl`` (only for a
    loopback host and no container), then ``rabbitmqctl`` inside the container.
    """
    target = _target(url)
    candidates: list[VhostAdmin] = []
    reasons: list[str] = []

    management_url = os.environ.get(ENV_MANAGEMENT_URL) or None
    if management_url is None and container is not None:
        try:
            host = _host_in_url(container.get_container_host_ip())
            port = container.get_exposed_port(MANAGEMENT_PORT)
            management_url = f"http://{host}:{port}/api"
        except Exception as exc:  # e.g. the image does not expose 15672
            reasons.append(f"management API of the container: {exc}")
    if management_url is not None or container is None:
        candidates.append(ManagementApiAdmin.for_url(url, management_url))

    if container is not None:
        candidates.append(ContainerRabbitmqctlAdmin(container, target.username))
    elif not _is_loopback(target.host):
        reasons.append(f"local rabbitmqctl: {target.host} is not a loopback address")
    elif shutil.which("rabbitmqctl") is None:
        reasons.append("local rabbitmqctl: not found on PATH")
    else:
        candidates.append(RabbitmqctlAdmin(target.username, expected_port=target.port))

    for admin in candidates:
        started = time.monotonic()
        try:
            admin.probe()
        except VhostAdminError as exc:
            logger.debug("vhost admin %s unusable: %s", admin.describe(), exc)
            reasons.append(str(exc))
            continue
        logger.info(
            "managing vhosts of %s with %s (probe took %.2f s)",
            redact(url),
            admin.describe(),
            time.monotonic() - started,
        )
        return admin
    lines = "\n".join(f"  - {reason}" for reason in reasons)
    raise VhostAdminError(
        f"cannot create vhosts on {redact(url)}:\n{lines}\n"
        f"Enable the management plugin (rabbitmq-plugins enable rabbitmq_management), set "
        f"{ENV_MANAGEMENT_URL}, or run the tests where rabbitmqctl can reach the broker."
    )


class VhostView:
    """A :class:`VhostAdmin` bound to one vhost: what a test inspects its topology with."""

    def __init__(self, admin: VhostAdmin, vhost: str, url: str) -> None:
        self.admin = admin
        self.vhost = vhost
        self.url = url

    def queues(self) -> list[QueueInfo]:
        """Queues of this vhost sorted by name."""
        return self.admin.queues(self.vhost)

    def queue(self, name: str) -> QueueInfo:
        """The queue called ``name``; :class:`LookupError` naming the queues there if none."""
        queues = self.queues()
        for queue in queues:
            if queue["name"] == name:
                return queue
        names = ", ".join(repr(q["name"]) for q in queues) or "none"
        raise LookupError(f"no queue {name!r} in vhost {self.vhost!r} (queues: {names})")

    def bindings(self) -> list[BindingInfo]:
        """Bindings of this vhost, default-exchange ones included."""
        return self.admin.bindings(self.vhost)

    def __repr__(self) -> str:
        return f"<VhostView {self.vhost!r} via {self.admin.describe()}>"


# --------------------------------------------------------------------------------------------
# Finding a broker


@dataclass
class BrokerHandle:
    """A broker found for a test session: its URL, how to manage its vhosts, its container."""

    url: str
    admin: VhostAdmin | None = None
    container: ContainerLike | None = None
    _admin_error: VhostAdminError | None = field(default=None, init=False, repr=False)
    _live_vhosts: set[str] = field(default_factory=set, init=False, repr=False)

    def vhost_admin(self) -> VhostAdmin:
        """:attr:`admin`, chosen by :func:`choose_vhost_admin` on first use and remembered."""
        if self.admin is None:
            # Probing costs up to a second; a failure is remembered rather than retried.
            if self._admin_error is None:
                try:
                    self.admin = choose_vhost_admin(self.url, self.container)
                except VhostAdminError as exc:
                    self._admin_error = exc
            if self.admin is None:
                assert self._admin_error is not None
                raise self._admin_error
        return self.admin

    def create_vhost(self, vhost: str | None = None) -> str:
        """Create ``vhost`` (default: :func:`new_vhost_name`) and return its name."""
        admin = self.vhost_admin()
        vhost = vhost or new_vhost_name()
        started = time.monotonic()
        admin.create_vhost(vhost)
        self._live_vhosts.add(vhost)
        logger.debug("created vhost %s in %.2f s", vhost, time.monotonic() - started)
        return vhost

    def delete_vhost(self, vhost: str) -> None:
        """Delete ``vhost``; one that does not exist is no error."""
        started = time.monotonic()
        self.vhost_admin().delete_vhost(vhost)
        self._live_vhosts.discard(vhost)
        logger.debug("deleted vhost %s in %.2f s", vhost, time.monotonic() - started)

    def close(self) -> None:
        """Delete vhosts whose deletion failed earlier, then stop the container if any."""
        for vhost in sorted(self._live_vhosts):
            try:
                self.delete_vhost(vhost)
            except VhostAdminError as exc:
                logger.warning("vhost %s is left on the broker: %s", vhost, exc)
        if self.container is not None:
            container, self.container = self.container, None
            try:
                container.stop()
            except Exception:  # the session is over: log, do not mask a test failure
                logger.warning("could not stop the RabbitMQ container", exc_info=True)


def _start_container() -> tuple[ContainerLike, str]:
    """Start a RabbitMQ container with testcontainers: the container and its AMQP URL."""
    image = os.environ.get(ENV_CONTAINER_IMAGE) or DEFAULT_CONTAINER_IMAGE
    with warnings.catch_warnings():
        # testcontainers warns about its own deprecated internals on import.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from testcontainers.community.rabbitmq import RabbitMqContainer
        except ImportError:  # testcontainers before 4.15 kept it at the top level
            from testcontainers.rabbitmq import RabbitMqContainer
    logger.info("starting a RabbitMQ container from %s", image)
    container = RabbitMqContainer(image)
    container.with_exposed_ports(MANAGEMENT_PORT)
    try:
        container.start()
        host = _host_in_url(container.get_container_host_ip())
        port = container.get_exposed_port(container.port)
    except BaseException:
        with contextlib.suppress(Exception):
            container.stop()
        raise
    user, password = quote(container.username, safe=""), quote(container.password, safe="")
    return container, f"amqp://{user}:{password}@{host}:{port}/"


def find_broker(require: bool = False) -> BrokerHandle | None:
    """Find a broker: ``AMQP_URL``, else :data:`DEFAULT_AMQP_URL`, else a container.

    When none answers, return None, or with ``require`` raise :class:`BrokerNotFoundError`
    listing each URL tried and why the container could not start. When ``AMQP_URL`` is set
    nothing else is tried: the tests would otherwise run against a broker nobody chose.
    """
    reasons: list[str] = []
    explicit = os.environ.get(ENV_AMQP_URL)
    if explicit:
        try:
            problem = _tcp_problem(explicit, timeout=2.0)
        except ConfigurationError as exc:  # a malformed URL is a reason too, not a crash
            problem = str(exc)
        if problem is None:
            logger.info("using the broker of %s: %s", ENV_AMQP_URL, redact(explicit))
            return BrokerHandle(explicit)
        reasons.append(f"{ENV_AMQP_URL}={redact(explicit)} does not answer: {problem}")
    else:
        problem = _tcp_problem(DEFAULT_AMQP_URL, timeout=2.0)
        if problem is None:
            logger.info("using the local broker at %s", redact(DEFAULT_AMQP_URL))
            return BrokerHandle(DEFAULT_AMQP_URL)
        reasons.append(f"{redact(DEFAULT_AMQP_URL)} does not answer: {problem}")
        try:
            container, url = _start_container()
        except ImportError as exc:
            reasons.append(
                f"testcontainers is not installed ({exc}): pip install 'testcontainers[rabbitmq]'"
            )
        except Exception as exc:  # Docker missing, image pull failed, start timed out, ...
            detail = " ".join(str(exc).split())[:300]
            reasons.append(f"no RabbitMQ container could start: {type(exc).__name__}: {detail}")
        else:
            logger.info("using the RabbitMQ container at %s", redact(url))
            return BrokerHandle(url, container=container)
    error = BrokerNotFoundError(reasons)
    if require:
        raise error
    logger.info("%s", error)
    return None
