"""Connecting to Ray: one place for the optional import, the address check and the
dashboard line. Every failure is one line (`UserError`): Ray not installed, an address
nothing listens on, no cluster to join with `auto`."""

from __future__ import annotations

import socket
from typing import Any

from distillery.errors import UserError
from distillery.executors.config import RayConfig

NOT_INSTALLED = (
    "executor ray needs the ray extra: `make install EXTRAS=ray` "
    "(or `pip install -e '.[ray]'`); executor local needs nothing"
)


def import_ray() -> Any:
    """The `ray` module, or a one-line `UserError` saying how to install it."""
    try:
        import ray
        import ray.data  # the filter's executor is Ray Data
    except ImportError:
        raise UserError(NOT_INSTALLED) from None
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of `ray://HOST:PORT` or `HOST:PORT`; None for '' and 'auto'."""
    if address in ("", "auto"):
        return None
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        raise UserError(f"ray.address {address!r}: expected auto, ray://HOST:PORT or HOST:PORT")
    return host, int(port)


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    where = _host_port(address)
    if where is None:
        return
    try:
        socket.create_connection(where, timeout=timeout_s).close()
    except OSError as exc:
        raise UserError(
            f"ray.address {address}: cannot reach {where[0]}:{where[1]} ({exc.strerror or exc}); "
            "is the cluster up (`ray start --head`)?"
        ) from None


def _quiet_ray_data() -> None:
    """Ray Data's progress log (INFO lines every few seconds per dataset, where stderr is
    not a terminal) off: the steps print their own progress (`jobs.progress_bar`); Ray
    Data's warnings still show."""
    import logging

    logging.getLogger("ray.data").setLevel(logging.WARNING)


def connect(config: RayConfig) -> Any:
    """Joins (or starts) Ray once per process and prints the dashboard address when there is
    one. A process that already called `ray.init` (a test, a notebook) keeps its instance."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    _check_reachable(config.address)
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    if config.address:
        kwargs["address"] = config.address
    elif config.num_cpus is not None:
        kwargs["num_cpus"] = config.num_cpus
    try:
        context = ray.init(**kwargs)
    except ConnectionError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"ray.address {config.address or '(local)'}: {first}") from None
    _quiet_ray_data()
    where = config.address or "a local Ray instance"
    dashboard = getattr(context, "dashboard_url", None)
    shown = f"; dashboard: http://{dashboard}" if dashboard else " (no dashboard)"
    print(f"ray: connected to {where}{shown}")
    return ray
