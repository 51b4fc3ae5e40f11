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


def vmdk_embedded_descriptor(f, max_bytes):
    """The descriptor text embedded in a sparse (KDMV) VMDK, or None."""
    header = _read_at(f, 0, 64)
    if len(header) < 64 or header[:4] != b'KDMV':
        return None
    desc_sector, desc_sectors = struct.unpack('<QQ', header[28:44])
    if not desc_sector or not desc_sectors:
        return None
    return _read_at(f, desc_sector * 512, min(desc_sectors * 512, max_bytes))


# -- sparse vmdk: the fields qemu 7.2 (block/vmdk.c) trusts -----------------

VMDK_GD_AT_END = 0xffffffffffffffff
# vmdk_parent_open/vmdk_read_cid read this many bytes at this offset of a
# sparse vmdk, whatever descriptorOffset says, and search them with strstr.
QEMU_VMDK_DESC_OFFSET = 0x200
QEMU_VMDK_DESC_SIZE = 20 * 512
_VMDK_MARKER_FOOTER = 3
_VMDK_MARKER_EOS = 0

VmdkSparseHeader = collections.namedtuple(
    'VmdkSparseHeader',
    'version flags capacity granularity desc_sector desc_sectors '
    'num_gtes_per_gt rgd_offset gd_offset grain_offset compress')


def parse_vmdk_sparse_header(data):
    """The VMDK4 header fields (``data`` starts at the magic), or None."""
    if len(data) < 79 or data[:4] != b'KDMV':
        return None
    (version, flags, capacity, granularity, desc_sector, desc_sectors,
     num_gtes, rgd_offset, gd_offset, grain_offset) = struct.unpack(
        '<IIQQQQIQQQ', data[4:72])
    compress, = struct.unpack('<H', data[77:79])
    return VmdkSparseHeader(version, flags, capacity, granularity,
                            desc_sector, desc_sectors, num_gtes, rgd_offset,
                            gd_offset, grain_offset, compress)


def vmdk_sparse_header(f):
    return parse_vmdk_sparse_header(_read_at(f, 0, 512))


