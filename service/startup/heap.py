"""The garbage collector of a long-running process, set once start-up is done.

Start-up leaves a large heap that lives as long as the process (the machines, the catalog, the
OpenAPI description, the libraries): `gc.freeze()` takes it out of every later collection. Each
request then allocates a few hundred objects, and at the default threshold (a young collection
every 700 allocations, an older one every 10 of those) an API under load spent about a sixth of its
CPU collecting, mostly objects of requests still in flight. Collecting the young generation every
20,000 allocations, and the older ones more rarely, frees the same cycles a little later for a few
megabytes more (bench/README.md has the figures).
"""

from __future__ import annotations

import gc

YOUNG_COLLECTION_EVERY = 20_000  # allocations (Python's default: 700)
MIDDLE_COLLECTION_EVERY = 50  # young collections (default: 10)
OLD_COLLECTION_EVERY = 100  # middle collections (default: 10)


def settle() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, MIDDLE_COLLECTION_EVERY, OLD_COLLECTION_EVERY)
