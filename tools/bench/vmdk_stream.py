#!/usr/bin/env python3
"""Benchmark the streamOptimized vmdk decoder against qemu-img's vmdk driver.

    python tools/bench/vmdk_stream.py [--virtual-gib 8] [--data-mib 1024]
                                      [--reps 3] [--workdir DIR]

Makes a streamOptimized vmdk holding ``data-mib`` of random data in a
``virtual-gib`` disk, then times, interleaved in one run, for qcow2 and raw
targets:

* bare:     ``qemu-img convert -f vmdk`` of the local file (the baseline);
* bare-t-none: the same with ``-t none`` (O_DIRECT output);
* qemu:     the engine with ``vmdk_stream_decoder=False`` (qemu-img's
            driver);
* decoder:  the engine with the stream decoder (local file);
* decoder-page-cache: the same with ``direct_io=False``;
* remote:   the engine with the decoder reading the file from a local HTTPS
            Range server (one verified GET), as a migration's destination
            reads a disk.

The engine writes with O_DIRECT where it can (``direct_io``); on a VM whose
freed memory returns to its host, page-cache writes cost host faults, so
the bare rows vary with how recently memory was used.

Prints medians and each against ``bare``.  A benchmark, never a test.
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from nova_xhv import translate  # noqa: E402
from tests.fixtures import http_range  # noqa: E402

MiB = 1024 * 1024
GiB = 1024 * MiB


def make_stream(folder, virtual_size, data_size, extent=16 * MiB):
    raw = os.path.join(folder, 'src.raw')
    count = max(1, data_size // extent)
    step = virtual_size // count
    with open(raw, 'wb') as f:
        f.truncate(virtual_size)
        for n in range(count):
            f.seek(max(n * step, MiB))
            f.write(os.urandom(extent))
    path = os.path.join(folder, 'disk.vmdk')
    subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'vmdk', '-o',
                    'subformat=streamOptimized', raw, path], check=True)
    os.unlink(raw)
    return path


def timed(func):
    subprocess.run(['sync'], check=True)
    started = time.monotonic()
    func()
    return time.monotonic() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--virtual-gib', type=float, default=8)
    parser.add_argument('--data-mib', type=int, default=1024)
    parser.add_argument('--reps', type=int, default=3)
    parser.add_argument('--workdir', default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix='xhv-bench-',
                                     dir=args.workdir) as folder:
        served = os.path.join(folder, 'served')
        os.mkdir(served)
        src = make_stream(served, int(args.virtual_gib * GiB),
                          args.data_mib * MiB)
        tls = http_range.make_tls_files(folder)
        print('machine: %s, %d CPUs, Python %s; source %.2f GiB '
              'streamOptimized vmdk, %.1f GiB virtual' % (
                  platform.platform(), os.cpu_count(),
                  platform.python_version(), os.path.getsize(src) / GiB,
                  args.virtual_gib))
        with http_range.RangeServer(served, tls=tls) as server:
            remote = translate.RemoteSource(server.url('disk.vmdk'), 'vmdk',
                                            ca_file=tls.ca)
            for target in ('qcow2', 'raw'):
                out = os.path.join(folder, 'out.' + target)

                def run(source, **options):
                    def go():
                        translate.convert(
                            source, out, target,
                            options=translate.ConvertOptions(**options))
                    return go

                ways = {
                    'bare': lambda: subprocess.run(
                        ['qemu-img', 'convert', '-f', 'vmdk', '-O', target,
                         src, out], check=True),
                    'bare-t-none': lambda: subprocess.run(
                        ['qemu-img', 'convert', '-t', 'none', '-f', 'vmdk',
                         '-O', target, src, out], check=True),
                    'qemu': run(src, vmdk_stream_decoder=False),
                    'decoder': run(src),
                    'decoder-page-cache': run(src, direct_io=False),
                    'remote': run(remote),
                }
                times = {name: [] for name in ways}
                names = list(ways)
                for rep in range(args.reps + 1):
                    turn = rep % len(names)
                    for name in names[turn:] + names[:turn]:
                        seconds = timed(ways[name])
                        os.unlink(out)
                        if rep:  # the first round warms caches up
                            times[name].append(seconds)
                bare = statistics.median(times['bare'])
                print('vmdk -> %s (medians of %d):' % (target, args.reps))
                for name in names:
                    median = statistics.median(times[name])
                    print('  %-18s %6.2f s  %5.2f x bare' % (
                        name, median, median / bare))
    return 0


if __name__ == '__main__':
    sys.exit(main())
