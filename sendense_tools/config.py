"""TOML configuration loading shared by every daemon.

Every key has a default and unknown keys are an error, so a typo in a role
variable fails at start-up with the key's name instead of being ignored.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from sendense_tools.errors import ConfigError


class Strict(BaseModel):
    """Base for config sections: unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _parse_port_range(value: object) -> tuple[int, int]:
    if isinstance(value, tuple | list) and len(value) == 2:
        lo, hi = int(value[0]), int(value[1])
    elif isinstance(value, str) and "-" in value:
        a, _, b = value.partition("-")
        try:
            lo, hi = int(a), int(b)
        except ValueError:
            raise ValueError(f"port range {value!r} is not 'LOW-HIGH'") from None
    elif isinstance(value, int | str):
        lo = hi = int(value)
    else:
        raise ValueError(f"port range {value!r} is not 'LOW-HIGH'")
    if not (1 <= lo <= hi <= 65535):
        raise ValueError(f"port range {lo}-{hi} is out of 1-65535 or reversed")
    return lo, hi


PortRange = Annotated[tuple[int, int], BeforeValidator(_parse_port_range)]


def _parse_hostport(value: object) -> tuple[str, int]:
    if isinstance(value, tuple | list) and len(value) == 2:
        return str(value[0]), int(value[1])
    if not isinstance(value, str) or ":" not in value:
        raise ValueError(f"address {value!r} is not 'HOST:PORT'")
    host, _, port = value.rpartition(":")
    try:
        p = int(port)
    except ValueError:
        raise ValueError(f"address {value!r} has no numeric port") from None
    if not 0 <= p <= 65535:
        raise ValueError(f"address {value!r} has a port out of range")
    return host.strip("[]") or "127.0.0.1", p


HostPort = Annotated[tuple[str, int], BeforeValidator(_parse_hostport)]


def port_list(rng: tuple[int, int]) -> list[int]:
    return list(range(rng[0], rng[1] + 1))


M = TypeVar("M", bound=BaseModel)


def load_config(path: str | Path, model: type[M]) -> M:
    """Read a TOML file into `model`, raising ConfigError with one readable line."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except PermissionError:
        raise ConfigError(f"config file {p} is not readable") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
    return parse_config(data, model, source=str(p))


def parse_config(data: dict, model: type[M], source: str = "config") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top)"
        msg = first["msg"]
        if first["type"] == "extra_forbidden":
            msg = "unknown key"
        raise ConfigError(f"{source}: {where}: {msg}") from None


def read_secret(path: str | Path, what: str) -> str:
    """Read a one-line secret, refusing files that others can read."""
    p = Path(path)
    try:
        mode = p.stat().st_mode & 0o777
        text = p.read_text().strip()
    except FileNotFoundError:
        raise ConfigError(f"{what} file {p} does not exist") from None
    except PermissionError:
        raise ConfigError(f"{what} file {p} is not readable") from None
    if mode & 0o077:
        raise ConfigError(f"{what} file {p} has mode {mode:04o}; it must be 0600 or stricter")
    if not text:
        raise ConfigError(f"{what} file {p} is empty")
    return text
