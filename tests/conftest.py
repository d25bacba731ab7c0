"""Fixtures that start real processes on loopback live in tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.chain",
    "tests.fixtures.ports",
    "tests.fixtures.qemu_nbd",
    "tests.fixtures.sshd",
    "tests.fixtures.tlsproxy",
    "tests.fixtures.vcsim",
]
