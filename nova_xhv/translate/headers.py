"""Small header readers for what the format inspector does not check.

All readers take an open binary file and never trust an offset without
bounding it: they only decide, qemu-img never runs here.
"""

import collections
import struct

VHD_COOKIE = b'conectix'
VHD_FIXED = 2
VHD_DYNAMIC = 3
VHD_DIFFERENCING = 4
_VHD_TYPES = {VHD_FIXED: 'fixed', VHD_DYNAMIC: 'dynamic',
              VHD_DIFFERENCING: 'differencing'}

VhdFooter = collections.namedtuple(
    'VhdFooter', 'disk_type current_size checksum_ok creator')

VhdxParams = collections.namedtuple(
    'VhdxParams', 'leave_blocks_allocated has_parent')

_VHDX_METADATA_REGION = '8B7CA206-4790-4B9A-B8FE-575F050F886E'
_VHDX_FILE_PARAMETERS = 'CAA16737-FA36-4D43-B3B6-33F0AA44E76B'
_VHDX_REGION_TABLE = 192 * 1024
_VHDX_MAX_ENTRIES = 2047


def _read_at(f, offset, length):
    f.seek(offset)
    return f.read(length)


def vhd_type_name(disk_type):
    return _VHD_TYPES.get(disk_type, 'type %d' % disk_type)


def parse_vhd_footer(data):
    """Parse a 512-byte VHD footer (or its copy at the start); None if not."""
    if len(data) < 512 or not data.startswith(VHD_COOKIE):
        return None
    current_size, = struct.unpack('>Q', data[48:56])
    disk_type, checksum = struct.unpack('>II', data[60:68])
    zeroed = data[:64] + b'\0\0\0\0' + data[68:512]
    expected = (~sum(zeroed)) & 0xffffffff
    return VhdFooter(disk_type=disk_type, current_size=current_size,
                     checksum_ok=(checksum == expected),
                     creator=data[28:32])


def vhd_head(f):
    """The footer copy a dynamic VHD carries at offset 0."""
    return parse_vhd_footer(_read_at(f, 0, 512))


def vhd_tail(f, size):
    """The footer at the end of the file (the only one a fixed VHD has)."""
    if size < 1024:
        return None
    return parse_vhd_footer(_read_at(f, size - 512, 512))


def _guid(buf):
    return ('{:08X}-{:04X}-{:04X}-{:02X}{:02X}-'
            '{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}').format(
        *struct.unpack('<IHHBBBBBBBB', buf))


def vhdx_metadata_offset(f):
    """File offset of the VHDX metadata region, or None."""
    table = _read_at(f, _VHDX_REGION_TABLE, 64 * 1024)
    if len(table) < 16 or table[:4] != b'regi':
        return None
    count, = struct.unpack('<I', table[8:12])
    for i in range(min(count, _VHDX_MAX_ENTRIES)):
        entry = table[16 + i * 32:48 + i * 32]
        if len(entry) < 32:
            break
        if _guid(entry[:16]) == _VHDX_METADATA_REGION:
            offset, = struct.unpack('<Q', entry[16:24])
            return offset
    return None


def vhdx_params(f):
    """VHDX file parameters (fixed/dynamic, differencing), or None."""
    offset = vhdx_metadata_offset(f)
    if offset is None:
        return None
    table = _read_at(f, offset, 32 * (_VHDX_MAX_ENTRIES + 1))
    if len(table) < 32 or table[:8] != b'metadata':
        return None
    count, = struct.unpack('<H', table[10:12])
    for i in range(min(count, _VHDX_MAX_ENTRIES)):
        entry = table[32 + i * 32:64 + i * 32]
        if len(entry) < 32:
            break
        if _guid(entry[:16]) == _VHDX_FILE_PARAMETERS:
            item_offset, item_length = struct.unpack('<II', entry[16:24])
            if item_length < 8:
                return None
            item = _read_at(f, offset + item_offset, 8)
            if len(item) < 8:
                return None
            _block_size, flags = struct.unpack('<II', item)
            return VhdxParams(leave_blocks_allocated=bool(flags & 1),
                              has_parent=bool(flags & 2))
    return None


def qcow2_crypt_method(f):
    """qcow2 header crypt_method: 0 none, 1 AES, 2 LUKS."""
    header = _read_at(f, 0, 36)
    if len(header) < 36:
        return None
    return struct.unpack('>I', header[32:36])[0]


def vmdk_embedded_descriptor(f, max_bytes):
    """The descriptor text embedded in a sparse (KDMV) VMDK, or None."""
    header = _read_at(f, 0, 64)
    if len(header) < 64 or header[:4] != b'KDMV':
        return None
    desc_sector, desc_sectors = struct.unpack('<QQ', header[28:44])
    if not desc_sector or not desc_sectors:
        return None
    return _read_at(f, desc_sector * 512, min(desc_sectors * 512, max_bytes))
