"""sd_notify over a real unix datagram socket, watchdog parsing, pool metrics (the
Prometheus text: test_hub_metrics.py)."""

from __future__ import annotations

import os
import socket

from sendense_tools import systemd
from sendense_tools.hub.allocator import PoolMetrics
from sendense_tools.hub.metrics import nbd_metrics


def test_notify_sends_one_datagram_to_notify_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert systemd.notify("READY=1", "STATUS=serving") is True
        assert sock.recv(1024) == b"READY=1\nSTATUS=serving"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert systemd.notify("READY=1") is False


def test_watchdog_interval_is_half_the_timeout_for_this_process_only(monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert systemd.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    monkeypatch.setenv("WATCHDOG_USEC", "junk")
    assert systemd.watchdog_interval() is None


def test_pool_metrics_per_node():
    a = PoolMetrics(total=101, allocated=3, available=98)
    b = PoolMetrics(total=101, allocated=0, available=101)
    hub = PoolMetrics(total=202, allocated=3, available=199)
    assert nbd_metrics(hub, {"b": b, "a": a}, 3, 404) == {
        "total": 202, "allocated": 3, "available": 199, "utilization": 0.0149,
        "qemu_nbd_processes": 3, "max_exports": 404,
        "nodes": {"a": {"total": 101, "allocated": 3, "available": 98, "utilization": 0.0297},
                  "b": {"total": 101, "allocated": 0, "available": 101, "utilization": 0.0}},
    }  # fmt: skip
