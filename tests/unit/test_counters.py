from enum import IntEnum

import pytest

from stackservice.metrics.counters import CounterBlock, CounterLayout, read_counters


class Rx(IntEnum):
    PACKETS = 0
    BYTES = 1


class Drops(IntEnum):
    SHORT = 0
    BAD = 1
    ODD = 2


LAYOUT = CounterLayout({"rx": Rx, "drops": Drops})


def test_counter_block_file_reader_sees_writer_slots(tmp_path):
    path = tmp_path / "x.counters"
    block = CounterBlock(LAYOUT, path)
    rx, drops = block.section("rx"), block.section("drops")
    rx[Rx.BYTES] += 1500
    drops[Drops.ODD] += 2
    drops[Drops.ODD] += 1
    assert read_counters(path, LAYOUT) == {
        "rx": {"packets": 0, "bytes": 1500},
        "drops": {"short": 0, "bad": 0, "odd": 3},
    }
    block.close()
    assert not path.exists()


def test_counter_block_sections_do_not_overlap():
    block = CounterBlock(LAYOUT)
    for i in range(len(Rx)):
        block.section("rx")[i] = 2**64 - 1
    assert list(block.section("drops")) == [0, 0, 0]
    block.close()


def test_read_counters_other_layout_refused(tmp_path):
    path = tmp_path / "x.counters"
    block = CounterBlock(CounterLayout({"rx": Rx}), path)
    with pytest.raises(ValueError, match="not a counters file of this vfstack version"):
        read_counters(path, LAYOUT)
    block.close()
