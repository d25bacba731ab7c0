"""What every command that talks to the hub API shares: its options, the call, the JSON
output, and following a job to its end."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar
from urllib.parse import urlencode

import click
from rich.console import Console

from sendense_tools.api.client import ApiCallError, ApiClient
from sendense_tools.config import read_secret
from sendense_tools.errors import SendenseError

DEFAULT_HUB_URL = "http://127.0.0.1:8082"
DEFAULT_TOKEN_FILE = "/etc/sendense/api-token"
FINAL = ("completed", "failed", "cancelled")
T = TypeVar("T")
POLL_SECONDS = 1.0
# The job goes on without us: a hub too busy to answer a poll in time, a 5xx or a
# tunnel that drops for a while ends the wait only when it lasts this long.
FOLLOW_GRACE_SECONDS = 300.0
# A chain longer than this is a loop in the records, not a history.
MAX_CHAIN = 10000
PIPE_WIDTH = 250

hub_option = click.option(
    "--hub",
    "hub_url",
    envvar="SENDENSE_HUB_URL",
    default=DEFAULT_HUB_URL,
    show_default=True,
    help="hub API URL (env SENDENSE_HUB_URL)",
)
token_option = click.option(
    "--token-file",
    envvar="SENDENSE_TOKEN_FILE",
    default=DEFAULT_TOKEN_FILE,
    show_default=True,
    help="API token file, mode 0600 (env SENDENSE_TOKEN_FILE)",
)
json_option = click.option("--json", "as_json", is_flag=True, help="print JSON")


async def call(
    hub_url: str,
    token_file: str,
    method: str,
    path: str,
    body: Any = None,
    seconds: float | None = 30.0,
) -> Any:
    """One API call, given `seconds` (None: as long as the hub takes: work done in the call)."""
    token = read_secret(token_file, "API token")
    async with ApiClient(hub_url, token, seconds) as api:
        return await api.request(method, path, body)


async def follow(
    hub_url: str, token_file: str, path: str, seen: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """Poll the job record at `path`, handing each to `seen`, until it has ended."""
    token = read_secret(token_file, "API token")
    async with ApiClient(hub_url, token) as api:
        failing_since: float | None = None
        while True:
            try:
                record = await api.get(path)
            except SendenseError as exc:
                if isinstance(exc, ApiCallError) and exc.status < 500:
                    raise
                now = time.monotonic()
                if failing_since is None:
                    failing_since = now
                    click.echo(f"sendense: warning: {exc}; still waiting", err=True)
                elif now - failing_since > FOLLOW_GRACE_SECONDS:
                    raise
                await asyncio.sleep(POLL_SECONDS)
                continue
            failing_since = None
            seen(record)
            if record["status"] in FINAL:
                return record
            await asyncio.sleep(POLL_SECONDS)


async def chain_of(api: ApiClient, backup_id: str) -> list[dict[str, Any]]:
    """The records of a point's chain, its full first: each point's parent, in turn."""
    chain: list[dict[str, Any]] = []
    current: str | None = backup_id
    while current is not None:
        if len(chain) >= MAX_CHAIN or current in {r["id"] for r in chain}:
            raise SendenseError(f"backup {backup_id}: its chain loops at {current}")
        record = await api.get(f"/api/v1/backups/{current}")
        chain.append(record)
        current = record.get("parent")
    return chain[::-1]


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def checksum_text(checksum: dict[str, Any] | None, sha256: str | None = None) -> str:
    """A checksum as a person reads it; a record from before checksums: its SHA-256."""
    if checksum:
        return f"{checksum['algorithm']}:{checksum['checksum']}"
    return f"sha256:{sha256}" if sha256 else ""


def list_path(path: str, filters: tuple[tuple[str, str | None], ...]) -> str:
    """A list route with the filters that are set as its query."""
    query = urlencode({k: v for k, v in filters if v})
    return path + (f"?{query}" if query else "")


def records_of(data: Any, key: str) -> list[dict[str, Any]]:
    """A list answer's records (an older hub wraps them: {key: [...]})."""
    if isinstance(data, dict):
        data = data.get(key, [])
    return list(data or [])


def raise_if_unsuccessful(kind: str, record: dict[str, Any]) -> None:
    """SendenseError (exit 1) when the job (`kind` "backup", "restore") failed or was cancelled."""
    if record["status"] in ("failed", "cancelled"):
        raise SendenseError(
            f"{kind} {record['id']} {record['status']}: {record.get('error') or 'no reason'}"
        )


class Refused(click.ClickException):
    """The hub said no to the request itself: bad usage, as far as the caller goes."""

    exit_code = 2


@contextlib.contextmanager
def refusals() -> Iterator[None]:
    """A 4xx answer of the hub as Refused (exit 2, its one-line message)."""
    try:
        yield
    except ApiCallError as exc:
        if 400 <= exc.status < 500:
            raise Refused(f"refused: {exc}") from None
        raise


def run_refusing(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(coro), with the hub's refusals as exit 2."""
    with refusals():
        return asyncio.run(coro)


def wide_console() -> Console:
    console = Console()
    # Off a terminal rich assumes 80 columns and would fold each id and checksum over lines.
    return console if console.is_terminal else Console(width=PIPE_WIDTH)