def vmdk_stream_footer(f, size):
    """The header copy qemu uses instead of the header, or None.

    qemu reads 1536 bytes at (file sectors x 512) - 1536: a footer marker,
    the footer (a full header) and the end-of-stream marker, and takes
    every field from the footer once the markers check out.
    """
    start = -(-size // 512) * 512 - 1536
    if start < 512:
        return None
    data = _read_at(f, start, 1536)
    if len(data) < 1536:
        data = data.ljust(1536, b'\0')  # qemu reads a partial last sector
    _val, msize, mtype = struct.unpack('<QII', data[:16])
    eos_val, eos_size, eos_type = struct.unpack('<QII', data[1024:1040])
    if msize != 0 or mtype != _VMDK_MARKER_FOOTER or eos_val != 0 or \
            eos_size != 0 or eos_type != _VMDK_MARKER_EOS:
        return None
    return parse_vmdk_sparse_header(data[512:1024])


def vmdk_qemu_descriptor_window(f):
    """The bytes qemu searches for parentFileNameHint/parentCID."""
    return _read_at(f, QEMU_VMDK_DESC_OFFSET, QEMU_VMDK_DESC_SIZE)


# -- qcow2: the header and its extensions, as qemu reads them ---------------

QCOW2_INCOMPAT_DIRTY = 1 << 0
QCOW2_INCOMPAT_CORRUPT = 1 << 1
QCOW2_INCOMPAT_DATA_FILE = 1 << 2
QCOW2_EXT_END = 0
QCOW2_EXT_BACKING_FORMAT = 0xe2792aca
QCOW2_EXT_FEATURE_TABLE = 0x6803f857
QCOW2_EXT_BITMAPS = 0x23852875
QCOW2_EXT_CRYPTO = 0x0537be77
QCOW2_EXT_DATA_FILE = 0x44415441

Qcow2Header = collections.namedtuple(
    'Qcow2Header',
    'version backing_file_offset cluster_bits size crypt_method l1_size '
    'l1_table_offset refcount_table_offset refcount_table_clusters '
    'nb_snapshots snapshots_offset incompatible header_length extensions')


class HeaderError(ValueError):
    """A header field is out of range or runs past its bounds."""


def qcow2_header(f):
    """The qcow2 header and its extension types, or None if not qcow2.

    Raises HeaderError when the header or its extension area is corrupt.
    Version 2 headers are 72 bytes with no feature bits: their extensions
    start right there (a reader of v3 fields would take an extension for
    feature bits).
    """
    data = _read_at(f, 0, 104)
    if len(data) < 72 or data[:4] != b'QFI\xfb':
        return None
    (version, backing_offset, _backing_size, cluster_bits, size, crypt,
     l1_size, l1_offset, rc_offset, rc_clusters, nb_snapshots,
     snap_offset) = struct.unpack('>IQIIQIIQQIIQ', data[4:72])
    if version not in (2, 3):
        raise HeaderError('qcow2 version %d' % version)
    if not 9 <= cluster_bits <= 21:
        raise HeaderError('qcow2 cluster_bits %d out of range' % cluster_bits)
    incompatible = 0
    header_length = 72
    if version == 3:
        if len(data) < 104:
            raise HeaderError('qcow2 v3 header truncated')
        incompatible, = struct.unpack('>Q', data[72:80])
        header_length, = struct.unpack('>I', data[100:104])
        if header_length < 104 or header_length % 8:
            raise HeaderError('qcow2 header_length %d' % header_length)
    cluster = 1 << cluster_bits
    # qemu (qcow2_read_extensions) reads extensions up to the backing file
    # name, or to the end of the first cluster.
    end = min(backing_offset or cluster, cluster)
    area = _read_at(f, 0, end)
    extensions = []
    offset = header_length
    while offset < end:
        if offset + 8 > len(area):
            raise HeaderError('qcow2 header extensions run past %s' % (
                'the end of the file' if len(area) < end
                else 'their area'))
        ext_type, ext_len = struct.unpack('>II', area[offset:offset + 8])
        offset += 8
        if ext_len > end - offset:
            raise HeaderError('qcow2 header extension 0x%08x is larger than '
                              'its area' % ext_type)
        if ext_type == QCOW2_EXT_END:
            break
        extensions.append(ext_type)
        offset += (ext_len + 7) & ~7
    return Qcow2Header(version, backing_offset, cluster_bits, size, crypt,
                       l1_size, l1_offset, rc_offset, rc_clusters,
                       nb_snapshots, snap_offset, incompatible,
                       header_length, tuple(extensions))


VMDK_FLAG_RGD = 1 << 1
VMDK_MAX_GTES_PER_GT = 512  # qemu refuses larger grain tables
VMDK_MAX_GD_ENTRIES = 1024 * 1024  # 32 TiB in 64 KiB grains


def vmdk_table_problems(f, header, size):
    """Where a sparse vmdk's grain directory or tables leave the file.

    ``header`` is the one qemu uses (the footer of a stream).  qemu-img
    convert reads a table past the end of the file as zeros and succeeds.
    """
    if not 0 < header.num_gtes_per_gt <= VMDK_MAX_GTES_PER_GT or \
            not header.granularity:
        return ['vmdk grain table size %d or grain size %d is invalid' % (
            header.num_gtes_per_gt, header.granularity)]
    per_entry = header.num_gtes_per_gt * header.granularity
    entries = -(-header.capacity // per_entry)
    if entries > VMDK_MAX_GD_ENTRIES:
        return ['vmdk grain directory of %d entries is implausibly large'
                % entries]
    problems = []
    directories = [('grain directory', header.gd_offset)]
    if header.flags & VMDK_FLAG_RGD:
        directories.append(('redundant grain directory', header.rgd_offset))
    table_bytes = header.num_gtes_per_gt * 4
    for name, sector in directories:
        start = sector * 512
        if start + entries * 4 > size:
            problems.append('vmdk %s lies past the end of the file' % name)
            continue
        data = _read_at(f, start, entries * 4)
        for table in struct.unpack('<%dI' % entries, data):
            if table and table * 512 + table_bytes > size:
                problems.append('vmdk %s points at a grain table past the '
                                'end of the file (truncated or corrupt)' %
                                name)
                break
    return problems
