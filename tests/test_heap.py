"""The collector settings a long-running process takes once its start-up is done."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from service.startup import heap


@pytest.fixture
def restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored")
def test_settle_freezes_the_start_up_heap_and_collects_less_often() -> None:
    gc.collect()
    alive = len(gc.get_objects())  # what start-up leaves behind: all of it is frozen
    heap.settle()
    assert gc.get_freeze_count() >= alive - 10  # (the few this test's own frames made or freed)
    assert len(gc.get_objects()) < 10  # nothing left for the next collections to walk
    assert gc.get_threshold() == (heap.YOUNG_COLLECTION_EVERY, heap.MIDDLE_COLLECTION_EVERY,
                                  heap.OLD_COLLECTION_EVERY)
    assert gc.isenabled()
