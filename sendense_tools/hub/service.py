"""`sendense hub serve`: reconcile, serve the API, stop every qemu-nbd on the way out."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from sendense_tools import daemon
from sendense_tools.api.server import serve_app
from sendense_tools.config import load_config, parse_config, read_secret
from sendense_tools.errors import ConfigError
from sendense_tools.hub.allocator import SlotAllocator
from sendense_tools.hub.api import make_app
from sendense_tools.hub.config import HubConfig
from sendense_tools.hub.jobs import JobManager
from sendense_tools.hub.options import ExportOptions, effective_options
from sendense_tools.hub.store import Store

log = logging.getLogger(__name__)

# A reload changes the node table only: the other sections hold the listeners,
# the exports and the files in use, which only a restart can change.
RELOADED = "nodes"


def read_tokens(config: HubConfig) -> tuple[str, dict[str, str]]:
    """The admin token and each node's own token: never shared, never the admin's."""
    admin = read_secret(config.api.token_file, "API token")
    nodes: dict[str, str] = {}
    for node, entry in config.nodes.items():
        token = read_secret(entry.token_file, f"node {node} token")
        key = f"nodes.{node}.token_file"
        if token == admin:
            raise ConfigError(f"{key}: {entry.token_file} holds the admin token")
        same = next((other for other, t in nodes.items() if t == token), None)
        if same is not None:
            raise ConfigError(f"{key}: {entry.token_file} holds node {same}'s token")
        nodes[node] = token
    return admin, nodes


class Hub(daemon.Service):
    """The running hub; `async with Hub(config)` in tests, `serve()` in production.

    With `config_path`, reload() (SIGHUP) re-reads the node table from it.
    """

    reloadable = True

    def __init__(self, config: HubConfig, config_path: str | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.jobs: JobManager | None = None
        self._store: Store | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host, port = self.config.api.listen
        return f"http://{host}:{port}"

    @property
    def status(self) -> str:
        return f"serving {len(self.config.nodes)} nodes on {self.url}"

    async def start(self) -> str:
        cfg = self.config
        admin, node_tokens = read_tokens(cfg)
        options = await asyncio.to_thread(
            effective_options,
            ExportOptions(
                shared=cfg.nbd.shared,
                cache=cfg.nbd.cache,
                aio=cfg.nbd.aio,
                detect_zeroes=cfg.nbd.detect_zeroes,
                ready_timeout=cfg.nbd.ready_timeout,
            ),
            cfg.repository.path,
        )
        self._store = Store(cfg.state.db)
        nbd = cfg.nbd
        slots = SlotAllocator(
            nbd.port_range, nbd.max_exports, tcp_bind=nbd.bind if nbd.listen == "tcp" else None
        )
        self.jobs = JobManager(cfg, self._store, slots, options, node_tokens)
        failed = await self.jobs.reconcile()
        if failed:
            log.warning("marked %d unfinished backups failed: hub restarted", len(failed))
        restores = self.jobs.restores.reconcile()
        if restores:
            log.warning("marked %d unfinished restores failed: hub restarted", len(restores))
        host, port = cfg.api.listen
        try:
            self._runner = await serve_app(make_app(self.jobs, admin), host, port)
        except OSError as exc:
            self._store.close()
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        self.jobs.pruner.start_recovery()
        where = nbd.socket_dir if nbd.listen == "unix" else f"TCP {nbd.bind}"
        log.info(
            "hub API on %s; exports on %s (cache=%s aio=%s tls_psk=%s)",
            self.url, where, options.cache, options.aio, nbd.tls_psk,
        )  # fmt: skip
        return self.status

    async def reload(self) -> str:
        """Take the node table (and node tokens) from the config file again.

        A broken file raises ConfigError and changes nothing; the other sections
        keep their running values until a restart.
        """
        if self.config_path is None or self.jobs is None:
            raise ConfigError("the hub was started without a config file to re-read")
        new = load_config(self.config_path, HubConfig)
        stale = [
            section
            for section in HubConfig.model_fields
            if section != RELOADED and getattr(new, section) != getattr(self.config, section)
        ]
        if stale:
            log.warning(
                "%s: [%s] changed: needs a restart, keeping the running values",
                self.config_path, "], [".join(stale),
            )  # fmt: skip
        # Validated again: a node id must also fit the RUNNING socket directory.
        merged = parse_config(
            {**self.config.model_dump(), RELOADED: new.model_dump()[RELOADED]},
            HubConfig,
            source=self.config_path,
        )
        _, node_tokens = read_tokens(merged)
        before, after = set(self.config.nodes), set(merged.nodes)
        self.jobs.set_nodes(merged.nodes, node_tokens)
        self.config = merged
        log.info(
            "reloaded the node table: %d nodes (added: %s; removed: %s)",
            len(after), ", ".join(sorted(after - before)) or "none",
            ", ".join(sorted(before - after)) or "none",
        )  # fmt: skip
        return self.status

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.jobs is not None:
            await self.jobs.pruner.stop()
            await self.jobs.restores.shutdown()
            await self.jobs.shutdown()
        if self._store is not None:
            self._store.close()
            self._store = None

    async def __aenter__(self) -> Hub:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def serve(config_path: str) -> None:
    config = load_config(config_path, HubConfig)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(daemon.run(Hub(config, config_path), "hub"))
