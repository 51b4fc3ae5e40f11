"""The streamOptimized vmdk writer's layout, byte by byte (no qemu)."""

import io
import os
import struct
import zlib

import pytest

from nova_xhv.translate import exceptions
from nova_xhv.translate import stream_write
from nova_xhv.translate import vmdk_descriptor
from nova_xhv.translate import vmdk_stream
from nova_xhv.translate import vmdk_writer as vw

MiB = 1024 * 1024
SECTOR = 512
GRAIN = vw.GRAIN
TEXT = (b'the quick brown fox jumps over the lazy dog; ' * 2000)[:GRAIN]


def write_stream(capacity, chunks, workers=0, level=1, name='disk.vmdk'):
    out = io.BytesIO()
    writer = vw.StreamWriter(out.write, capacity, name, level=level,
                             workers=workers)
    for offset, data in chunks:
        writer.add_chunk(offset, data)
    writer.close()
    assert writer.position == len(out.getvalue())
    return out.getvalue(), writer


def records(stream):
    """Every record after the overhead: (file offset, lba, size, kind)."""
    found = []
    pos = vw.OVERHEAD_SECTORS * SECTOR
    while pos < len(stream):
        lba, size = struct.unpack_from('<QI', stream, pos)
        if size:
            found.append((pos, lba, size, 'grain'))
            pos += -(-(12 + size) // SECTOR) * SECTOR
            continue
        kind = struct.unpack_from('<I', stream, pos + 12)[0]
        found.append((pos, lba, 0, kind))
        pos += SECTOR + lba * SECTOR
        if kind == vw.MARKER_EOS:
            break
    assert pos == len(stream)
    return found


def header_fields(sector):
    return struct.unpack_from('<4sIIQQQQIQQQB4sH', sector)


def test_header_fields_as_the_specification_lays_them_out():
    data = vw.header(12345)
    assert len(data) == SECTOR
    (magic, version, flags, capacity, grain, desc_offset, desc_size, gtes,
     rgd, gd, overhead, unclean, newline, algorithm) = header_fields(data)
    assert magic == b'KDMV' and version == 3
    assert flags == 0x30001  # newline check, compressed grains, markers
    assert capacity == 12345 and grain == 128
    assert (desc_offset, desc_size) == (1, 20)
    assert gtes == 512 and rgd == 0
    assert gd == 0xffffffffffffffff  # GD_AT_END: the footer says where
    assert overhead == 128 and unclean == 0
    assert newline == b'\n \r\n' and algorithm == 1
    assert data[_header_size():] == bytes(SECTOR - _header_size())


def _header_size():
    return struct.calcsize('<4sIIQQQQIQQQB4sH')


def test_descriptor_is_what_the_engine_and_vsphere_read():
    text = vw.descriptor(2 * MiB // SECTOR, 'disk-1.vmdk',
                         adapter='lsilogic', hw_version=7, cid=0xabc)
    assert len(text) == 20 * SECTOR
    parsed = vmdk_descriptor.parse(text)
    assert parsed.create_type == 'streamOptimized'
    assert not parsed.has_parent
    assert vmdk_descriptor.sparse_problems(parsed) == []
    extent = parsed.extents[0]
    assert (extent.access, extent.sectors, extent.type, extent.filename) == (
        'RW', 4096, 'SPARSE', 'disk-1.vmdk')
    assert parsed.fields['ddb.adaptertype'] == 'lsilogic'
    assert parsed.fields['ddb.virtualhwversion'] == '7'
    assert parsed.fields['ddb.geometry.heads'] == '255'
    assert parsed.fields['cid'] == '00000abc'


@pytest.mark.parametrize('name', ['a"b.vmdk', 'a\nb.vmdk'])
def test_descriptor_refuses_names_that_break_it(name):
    with pytest.raises(vw.WriteError):
        vw.descriptor(8, name)


def test_descriptor_refuses_unknown_adapter():
    with pytest.raises(vw.WriteError):
        vw.descriptor(8, 'x.vmdk', adapter='nvme"')


@pytest.mark.parametrize('length', [0, 1, 65535, 65536, 65537, 200000])
def test_stored_blocks_are_a_valid_zlib_stream(length):
    data = os.urandom(length)
    stream = b''.join(bytes(p) for p in vw.stored_zlib(data))
    assert zlib.decompress(stream) == data
    # Two bytes of header, 5 per stored block, 4 of adler32: a copy.
    blocks = max(1, -(-length // 0xffff))
    assert len(stream) == length + 2 + 5 * blocks + 4


def test_grains_deflate_when_it_pays_and_are_stored_when_not():
    noise = os.urandom(GRAIN)
    parts, length = vw.encode_grain(128, noise)
    record = b''.join(bytes(p) for p in parts)
    assert len(record) == length and length % SECTOR == 0
    lba, size = struct.unpack_from('<QI', record)
    assert lba == 128
    assert record[12:15] == b'\x78\x01\x00'  # stored, not final
    assert zlib.decompress(record[12:12 + size]) == noise
    parts, length = vw.encode_grain(0, TEXT)
    record = b''.join(bytes(p) for p in parts)
    size = struct.unpack_from('<QI', record)[1]
    assert size < GRAIN // 10
    assert zlib.decompress(record[12:12 + size]) == TEXT
    assert record[12 + size:] == bytes(length - 12 - size)


def test_level_zero_stores_everything():
    parts, _length = vw.encode_grain(0, TEXT, level=0)
    record = b''.join(bytes(p) for p in parts)
    assert record[12:15] == b'\x78\x01\x00'


@pytest.mark.parametrize('workers', [0, 1, 3])
def test_layout_grains_tables_directory_footer_eos(workers):
    # 3 grain tables' worth of disk (96 MiB) plus a partial last grain:
    # data in table 0 and table 2, none in table 1, zero grains skipped.
    capacity = 3 * vw.GT_COVERS + 7 * SECTOR
    noise = os.urandom(GRAIN)
    chunks = [(0, bytearray(TEXT + bytes(GRAIN) + noise)),
              (vw.GT_COVERS - GRAIN, bytearray(noise)),
              (2 * vw.GT_COVERS + 5 * GRAIN, bytearray(TEXT)),
              (3 * vw.GT_COVERS, bytearray(noise[:7 * SECTOR] +
                                           bytes(GRAIN - 7 * SECTOR)))]
    stream, writer = write_stream(capacity, chunks, workers=workers)
    assert writer.grains_written == 5
    assert header_fields(stream[:SECTOR])[9] == vw.GD_AT_END
    found = records(stream)
    kinds = [r[3] for r in found]
    assert kinds == ['grain', 'grain', 'grain', vw.MARKER_GT,
                     'grain', vw.MARKER_GT, 'grain', vw.MARKER_GT,
                     vw.MARKER_GD, vw.MARKER_FOOTER, vw.MARKER_EOS]
    grains = [r for r in found if r[3] == 'grain']
    assert [g[1] for g in grains] == [
        0, 256, (vw.GT_COVERS - GRAIN) // SECTOR,
        (2 * vw.GT_COVERS + 5 * GRAIN) // SECTOR,
        3 * vw.GT_COVERS // SECTOR]
    # The footer: its marker, a header with the real directory offset,
    # then the end-of-stream marker as the very last sector.
    footer = header_fields(stream[-2 * SECTOR:-SECTOR])
    gd_offset = footer[9]
    assert footer[3] == capacity // SECTOR
    assert stream[-SECTOR:] == bytes(SECTOR)
    gd_marker = [r for r in found if r[3] == vw.MARKER_GD][0]
    assert gd_offset * SECTOR == gd_marker[0] + SECTOR
    assert gd_marker[1] == 1  # 4 tables x 4 bytes: one sector
    gd = struct.unpack_from('<4I', stream, gd_offset * SECTOR)
    gt_markers = [r for r in found if r[3] == vw.MARKER_GT]
    assert [m[1] for m in gt_markers] == [4, 4, 4]
    # Table 1 has no data: no table, directory entry 0.
    assert gd[1] == 0
    assert [gd[0], gd[2], gd[3]] == [
        (m[0] + SECTOR) // SECTOR for m in gt_markers]
    for gt_sector, first_grain in ((gd[0], 0), (gd[2], 1024),
                                   (gd[3], 1536)):
        table = struct.unpack_from('<512I', stream, gt_sector * SECTOR)
        for index, entry in enumerate(table):
            match = [g for g in grains
                     if g[1] == (first_grain + index) * 128]
            assert entry == (match[0][0] // SECTOR if match else 0)


def test_the_decoder_reads_back_what_was_written():
    capacity = 5 * MiB + 3 * SECTOR
    disk = bytearray(capacity)
    disk[MiB:MiB + len(TEXT)] = TEXT
    disk[3 * MiB + 100:3 * MiB + 100 + 70000] = os.urandom(70000)
    disk[-SECTOR:] = b'\xee' * SECTOR
    padded = bytes(disk) + bytes(-len(disk) % GRAIN)
    stream, _writer = write_stream(capacity, [(0, padded)], workers=2)
    decoded = bytearray(capacity)
    decoder = vmdk_stream.Decoder(io.BytesIO(stream).read, capacity)
    for offset, data in decoder.grains():
        decoded[offset:offset + len(data)] = data
    assert decoder.saw_end_marker
    assert decoded == disk


def test_memory_is_bounded_by_the_workers_not_the_disk():
    writer = vw.StreamWriter(io.BytesIO().write, 64 * MiB, 'x.vmdk',
                             workers=2)
    try:
        for offset in range(0, 64 * MiB, MiB):
            writer.add_chunk(offset, bytearray(os.urandom(MiB)))
            assert len(writer._pending) <= 4
    finally:
        writer.close()


@pytest.mark.parametrize('offset, length', [
    (512, GRAIN), (0, GRAIN + 512), (8 * MiB, GRAIN)])
def test_chunks_must_be_grains_in_order_inside_the_disk(offset, length):
    writer = vw.StreamWriter(io.BytesIO().write, 4 * MiB, 'x.vmdk',
                             workers=0)
    writer.add_chunk(0, bytearray(GRAIN))
    with pytest.raises(vw.WriteError):
        writer.add_chunk(offset, bytearray(length))
    with pytest.raises(vw.WriteError):
        writer.add_chunk(0, bytearray(GRAIN))  # behind the last one


@pytest.mark.parametrize('capacity, level', [(0, 1), (1000, 1), (512, 10)])
def test_refuses_bad_capacity_or_level(capacity, level):
    with pytest.raises(vw.WriteError):
        vw.StreamWriter(io.BytesIO().write, capacity, 'x.vmdk', level=level,
                        workers=0)


def test_grain_tables_cannot_point_past_2_tib():
    writer = vw.StreamWriter(io.BytesIO().write, 4 * MiB, 'x.vmdk',
                             workers=0)
    writer.position = (vw.MAX_FILE_SECTORS - 1) * SECTOR
    with pytest.raises(vw.WriteError):
        writer.add_chunk(0, bytearray(TEXT))


def _written(tmp_path, capacity=4 * MiB):
    stream, _writer = write_stream(capacity, [(0, bytearray(TEXT))])
    path = tmp_path / 'out.vmdk'
    path.write_bytes(stream)
    return path, stream


def test_check_output_accepts_the_writers_stream(tmp_path):
    path, _stream = _written(tmp_path)
    assert stream_write.check_output(str(path)) == 4 * MiB


@pytest.mark.parametrize('damage', ['truncate', 'eos', 'footer-capacity',
                                    'descriptor-parent', 'gd-offset'])
def test_check_output_refuses_damaged_streams(tmp_path, damage):
    path, stream = _written(tmp_path)
    data = bytearray(stream)
    if damage == 'truncate':
        data = data[:-SECTOR]
    elif damage == 'eos':
        data[-SECTOR] = 1
    elif damage == 'footer-capacity':
        struct.pack_into('<Q', data, len(data) - 2 * SECTOR + 12, 16)
    elif damage == 'descriptor-parent':
        at = data.index(b'parentCID=ffffffff')
        data[at:at + 18] = b'parentCID=12345678'
    elif damage == 'gd-offset':
        struct.pack_into('<Q', data, len(data) - 2 * SECTOR + 56,
                         len(data) // SECTOR)
    path.write_bytes(bytes(data))
    with pytest.raises(exceptions.ConversionFailed):
        stream_write.check_output(str(path))


class _FakeStatus(object):
    """block_status answers from a list of (length, flags), in pieces."""

    def __init__(self, extents, piece=3):
        self._extents = extents
        self._piece = piece

    def block_status(self, offset, length):
        at = 0
        found = []
        for size, flags in self._extents:
            if at + size > offset:
                start = max(at, offset)
                found.append((at + size - start, flags))
            at += size
        return found[:self._piece]


def test_data_runs_are_grain_aligned_and_skip_zero_extents():
    from nova_xhv.translate import write_child
    zero = 2  # NBD_STATE_ZERO
    hole = 1 | 2
    extents = [(GRAIN + 100, 0), (4 * GRAIN, hole), (512, 0),
               (GRAIN, zero), (10, 0), (3 * GRAIN - 622, hole),
               (GRAIN // 2, 0)]
    capacity = sum(e[0] for e in extents)
    runs = list(write_child.data_runs(_FakeStatus(extents), capacity))
    # 0..GRAIN+100 -> grains 0-1; 5G+100..5G+612 -> grain 5; the 10 bytes
    # at 6G+612 -> grain 6, merged with 5; the tail -> the last grain.
    assert runs == [(0, 2 * GRAIN), (5 * GRAIN, 7 * GRAIN),
                    (9 * GRAIN, 10 * GRAIN)]
    assert capacity == 9 * GRAIN + GRAIN // 2
