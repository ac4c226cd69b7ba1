"""Vhost administration over the RabbitMQ management plugin's HTTP API (standard library only)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from .._transport.memory._info import BindingInfo, ExchangeInfo, QueueInfo
from ._urls import amqp_target, host_in_url, is_loopback
from ._vhost_admin import (
    ADMIN_TIMEOUT,
    FULL_PERMISSIONS,
    PROBE_TIMEOUT,
    VhostAdmin,
    VhostAdminError,
    exchange_info,
    queue_bindings,
    queue_info,
)

__all__ = ["ENV_MANAGEMENT_URL", "MANAGEMENT_PORT", "ManagementApiAdmin"]

ENV_MANAGEMENT_URL = "AMQP_MANAGEMENT_URL"
MANAGEMENT_PORT = 15672


class ManagementApiAdmin(VhostAdmin):
    """Vhost admin over the management plugin's HTTP API (standard library only).

    It logs in as ``user``, unless ``api_url`` carries credentials of its own (an admin
    account, say): then those log in and ``user`` is only granted the permissions.
    """

    def __init__(
        self, api_url: str, user: str, password: str, timeout: float = ADMIN_TIMEOUT
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
        handlers = [urllib.request.ProxyHandler({})] if is_loopback(host) else []
        self._opener = urllib.request.build_opener(*handlers)

    @classmethod
    def for_url(cls, amqp_url: str, management_url: str | None = None) -> ManagementApiAdmin:
        """The admin for the broker of ``amqp_url``: ``management_url``, else its port 15672."""
        target = amqp_target(amqp_url)
        if management_url is None:
            management_url = f"http://{host_in_url(target.host)}:{MANAGEMENT_PORT}/api"
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
        whoami = self._request("GET", "/whoami", timeout=PROBE_TIMEOUT)
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
        self._request("PUT", f"/permissions/{name}/{quote(self.user, safe='')}", FULL_PERMISSIONS)

    def delete_vhost(self, vhost: str) -> None:
        self._request("DELETE", f"/vhosts/{quote(vhost, safe='')}", ok_statuses=(404,))

    def list_vhosts(self) -> list[str]:
        return [str(v["name"]) for v in self._request("GET", "/vhosts") or []]

    def _rows(self, kind: str, vhost: str) -> list[dict[str, Any]]:
        """``GET /api/<kind>/<vhost>``: the objects listed (none for an unknown vhost)."""
        return list(
            self._request("GET", f"/{kind}/{quote(vhost, safe='')}", ok_statuses=(404,)) or []
        )

    def queues(self, vhost: str) -> list[QueueInfo]:
        queues = [
            queue_info(row, _management_table(row.get("arguments")))
            for row in self._rows("queues", vhost)
        ]
        return sorted(queues, key=lambda q: q.name)

    def exchanges(self, vhost: str) -> list[ExchangeInfo]:
        exchanges = [
            exchange_info(row, _management_table(row.get("arguments")))
            for row in self._rows("exchanges", vhost)
        ]
        return sorted(exchanges, key=lambda x: x.name)

    def bindings(self, vhost: str) -> list[BindingInfo]:
        return queue_bindings(
            (
                row["source"],
                row["destination"],
                row["destination_type"],
                row["routing_key"],
                _management_table(row.get("arguments")),
            )
            for row in self._rows("bindings", vhost)
        )


def _management_table(value: object) -> dict[str, Any]:
    # Old management versions rendered an empty table as [].
    return dict(value) if isinstance(value, dict) else {}
