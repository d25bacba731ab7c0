"""Read-only access to an image file or an NBD export, from several threads at once.

A file is served by a private `qemu-nbd -r` on a socket in a private directory (qemu reads
the whole backing chain of an overlay, so a point reads as the disk it stands for). libnbd
serialises the commands of one handle, so each reading thread gets its own handle.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import nbd

from sendense_tools.errors import SendenseError
from sendense_tools.nbd.extents import Extent, extents

SERVE_TIMEOUT = 30.0
_QCOW2_MAGIC = b"QFI\xfb"


class ImageError(SendenseError):
    """The image or export could not be opened or read."""


def image_format(path: Path) -> str:
    with open(path, "rb") as f:
        return "qcow2" if f.read(4) == _QCOW2_MAGIC else "raw"


def _connect(uri: str) -> nbd.NBD:
    handle = nbd.NBD()
    handle.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    handle.connect_uri(uri)
    return handle


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stderr:
        proc.stderr.close()


@contextlib.contextmanager
def served_image(
    path: str | Path, *, fmt: str | None = None, shared: int = 8, timeout: float = SERVE_TIMEOUT
) -> Iterator[str]:
    """The NBD URI of `path` served read-only by a private qemu-nbd, stopped on exit."""
    image = Path(path)
    if not image.is_file():
        raise ImageError(f"image {image} does not exist")
    qemu_nbd = shutil.which("qemu-nbd")
    if qemu_nbd is None:
        raise ImageError("qemu-nbd is not installed")
    with tempfile.TemporaryDirectory(prefix="sendense-image-") as tmp:
        sock = Path(tmp, "nbd.sock")
        uri = f"nbd+unix:///image?socket={sock}"
        proc = subprocess.Popen(
            [
                *(
                    qemu_nbd,
                    "--read-only",
                    "--persistent",
                    f"--shared={shared}",
                    "-k",
                    str(sock),
                    "-x",
                    "image",
                ),
                *("-f", fmt or image_format(image), str(image)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    _connect(uri).shutdown()
                    break
                except nbd.Error:
                    pass
                if proc.poll() is not None:
                    err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                    raise ImageError(f"qemu-nbd cannot serve {image}: {err or proc.returncode}")
                if time.monotonic() > deadline:
                    raise ImageError(f"qemu-nbd did not serve {image} within {timeout:.0f} s")
                time.sleep(0.01)
            yield uri
        finally:
            _stop(proc)


class ImageReader:
    """Reads of one export, each calling thread on its own handle; close() closes them all."""

    def __init__(self, uri: str, name: str | None = None) -> None:
        self.uri = uri
        self.name = name or uri
        self._local = threading.local()
        self._handles: list[nbd.NBD] = []
        self._lock = threading.Lock()
        self.size = self._handle().get_size()

    def _handle(self) -> nbd.NBD:
        handle = getattr(self._local, "handle", None)
        if handle is None:
            try:
                handle = _connect(self.uri)
            except nbd.Error as e:
                raise ImageError(f"cannot connect to {self.name}: {e.string}") from None
            self._local.handle = handle
            with self._lock:
                self._handles.append(handle)
        return handle

    def read(self, offset: int, length: int) -> bytes:
        try:
            return self._handle().pread(length, offset)
        except nbd.Error as e:
            raise ImageError(f"cannot read {self.name} at offset {offset}: {e.string}") from None

    def extents(self, offset: int = 0, end: int | None = None) -> Iterator[Extent]:
        try:
            yield from extents(self._handle(), offset, self.size if end is None else end)
        except nbd.Error as e:
            raise ImageError(f"cannot map {self.name} at offset {offset}: {e.string}") from None

    def close(self) -> None:
        with self._lock:
            handles, self._handles = self._handles, []
        for handle in handles:
            with contextlib.suppress(nbd.Error):
                handle.shutdown()


@contextlib.contextmanager
def open_image(path_or_uri: str | Path, *, shared: int = 8) -> Iterator[ImageReader]:
    """An ImageReader of an NBD URI as it is, or of an image file through qemu-nbd."""
    text = str(path_or_uri)
    with contextlib.ExitStack() as stack:
        if text.startswith("nbd"):
            uri = text
        else:
            uri = stack.enter_context(served_image(text, shared=shared))
        reader = ImageReader(uri, text)
        stack.callback(reader.close)
        yield reader
