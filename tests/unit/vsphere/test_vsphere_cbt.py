"""change_id_epoch: the UUID part of a VMware change id."""

from __future__ import annotations

import pytest

from sendense_tools.vsphere.cbt import CbtError, change_id_epoch


def test_the_epoch_is_everything_before_the_last_slash():
    uuid = "52 de c0 d9 3a 70 13 5b-21 5e 8b 46 1a 2b c9 0e"
    assert change_id_epoch(f"{uuid}/7") == uuid


@pytest.mark.parametrize("bad", ["", "junk", "/7", "52 de/", "*"])
def test_what_is_not_uuid_slash_sequence_is_an_error(bad):
    with pytest.raises(CbtError, match="is not a change id"):
        change_id_epoch(bad)
