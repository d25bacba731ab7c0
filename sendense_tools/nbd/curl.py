"""nbdkit curl's arguments for an https source: the plugin's, and the extent list that
tells the copy where the data is (datastore HTTP access cannot)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit


def nbdkit_curl_args(
    url: str,
    cookie_file: str | None = None,
    verify: bool | str = True,
    timeout: int | None = None,
    capath: str | None = None,
) -> list[str]:
    """Plugin arguments for nbdkit curl.

    `verify`: True checks the server certificate against the system CAs, a path checks it
    against the certificates in that file, False turns checking off (only when the user
    asked by name). `capath` replaces curl's default CA directory, which it would search
    besides `cainfo`: an empty one makes the file the only trust anchor.
    """
    scheme = urlsplit(url).scheme
    if scheme not in ("https", "http"):
        raise ValueError(f"{url}: only https:// (or http://) URLs are served")
    out = ["curl", f"url={url}", f"protocols={scheme}", "followlocation=false"]
    if cookie_file is not None:
        out.append(f"cookie=+{cookie_file}")
    if verify is False:
        out.append("sslverify=false")
    elif isinstance(verify, str):
        out.append(f"cainfo={verify}")
    if capath is not None:
        out.append(f"capath={capath}")
    if timeout is not None:
        out.append(f"timeout={timeout}")
    return out


def nbdkit_extentlist_args(extentlist: str | None) -> tuple[list[str], list[str]]:
    """The extentlist filter in front of nbdkit curl, and its parameter (none without a list).

    Datastore HTTP access cannot tell holes from data; the areas vCenter reports allocated
    (CBT) can, so the copy skips the rest instead of reading zeroes through TLS (measured
    here: a third of the simulator's CPU and 2.6x faster for a disk 38% allocated; a
    second connection per disk through the multi-conn filter gained nothing, as the
    simulator's https serving is what runs out of CPU).
    """
    if extentlist is None:
        return [], []
    return ["--filter=extentlist"], [f"extentlist={extentlist}"]


def write_extentlist(path: Path, allocated: list[tuple[int, int]]) -> str:
    """The extentlist filter's file: one "offset length" line per allocated area (the
    filter takes every gap for a hole that reads as zeroes)."""
    path.write_text("".join(f"{offset} {length}\n" for offset, length in allocated if length))
    return str(path)
