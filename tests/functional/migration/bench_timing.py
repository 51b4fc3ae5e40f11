"""What the move benchmarks time on the destination compute."""

import time

from nova_xhv.migration import source_side


def time_finish_migration(driver):
    """Wrap ``driver.finish_migration``; returns the dict it fills.

    ``disk_info``: the source's cross-family disk info (its stage
    timings), ``finish_s``: how long the destination's finish took.
    """
    real_finish = driver.finish_migration
    seen = {}

    def timed_finish(context, migration, instance, disk_info, *args,
                     **kwargs):
        seen['disk_info'] = source_side.cross_family_disk_info(disk_info)
        started = time.monotonic()
        try:
            return real_finish(context, migration, instance, disk_info,
                               *args, **kwargs)
        finally:
            seen['finish_s'] = time.monotonic() - started

    driver.finish_migration = timed_finish
    return seen
