"""The cyclic garbage collector and a daemon that holds a lot: when to let it walk what."""

import gc

GC_THRESHOLDS = (50_000, 50, 100)  # the cyclic collector's (gen0, gen1, gen2) thresholds; Python's are (700, 10, 10)


def freeze_heap() -> None:
    """Collect, then move what survived out of the cyclic garbage collector's reach (``gc.freeze``), and
    let the young generations fill up for longer before the collector walks them.

    The telemetry loop holds a task per device, its poll workers a connection, a session and a plan per BMC:
    about a million objects for 10,000 BMCs, that every full collection walked while the loop waited (~0.7 s
    each, tens per minute); and each poll allocates a few hundred objects that die young, so at Python's
    thresholds the collector ran every couple of polls and promoted whatever was in flight (measured in bench/: 9 s of a 30 s window
    in the collector; with both, ~2 s; a poll worker over 10,000 BMCs spent 1.38-1.55 ms of CPU per poll
    unfrozen, 0.95-1.13 frozen). Frozen objects are still freed when nothing refers to them;
    unfreezing first lets this collection reclaim the cycles of devices removed since the last freeze.
    Called once the devices a refresh started (the BMCs a worker was given) have all been polled once."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.unfreeze()
    gc.collect()
    gc.freeze()
