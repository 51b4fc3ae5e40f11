"""How a virtual disk is stored on a datastore, and getting it out.

ESXi keeps a disk as a small text descriptor plus a ``-flat.vmdk`` extent
(createType vmfs or monolithicFlat); hosted tools leave monolithicSparse
files; uploads through the datastore API (and everything vcsim holds) may
be streamOptimized.  Snapshot deltas (vmfsSparse, seSparse) are refused:
consolidate first.
"""

import dataclasses
import os
import struct

from nova_xhv.backends.vmware import datastore
from nova_xhv.backends.vmware import errors
from nova_xhv.translate import vmdk_descriptor

HEAD_BYTES = 64 * 1024
SECTOR = 512
FLAT_TYPES = ('vmfs', 'monolithicflat')
FLAT_EXTENTS = ('VMFS', 'FLAT')


@dataclasses.dataclass
class StoredDisk:
    ds_path: str
    kind: str  # flat, streamOptimized, monolithicSparse
    virtual_size: int
    # For flat disks: datastore path of the extent holding the raw data.
    extent_path: str = None


def parse_sparse_head(head, where):
    """(createType, virtual size) of a KDMV sparse vmdk header."""
    if len(head) < 44:
        raise errors.VSphereDiskError(path=where,
                                      detail='truncated sparse header')
    capacity, _grain, desc_offset, desc_size = struct.unpack_from(
        '<QQQQ', head, 12)
    create_type = ''
    start, end = desc_offset * SECTOR, (desc_offset + desc_size) * SECTOR
    if desc_offset and end <= len(head):
        try:
            create_type = vmdk_descriptor.parse(head[start:end]).create_type
        except vmdk_descriptor.DescriptorError as exc:
            raise errors.VSphereDiskError(path=where, detail=str(exc))
    return create_type or 'monolithicSparse', capacity * SECTOR


def inspect(files, ds_path):
    """Find out how the disk ``[ds] dir/name.vmdk`` is stored."""
    ds_name, path = datastore.split_path(ds_path)
    head = files.read(ds_name, path, HEAD_BYTES)
    if head is None:
        raise errors.VSphereDiskError(path=ds_path,
                                      detail='file not found on datastore')
    if not head:
        raise errors.VSphereDiskError(
            path=ds_path, detail='the disk file is empty (nothing was ever '
                                 'written to it)')
    if head.startswith(b'KDMV'):
        create_type, size = parse_sparse_head(head, ds_path)
        if create_type.lower() == 'streamoptimized':
            return StoredDisk(ds_path, 'streamOptimized', size)
        if create_type.lower() == 'monolithicsparse':
            return StoredDisk(ds_path, 'monolithicSparse', size)
        raise errors.VSphereDiskError(
            path=ds_path, detail='sparse vmdk of type %s is not supported'
                                 % create_type)
    if not vmdk_descriptor.looks_like_descriptor(head):
        raise errors.VSphereDiskError(
            path=ds_path, detail='neither a vmdk descriptor nor a sparse '
                                 'vmdk')
    try:
        desc = vmdk_descriptor.parse(head)
    except vmdk_descriptor.DescriptorError as exc:
        raise errors.VSphereDiskError(path=ds_path, detail=str(exc))
    if desc.has_parent:
        raise errors.VSphereDiskError(
            path=ds_path, detail='it is a snapshot delta (createType %s): '
                                 'delete or consolidate the VM snapshots '
                                 'first' % desc.create_type)
    if desc.create_type.lower() not in FLAT_TYPES:
        raise errors.VSphereDiskError(
            path=ds_path, detail='descriptor createType %s is not supported '
                                 '(expected vmfs or monolithicFlat)'
                                 % desc.create_type)
    if len(desc.extents) != 1 or desc.extents[0].type not in FLAT_EXTENTS:
        raise errors.VSphereDiskError(
            path=ds_path, detail='expected one flat extent, found %s'
                                 % [e.type for e in desc.extents])
    extent = desc.extents[0]
    problem = vmdk_descriptor.bare_filename_problem(extent.filename)
    if problem or extent.offset:
        raise errors.VSphereDiskError(path=ds_path,
                                      detail=problem or 'extent offset')
    folder = path.rsplit('/', 1)[0] + '/' if '/' in path else ''
    return StoredDisk(ds_path, 'flat', extent.sectors * SECTOR,
                      extent_path='[%s] %s%s' % (ds_name, folder,
                                                 extent.filename))


def data_file(files, stored):
    """Where a stored disk's data is, read as one file.

    :returns: (datastore name, path, canonical format, subformat): the
        flat extent as raw for descriptor+flat disks, else the vmdk itself.
    """
    if stored.kind == 'flat':
        ds_name, path = datastore.split_path(stored.extent_path)
        size = files.size(ds_name, path)
        if size != stored.virtual_size:
            raise errors.VSphereDiskError(
                path=stored.extent_path,
                detail='extent holds %s bytes, descriptor says %d'
                       % (size, stored.virtual_size))
        return ds_name, path, 'raw', None
    ds_name, path = datastore.split_path(stored.ds_path)
    return ds_name, path, 'vmdk', stored.kind


def download(files, stored, directory, basename):
    """Copy a stored disk into ``directory``.

    :returns: (local path, canonical format, subformat)
    """
    ds_name, path, fmt, sub = data_file(files, stored)
    local = os.path.join(directory, basename + ('.raw' if fmt == 'raw'
                                                else '.vmdk'))
    files.download(ds_name, path, local)
    return local, fmt, sub


def inspect_local(path):
    """(format, subformat, virtual size) of a vmdk fetched by ExportVm."""
    with open(path, 'rb') as f:
        head = f.read(HEAD_BYTES)
    if head.startswith(b'KDMV'):
        create_type, size = parse_sparse_head(head, path)
        return 'vmdk', create_type, size
    if not head or vmdk_descriptor.looks_like_descriptor(head):
        raise errors.VSphereDiskError(
            path=path, detail='the ExportVm lease delivered %s instead of a '
                              'disk stream; use export_method = datastore'
                              % ('nothing' if not head else 'a descriptor'))
    return 'raw', None, os.path.getsize(path)
