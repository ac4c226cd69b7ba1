"""Vhost administration with ``rabbitmqctl``: the local one, or the one inside a testcontainers
container (``container.exec``), and the parsing of its JSON output."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Protocol

from .._transport.memory._info import BindingInfo, ExchangeInfo, QueueInfo
from ._urls import new_vhost_name
from ._vhost_admin import (
    ADMIN_TIMEOUT,
    EXCHANGE_COLUMNS,
    FULL_PERMISSIONS,
    QUEUE_COLUMNS,
    VhostAdmin,
    VhostAdminError,
    exchange_info,
    queue_bindings,
    queue_info,
)

__all__ = ["ContainerLike", "ContainerRabbitmqctlAdmin", "RabbitmqctlAdmin"]


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


# Fresh vhosts made per rabbitmqctl call: each call starts an Erlang VM (~0.6 s), so a test
# session's vhosts come 8 at a time; at most 7 are made and never used.
MADE_AHEAD = 24
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")


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
        timeout: float = ADMIN_TIMEOUT,
    ) -> None:
        super().__init__(user)
        self.expected_port = expected_port
        self.executable = executable
        self._timeout = timeout
        self._made_ahead: list[str] = []  # fresh vhosts, made in batches: one Erlang start each

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
        self._import_vhosts([vhost])

    def create_fresh_vhost(self) -> str:
        if not self._made_ahead:
            names = [new_vhost_name() for _ in range(MADE_AHEAD)]
            self._import_vhosts(names)
            self._made_ahead.extend(names)
        return self._made_ahead.pop()

    def unused_vhosts(self) -> list[str]:
        unused, self._made_ahead = self._made_ahead, []
        return unused

    def _import_vhosts(self, vhosts: Sequence[str]) -> None:
        definitions = {
            "vhosts": [{"name": vhost} for vhost in vhosts],
            "permissions": [
                {"user": self.user, "vhost": vhost, **FULL_PERMISSIONS} for vhost in vhosts
            ],
        }
        self._ctl(
            "import_definitions", "--format", "json", "--quiet", stdin=json.dumps(definitions)
        )

    def delete_vhost(self, vhost: str) -> None:
        self._ctl("delete_vhost", "--quiet", vhost, missing_ok=True)

    def delete_vhosts(self, vhosts: Sequence[str]) -> None:
        # One Erlang start-up for all of them, through the broker's own vhost deletion (what
        # delete_vhost calls); names that need quoting, or a node where that call fails, go
        # one by one.
        plain = all(_PLAIN_NAME.fullmatch(name) for name in (self.user, *vhosts))
        if len(vhosts) < 2 or not plain:
            super().delete_vhosts(vhosts)
            return
        names = ", ".join(f'<<"{v}">>' for v in vhosts)
        expression = f'_ = [catch rabbit_vhost:delete(V, <<"{self.user}">>) || V <- [{names}]], ok.'
        try:
            self._ctl("eval", expression)
        except VhostAdminError:
            super().delete_vhosts(vhosts)

    def list_vhosts(self) -> list[str]:
        output = self._ctl("list_vhosts", "name", "--formatter", "json", "--quiet")
        return [str(row["name"]) for row in _ctl_rows(output)]

    def _list(self, command: str, vhost: str, columns: Sequence[str]) -> list[dict[str, Any]]:
        """``rabbitmqctl <command> -p <vhost> <columns>``: one dict per row."""
        output = self._ctl(command, "-p", vhost, *columns, "--formatter", "json", "--quiet")
        return _ctl_rows(output)

    def queues(self, vhost: str) -> list[QueueInfo]:
        queues = [
            queue_info(row, _ctl_table(row["arguments"]))
            for row in self._list("list_queues", vhost, QUEUE_COLUMNS)
        ]
        return sorted(queues, key=lambda q: q.name)

    def exchanges(self, vhost: str) -> list[ExchangeInfo]:
        exchanges = [
            exchange_info(row, _ctl_table(row["arguments"]))
            for row in self._list("list_exchanges", vhost, EXCHANGE_COLUMNS)
        ]
        return sorted(exchanges, key=lambda x: x.name)

    def bindings(self, vhost: str) -> list[BindingInfo]:
        columns = (
            "source_name",
            "destination_name",
            "destination_kind",
            "routing_key",
            "arguments",
        )
        return queue_bindings(
            (
                row["source_name"],
                row["destination_name"],
                row["destination_kind"],
                row["routing_key"],
                _ctl_table(row["arguments"]),
            )
            for row in self._list("list_bindings", vhost, columns)
        )


class ContainerLike(Protocol):
    """What the vhost admins and ``find_broker`` need of a testcontainers ``RabbitMqContainer``."""

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
