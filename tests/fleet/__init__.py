"""The 20-sites-on-one-hub lab fleet (`make fleet-scale`): not collected by pytest; its
pieces are unit-tested in tests/unit/fleet."""
