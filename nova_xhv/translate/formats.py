"""Format names in one place.

Canonical names are Glance's and Nova's (raw, qcow2, vmdk, vhdx, vhd).
qemu-img calls VHD ``vpc``; oslo.utils' format inspector calls it ``vhd``.
Sub-formats use qemu-img's spelling (``streamOptimized``).
"""

import collections

from nova_xhv.translate import exceptions

RAW = 'raw'
QCOW2 = 'qcow2'
VMDK = 'vmdk'
VHDX = 'vhdx'
VHD = 'vhd'

FORMATS = (RAW, QCOW2, VMDK, VHDX, VHD)

STREAM_OPTIMIZED = 'streamOptimized'
MONOLITHIC_SPARSE = 'monolithicSparse'
MONOLITHIC_FLAT = 'monolithicFlat'
DYNAMIC = 'dynamic'
FIXED = 'fixed'

_QEMU_DRIVERS = {RAW: 'raw', QCOW2: 'qcow2', VMDK: 'vmdk', VHDX: 'vhdx',
                 VHD: 'vpc'}
_ALIASES = {'vpc': VHD}

# What the engine writes; the first entry is the default.
WRITABLE_SUBFORMATS = {
    RAW: (None,),
    QCOW2: (None,),
    VMDK: (STREAM_OPTIMIZED, MONOLITHIC_SPARSE),
    VHDX: (DYNAMIC,),
    VHD: (DYNAMIC, FIXED),
}

# What the engine reads (monolithicFlat only as a descriptor + extent pair
# from a staging folder).
READABLE_SUBFORMATS = {
    RAW: (None,),
    QCOW2: (None,),
    VMDK: (STREAM_OPTIMIZED, MONOLITHIC_SPARSE, MONOLITHIC_FLAT),
    VHDX: (DYNAMIC, FIXED),
    VHD: (DYNAMIC, FIXED),
}

# A format with its subformat (what a hypervisor family stores disks in:
# see nova_xhv.backends.family; the engine knows formats, not families).
NativeFormat = collections.namedtuple('NativeFormat', 'format subformat')


def canonical_name(name):
    """Canonical format name for ``name`` (any case; qemu's ``vpc`` ok)."""
    if not name:
        raise exceptions.UnsupportedFormat('no disk format given')
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in FORMATS:
        raise exceptions.UnsupportedFormat(
            'unsupported disk format %r; use one of %s' % (
                name, ', '.join(FORMATS)))
    return key


def qemu_driver(name):
    """qemu-img's ``-f``/``-O`` name for a canonical (or qemu) name."""
    return _QEMU_DRIVERS[canonical_name(name)]


def _match(fmt, subformat, table, verb):
    choices = table[fmt]
    if subformat is None:
        return choices[0]
    for choice in choices:
        if choice is not None and choice.lower() == str(subformat).lower():
            return choice
    allowed = [c for c in choices if c is not None]
    if not allowed:
        raise exceptions.UnsupportedFormat(
            '%s has no subformats; drop subformat %r' % (fmt, subformat))
    raise exceptions.UnsupportedFormat(
        'cannot %s %s subformat %r; use one of %s' % (
            verb, fmt, subformat, ', '.join(allowed)))


def target_subformat(fmt, subformat=None):
    """The subformat to write (default applied, spelling normalised)."""
    return _match(canonical_name(fmt), subformat, WRITABLE_SUBFORMATS,
                  'write')


def source_subformat(fmt, subformat):
    """Normalise a detected subformat; refuse ones the engine cannot read."""
    return _match(canonical_name(fmt), subformat, READABLE_SUBFORMATS,
                  'read')


def create_options(fmt, subformat=None):
    """qemu-img ``-o`` creation options for a target format."""
    fmt = canonical_name(fmt)
    subformat = target_subformat(fmt, subformat)
    if fmt == QCOW2:
        return ['compat=1.1']
    if fmt == VHD:
        # force_size keeps the exact byte size: without it qemu rounds the
        # disk up to the next CHS geometry and the guest sees a bigger disk.
        return ['subformat=%s' % subformat, 'force_size=on']
    if subformat:
        return ['subformat=%s' % subformat]
    return []
