"""The hub cgroup's samples: memory.stat parsing, peaks and CPU rates."""

from __future__ import annotations

import os
import time

import pytest

from tests.fleet.sampler import Sample, Sampler, parse_memory_stat, summarise

MIB = 1 << 20


def test_memory_stat_keeps_the_numbers():
    stat = parse_memory_stat("cache 4096\nrss 8192\ntotal_rss 16384\nhierarchical_x\n")
    assert stat == {"cache": 4096, "rss": 8192, "total_rss": 16384}


def test_peaks_and_cpu_in_cores():
    samples = [
        Sample(at=0.0, rss=100 * MIB, cache=0, cpu_ns=0),
        Sample(at=1.0, rss=300 * MIB, cache=50 * MIB, cpu_ns=int(1.5e9)),  # 1.5 cores
        Sample(at=2.0, rss=200 * MIB, cache=10 * MIB, cpu_ns=int(2.0e9)),  # 0.5 cores
    ]
    u = summarise(samples, idle_rss=90 * MIB)
    assert (u.peak_rss, u.idle_rss, u.peak_cache) == (300 * MIB, 90 * MIB, 50 * MIB)
    assert u.peak_cpu == pytest.approx(1.5)
    assert u.mean_cpu == pytest.approx(1.0)
    assert u.samples == 3


def test_one_sample_is_no_figure():
    with pytest.raises(ValueError, match="two samples"):
        summarise([Sample(0.0, 1, 0, 0)], idle_rss=0)


def test_the_sampler_reads_a_cgroup_until_stopped(tmp_path):
    (tmp_path / "memory.stat").write_text("total_cache 10\ntotal_rss 2048\n")
    (tmp_path / "cpuacct.usage").write_text("1000\n")
    sampler = Sampler(tmp_path, tmp_path, interval=0.01)
    sampler.start()
    deadline = time.monotonic() + 10
    while len(sampler.samples) < 3:
        assert time.monotonic() < deadline, "the sampler took no samples in 10 s"
        # Replaced whole, as the kernel's file never reads half-written.
        (tmp_path / "next").write_text(f"{1000 + 10**6 * len(sampler.samples)}\n")
        os.replace(tmp_path / "next", tmp_path / "cpuacct.usage")
        time.sleep(0.005)
    u = sampler.stop(idle_rss=1024)
    assert u.peak_rss == 2048 and u.peak_cache == 10
    assert u.mean_cpu > 0
