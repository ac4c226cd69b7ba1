"""Loading an APP: ``module:attribute``, the attribute a ``Connection`` or a factory of one.

As uvicorn and FastStream do: the module is imported with the current directory on
``sys.path``; the attribute may be dotted (``module:services.orders``); a factory is any callable
taking no argument, sync or async, that returns a ``Connection``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from .._connection import Connection
from .._errors import AmqpEventsError
from .._url import URL_ENVIRONMENT_VARIABLE, check_urls
from ._errors import CliError

__all__ = ["app_directory", "import_app_module", "load_app", "override_url", "use_url"]


def _split(spec: str) -> tuple[str, str]:
    module, sep, attribute = spec.partition(":")
    if not sep or not module or not attribute:
        raise CliError(
            f"APP {spec!r} must be 'module:attribute' (e.g. 'myservice.main:conn'), the "
            "attribute a Connection or a function returning one"
        )
    return module, attribute


def import_app_module(spec: str) -> ModuleType:
    """The module of ``spec``, imported; every failure is a CliError naming it."""
    module_name, _ = _split(spec)
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise CliError(
                f"APP {spec!r}: no module named {exc.name!r} (run from the directory that "
                "holds it, or install it)"
            ) from None
        raise CliError(f"APP {spec!r}: importing {module_name!r} failed: {exc}") from None
    except AmqpEventsError as exc:
        raise CliError(f"APP {spec!r}: {exc}") from None
    except Exception as exc:
        raise CliError(
            f"APP {spec!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from None


def app_directory(spec: str) -> Path:
    """The directory of the APP's module file (what ``run --reload`` watches)."""
    module = import_app_module(spec)
    file = getattr(module, "__file__", None)
    return Path(file).resolve().parent if file else Path.cwd()


async def load_app(spec: str) -> Connection:
    """The ``Connection`` that ``spec`` names, made by its factory if it names one."""
    module = import_app_module(spec)
    _, attribute = _split(spec)
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CliError(
                f"APP {spec!r}: module {module.__name__!r} has no attribute {attribute!r}"
            ) from None
    if isinstance(target, Connection):
        return target
    if not callable(target):
        raise CliError(
            f"APP {spec!r} is a {type(target).__name__}, not a Connection nor a function "
            "returning one"
        )
    try:
        made = target()
        if inspect.isawaitable(made):
            made = await made
    except AmqpEventsError as exc:
        raise CliError(f"APP {spec!r}: {exc}") from None
    except TypeError as exc:
        raise CliError(f"APP {spec!r}: calling the factory failed: {exc}") from None
    except Exception as exc:
        raise CliError(f"APP {spec!r}: the factory raised {type(exc).__name__}: {exc}") from None
    if not isinstance(made, Connection):
        raise CliError(
            f"APP {spec!r}: the factory returned a {type(made).__name__}, not a Connection"
        )
    return made


def use_url(url: str | None, source: str = "--url") -> str | None:
    """Check ``url`` and make it the ``AMQP_URL`` that the APP's connections default to."""
    if url is None:
        return None
    try:
        check_urls(url)
    except AmqpEventsError as exc:
        raise CliError(f"{source}: {exc}") from None
    os.environ[URL_ENVIRONMENT_VARIABLE] = url
    return url


def override_url(connection: Connection, url: str) -> None:
    """Point a connection that is not started yet at ``url`` (``run --url``), whatever URL
    the APP gave it."""
    if connection.state != "new":
        raise CliError(
            f"APP: connection {connection.service_name!r} is already {connection.state}; "
            "the CLI starts it itself"
        )
    urls = check_urls(url)
    connection._urls = urls
    connection._url = ",".join(urls)
