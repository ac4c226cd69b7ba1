"""Find a real RabbitMQ for tests, and how to manage its vhosts.

Nothing here imports pytest: scripts and other test runners can use it too. The broker is
searched in this order (see :func:`find_broker`):

1. ``AMQP_URL`` when set: an explicit choice, so nothing else is tried when it does not answer;
2. :data:`DEFAULT_AMQP_URL`, a broker on this machine;
3. a throw-away container started with testcontainers (needs Docker).

Vhosts are created and deleted by a ``VhostAdmin``; :func:`choose_vhost_admin` tries the
management HTTP API (``_management_api``), then the local ``rabbitmqctl``, then ``rabbitmqctl``
inside the container (``_rabbitmqctl``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from .._errors import AmqpEventsError, ConfigurationError
from .._url import redact
from ._management_api import ENV_MANAGEMENT_URL, MANAGEMENT_PORT, ManagementApiAdmin
from ._rabbitmqctl import ContainerLike, ContainerRabbitmqctlAdmin, RabbitmqctlAdmin
from ._urls import (
    DEFAULT_AMQP_URL,
    ENV_AMQP_URL,
    amqp_target,
    host_in_url,
    is_loopback,
    tcp_problem,
    url_with_vhost,
)
from ._vhost_admin import VhostAdmin, VhostAdminError, VhostView

__all__ = [
    "DEFAULT_CONTAINER_IMAGE",
    "ENV_CONTAINER_IMAGE",
    "BrokerHandle",
    "BrokerNotFoundError",
    "choose_vhost_admin",
    "find_broker",
]

logger = logging.getLogger(__name__)

# Vhosts deleted together by delete_vhost_later: a test's vhost lives on for at most this many
# more tests (its connections are closed by then), for one rabbitmqctl call per batch.
DELETE_BATCH = 24
DEFAULT_CONTAINER_IMAGE = "rabbitmq:4.1-management"  # the same as docker-compose.yml
ENV_CONTAINER_IMAGE = "AMQP_EVENTS_RABBITMQ_IMAGE"


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


def choose_vhost_admin(url: str, container: ContainerLike | None = None) -> VhostAdmin:
    """The first admin that works for the broker of ``url``, or :class:`VhostAdminError`.

    Tried in order: the management API (``AMQP_MANAGEMENT_URL``, else the container's mapped
    port 15672, else port 15672 of the URL's host), the local ``rabbitmqctl`` (only for a
    loopback host and no container), then ``rabbitmqctl`` inside the container.
    """
    target = amqp_target(url)
    candidates: list[VhostAdmin] = []
    reasons: list[str] = []

    management_url = os.environ.get(ENV_MANAGEMENT_URL) or None
    if management_url is None and container is not None:
        try:
            host = host_in_url(container.get_container_host_ip())
            port = container.get_exposed_port(MANAGEMENT_PORT)
            management_url = f"http://{host}:{port}/api"
        except Exception as exc:  # e.g. the image does not expose 15672
            reasons.append(f"management API of the container: {exc}")
    if management_url is not None or container is None:
        candidates.append(ManagementApiAdmin.for_url(url, management_url))

    if container is not None:
        candidates.append(ContainerRabbitmqctlAdmin(container, target.username))
    elif not is_loopback(target.host):
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


@dataclass
class BrokerHandle:
    """A broker found by :func:`find_broker`: its URL, its vhosts, its container.

    What the plugin's fixtures use; outside pytest::

        broker = find_broker(require=True)
        vhost = broker.create_vhost()
        async with Connection("orders", broker.vhost_url(vhost)) as orders: ...
        broker.delete_vhost(vhost)
        broker.close()  # deletes vhosts left over, stops the container if one was started
    """

    url: str
    admin: VhostAdmin | None = None
    container: ContainerLike | None = None
    _admin_error: VhostAdminError | None = field(default=None, init=False, repr=False)
    _live_vhosts: set[str] = field(default_factory=set, init=False, repr=False)
    _done_vhosts: list[str] = field(default_factory=list, init=False, repr=False)

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
        started = time.monotonic()
        if vhost is None:
            vhost = admin.create_fresh_vhost()
        else:
            admin.create_vhost(vhost)
        self._live_vhosts.add(vhost)
        logger.debug("created vhost %s in %.2f s", vhost, time.monotonic() - started)
        return vhost

    def vhost_url(self, vhost: str) -> str:
        """:attr:`url` pointing into ``vhost``."""
        return url_with_vhost(self.url, vhost)

    def vhost_view(self, vhost: str) -> VhostView:
        """``vhost``'s queues and bindings, as the ``amqp_events_rabbitmq_admin`` fixture shows
        them."""
        return VhostView(self.vhost_admin(), vhost, self.vhost_url(vhost))

    def delete_vhost(self, vhost: str) -> None:
        """Delete ``vhost``; one that does not exist is no error."""
        started = time.monotonic()
        self.vhost_admin().delete_vhost(vhost)
        self._live_vhosts.discard(vhost)
        logger.debug("deleted vhost %s in %.2f s", vhost, time.monotonic() - started)

    def delete_vhost_later(self, vhost: str) -> None:
        """Delete ``vhost`` with others, a batch at a time (``rabbitmqctl`` deletes a batch
        with one Erlang start-up instead of one each), at the latest by :meth:`close`. For a
        vhost nothing uses any more, whose name is never handed out again."""
        self._done_vhosts.append(vhost)
        if len(self._done_vhosts) >= DELETE_BATCH:
            self._delete_done()

    def _delete_done(self) -> None:
        done, self._done_vhosts = self._done_vhosts, []
        if not done:
            return
        started = time.monotonic()
        try:
            self.vhost_admin().delete_vhosts(done)
        except VhostAdminError as exc:
            logger.warning("vhosts %s: deleting them failed: %s", ", ".join(done), exc)
            return  # still in _live_vhosts: close() tries one by one
        self._live_vhosts.difference_update(done)
        logger.debug("deleted %d vhosts in %.2f s", len(done), time.monotonic() - started)

    def close(self) -> None:
        """Delete vhosts left for later, whose deletion failed earlier or that were made
        ahead and never used, then stop the container if any."""
        if self.admin is not None:
            unused = self.admin.unused_vhosts()
            self._live_vhosts.update(unused)
            self._done_vhosts.extend(unused)  # one batch with the used ones, not one call each
        self._delete_done()
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
        host = host_in_url(container.get_container_host_ip())
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
            problem = tcp_problem(explicit, timeout=2.0)
        except ConfigurationError as exc:  # a malformed URL is a reason too, not a crash
            problem = str(exc)
        if problem is None:
            logger.info("using the broker of %s: %s", ENV_AMQP_URL, redact(explicit))
            return BrokerHandle(explicit)
        reasons.append(f"{ENV_AMQP_URL}={redact(explicit)} does not answer: {problem}")
    else:
        problem = tcp_problem(DEFAULT_AMQP_URL, timeout=2.0)
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
