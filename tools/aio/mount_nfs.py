"""The KVM nova-compute's ``mount``: NFS mounts of the local share.

This machine has no NFS client and the all-in-one's share is one of its
directories, so ``mount -t nfs [-o ...] host:/path point`` (what Nova's
libvirt NFS volume driver runs through privsep) becomes a bind mount of
``/path`` (tests/fixtures/cinder_services.bind_mount_nfs, as in the
Nova-harness tests); any other mount is the system's.  xhv-aio writes a
``mount`` script running this first on that compute's PATH.
"""

import os
import sys

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def main(argv):
    if argv[:2] == ['-t', 'nfs'] and len(argv) >= 4:
        sys.path.insert(0, TOP)
        from tests.fixtures import cinder_services
        export, point = argv[-2:]
        cinder_services.bind_mount_nfs('nfs', export, point, argv[2:-2])
        return 0
    os.execv('/bin/mount', ['mount'] + argv)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
