"""Write a streamOptimized vmdk with XHV's parallel writer (see vmdk_writer).

The engine hands this every conversion whose target is a streamOptimized
vmdk (what vSphere imports): from any source format the engine reads,
local or remote.  One child process (write_child) does the work, started
through the same loop as ``qemu-img convert`` (prlimit, wall timeout,
cancellation, the process group killed on failure, progress printed the
way qemu-img prints it); its configuration reaches it on stdin.  The child:

1. starts ``qemu-nbd --read-only --format=<the inspected format>`` on the
   very file name qemu-img would have opened (a remote source's read-ahead
   bridge included), on a UNIX socket in a private 0700 folder, under the
   conversion's limits;
2. asks it where the data is (NBD block status, ``base:allocation``) and
   reads only that: holes and zero clusters are never read, and all-zero
   grains of allocated data are dropped too;
3. deflates the grains on a bounded pool of zlib-ng threads (stored blocks
   where deflate does not pay) and writes the stream front to back.

Falls back to qemu-img (the engine logs why) only for what it does not do:
a rate limit (``convert_rate_limit``).
"""

import json
import os
import sys

from nova_xhv.translate import formats
from nova_xhv.translate import qemu_img
from nova_xhv.translate import stream_convert

_CHILD = ('import sys; from nova_xhv.translate.write_child import main; '
          'sys.exit(main())')


def targets(to_format, dst_subformat):
    """True when the output is what this writer writes."""
    return (to_format == formats.VMDK
            and dst_subformat == formats.STREAM_OPTIMIZED)


def unsupported_reason(options):
    """Why qemu-img must write this output instead, or None."""
    if options.rate_limit:
        return 'a rate limit (convert_rate_limit) is set, which only ' \
            'qemu-img applies'
    return None


def child_argv():
    """The command the engine runs (through qemu_img.run_convert)."""
    return [sys.executable, '-c', _CHILD]


def child_env():
    return stream_convert.child_env()


def child_input(source_filename, source_format, output, capacity, limits,
                level, workers, scratch_dir=None):
    """The JSON line the child reads on stdin.

    ``source_filename`` and ``source_format`` are exactly what qemu-img
    convert would get (``-f``); qemu-nbd opens them read-only.
    """
    config = {'source': source_filename, 'source_format': source_format,
              'output': output, 'capacity': int(capacity),
              'level': int(level),
              # 0: one thread per core this process may run on.
              'workers': int(workers) or len(os.sched_getaffinity(0)),
              'limit_argv': qemu_img.prlimit_argv(limits),
              'scratch_dir': scratch_dir}
    return (json.dumps(config) + '\n').encode()
