"""The tunnel's SSH client options: only the algorithms a hardened hub accepts."""

from __future__ import annotations

from pathlib import Path

import asyncssh

from sendense_tools.config import parse_config
from sendense_tools.tunnel.config import TunnelConfig
from sendense_tools.tunnel.ssh import MAC_ALGS, connection_options, kex_algs


def _options(tmp_path: Path) -> asyncssh.SSHClientConnectionOptions:
    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(tmp_path / "id_ed25519")
    (tmp_path / "known_hosts").write_text("")
    cfg = parse_config(
        {
            "hub": {
                "key_file": str(tmp_path / "id_ed25519"),
                "known_hosts": str(tmp_path / "known_hosts"),
            }
        },
        TunnelConfig,
    )
    return connection_options(cfg)


def test_kex_is_x25519_or_post_quantum_hybrid_only():
    algs = kex_algs()
    assert "curve25519-sha256" in algs
    assert all(a.startswith(("curve25519", "mlkem768x25519")) for a in algs), algs


def test_client_options_carry_the_algorithm_choice(tmp_path):
    opts = _options(tmp_path)
    assert [a.decode() for a in opts.kex_algs] == kex_algs()
    assert [a.decode() for a in opts.mac_algs] == list(MAC_ALGS)
    assert [a.decode() for a in opts.encryption_algs] == TunnelConfig().tuning.ciphers
    assert [a.decode() for a in opts.compression_algs] == ["none"]
