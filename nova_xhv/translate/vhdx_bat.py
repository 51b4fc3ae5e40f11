"""Where a VHDX holds data: its Block Allocation Table, read as qemu reads it.

qemu 7.2's vhdx driver has no block-status callback, so qemu-nbd (and
``qemu-img map``) report a vhdx source as data from end to end, and the
vmdk stream writer would read all of it: every hole of a 2 TiB disk.
This reads the BAT itself (VHDX specification 1.0, section 2.5; qemu's
block/vhdx.c) from the container's raw bytes and returns the payload
blocks qemu would read from the file; blocks in any other state read as
zeros in qemu (NOT_PRESENT, UNDEFINED, ZERO, UNMAPPED for a disk without
parent), so the writer skips them.

It trusts nothing: any field outside what qemu accepts, a virtual size
other than the one qemu serves, or a BAT outside the file, and it
answers None (the writer then reads the disk whole, as before).  It runs
after qemu-nbd opened the image read-only, which qemu refuses for a vhdx
whose log still needs replaying, so the BAT on disk is the one qemu uses.
The region table read is the one qemu reads (the first, at 192 KiB; qemu
checks its checksum and refuses the image if it is wrong).
"""

import struct

KiB = 1024
MiB = 1024 * KiB
REGION_TABLE = 192 * KiB
_REGION_TABLE_SIZE = 64 * KiB
_MAX_REGIONS = 2047
_BAT = '2DC27766-F623-4200-9D64-115E9BFD4A08'
_METADATA = '8B7CA206-4790-4B9A-B8FE-575F050F886E'
_FILE_PARAMETERS = 'CAA16737-FA36-4D43-B3B6-33F0AA44E76B'
_VIRTUAL_DISK_SIZE = '2FA54224-CD1B-4876-B211-5DBED83BF4B8'
_LOGICAL_SECTOR_SIZE = '8141BF1D-A96F-4709-BA47-F233A8FAAB5F'
_MAX_METADATA_ENTRIES = 2047
# Payload block states qemu reads as zeros in a disk without parent.
_ZERO_STATES = frozenset((0, 1, 2, 3, 5))
_STATE_MASK = 7
_MAX_SECTORS_PER_BLOCK = 1 << 23
_READ_STEP = 4 * MiB


def _guid(buf):
    return ('{:08X}-{:04X}-{:04X}-{:02X}{:02X}-'
            '{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}').format(
        *struct.unpack('<IHHBBBBBBBB', buf))


def _read(read_at, file_size, offset, length):
    """``length`` bytes at ``offset`` of the container, or None."""
    if offset < 0 or length < 0 or offset + length > file_size:
        return None
    parts = []
    for at in range(offset, offset + length, _READ_STEP):
        parts.append(bytes(read_at(at, min(_READ_STEP,
                                           offset + length - at))))
    return b''.join(parts)


def _regions(read_at, file_size):
    table = _read(read_at, file_size, REGION_TABLE, _REGION_TABLE_SIZE)
    if table is None or table[:4] != b'regi':
        return None
    count, = struct.unpack_from('<I', table, 8)
    if count > _MAX_REGIONS:
        return None
    found = {}
    for i in range(count):
        entry = table[16 + i * 32:48 + i * 32]
        offset, length = struct.unpack_from('<QI', entry, 16)
        found[_guid(entry[:16])] = (offset, length)
    return found


def _metadata(read_at, file_size, offset, length):
    """{item guid: item bytes} of the metadata region, or None."""
    table = _read(read_at, file_size, offset, 64 * KiB)
    if table is None or table[:8] != b'metadata':
        return None
    count, = struct.unpack_from('<H', table, 10)
    if count > _MAX_METADATA_ENTRIES:
        return None
    items = {}
    for i in range(count):
        entry = table[32 + i * 32:64 + i * 32]
        item_offset, item_length = struct.unpack_from('<II', entry, 16)
        if item_offset + item_length > length:
            return None
        data = _read(read_at, file_size, offset + item_offset,
                     min(item_length, 8))
        if data is None:
            return None
        items[_guid(entry[:16])] = data
    return items


def data_runs(read_at, file_size, capacity):
    """Sorted (start, end) byte ranges qemu reads from the file, or None.

    ``read_at(offset, length)`` reads the container's raw bytes;
    ``capacity`` is the virtual size qemu serves.  Ranges are whole
    payload blocks (the last one may pass ``capacity``), neighbours merged.
    """
    regions = _regions(read_at, file_size)
    if not regions or _BAT not in regions or _METADATA not in regions:
        return None
    items = _metadata(read_at, file_size, *regions[_METADATA])
    if items is None or not all(k in items for k in (
            _FILE_PARAMETERS, _VIRTUAL_DISK_SIZE, _LOGICAL_SECTOR_SIZE)):
        return None
    block_size, flags = struct.unpack('<II', items[_FILE_PARAMETERS])
    virtual_size, = struct.unpack('<Q', items[_VIRTUAL_DISK_SIZE])
    sector_size, = struct.unpack_from('<I', items[_LOGICAL_SECTOR_SIZE])
    if flags & 2 or virtual_size != capacity or \
            sector_size not in (512, 4096) or \
            block_size & (block_size - 1) or \
            not MiB <= block_size <= 256 * MiB:
        return None  # a parent, or values qemu refuses or reads otherwise
    chunk_ratio = _MAX_SECTORS_PER_BLOCK * sector_size // block_size
    ratio_bits = chunk_ratio.bit_length() - 1
    blocks = -(-virtual_size // block_size)
    entries = blocks + ((blocks - 1) >> ratio_bits) if blocks else 0
    bat_offset, bat_length = regions[_BAT]
    if entries * 8 > bat_length:
        return None
    bat = _read(read_at, file_size, bat_offset, entries * 8)
    if bat is None:
        return None
    runs = []
    for block in range(blocks):
        entry, = struct.unpack_from('<Q', bat, 8 * (block + (
            block >> ratio_bits)))
        if entry & _STATE_MASK in _ZERO_STATES:
            continue
        start = block * block_size
        if runs and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], start + block_size)
        else:
            runs.append((start, start + block_size))
    return runs
