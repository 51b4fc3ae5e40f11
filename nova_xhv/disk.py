"""What one disk looks like while it moves between hypervisors.

A plain value object: the backends produce and consume it, the migration
code ships it between computes as JSON.  No Nova imports.
"""

import dataclasses
import os
import typing

from nova_xhv.translate import remote

# What DiskReader.direct_read returns (the engine takes it as it is).
DirectRead = remote.DirectRead


@dataclasses.dataclass
class DiskDescriptor:
    """One guest disk, exported from or staged into a hypervisor.

    Exactly one of ``path`` (a local file; for a VMware monolithicFlat
    disk, its descriptor) or ``url`` (an HTTP(S) source readable with Range
    requests) locates the data.
    """

    # Canonical format name (raw, qcow2, vmdk, vhdx, vhd): see
    # nova_xhv.translate.formats.
    format: str
    virtual_size: int
    path: typing.Optional[str] = None
    url: typing.Optional[str] = None
    subformat: typing.Optional[str] = None
    # The guest-visible bus on the hypervisor that produced the disk, in that
    # hypervisor's words (virtio, scsi, sata, ide, lsiLogic, pvscsi, ...).
    bus: typing.Optional[str] = None
    # 0 is the boot disk; None means not bootable.
    boot_index: typing.Optional[int] = 0
    device_name: typing.Optional[str] = None
    # Hex sha256 of the guest data when known (set by whoever staged it).
    checksum: typing.Optional[str] = None
    # Backend-private handle (e.g. a datastore path or VDI uuid) that only
    # the backend which made the descriptor interprets.
    handle: typing.Optional[str] = None

    def __post_init__(self):
        if (self.path is None) == (self.url is None):
            raise ValueError('a disk needs exactly one of path or url')
        if self.virtual_size < 0:
            raise ValueError('virtual_size must not be negative')

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError('unknown disk descriptor fields: %s'
                             % ', '.join(sorted(unknown)))
        return cls(**data)


class DiskReader(object):
    """Read access to one exported disk, by byte range.

    The exchange endpoint serves exported disks through this, so a backend
    can offer a disk where it lives (a datastore, a VDI) instead of copying
    it to local storage first.  Subclasses set ``size`` (bytes) and
    implement ``iter_range``.
    """

    size = None

    def iter_range(self, start, end, chunk=1024 * 1024):
        """Yield the bytes ``start``..``end`` (inclusive), in order.

        Raises OSError (or a subclass) if the data cannot be read; a short
        read is an error, never silently padded.
        """
        raise NotImplementedError()

    def direct_read(self):
        """A fresh DirectRead for one GET of the whole disk, or None.

        None (the default) means peers read through the exchange endpoint.
        """
        return None

    def close(self):
        """Release connections or handles; the reader is not used again."""


class LocalFileReader(DiskReader):
    """An exported disk that is a local file."""

    def __init__(self, path):
        if not os.path.isfile(path):
            raise ValueError('cannot read %s: not a file' % path)
        self.path = path
        self.size = os.path.getsize(path)

    def iter_range(self, start, end, chunk=1024 * 1024):
        fd = os.open(self.path, os.O_RDONLY)
        try:
            offset = start
            while offset <= end:
                data = os.pread(fd, min(chunk, end - offset + 1), offset)
                if not data:
                    raise OSError('%s ended at %d, before byte %d' % (
                        self.path, offset, end))
                yield data
                offset += len(data)
        finally:
            os.close(fd)

    def __repr__(self):
        return 'LocalFileReader(%r)' % self.path
