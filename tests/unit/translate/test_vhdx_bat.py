"""vhdx_bat: the payload blocks of a VHDX, or None for anything odd.

Sources made by real qemu-img; the hostile ones are those files with one
field changed.
"""

import os
import struct
import subprocess

import pytest

from nova_xhv.translate import vhdx_bat

MiB = 1024 * 1024
GiB = 1024 * MiB
BLOCK = 8 * MiB


@pytest.fixture
def vhdx(tmp_path):
    """A 6 GiB vhdx, 8 MiB blocks, data in blocks 0, 1 and 643.

    Block 643 lies past the BAT's first sector-bitmap entry (after 512
    blocks).
    """
    raw = str(tmp_path / 'ref.raw')
    with open(raw, 'wb') as f:
        f.truncate(6 * GiB)
        f.seek(MiB)
        f.write(os.urandom(BLOCK))  # blocks 0 and 1
        f.seek(643 * BLOCK + 5)
        f.write(b'x' * 100)
    path = str(tmp_path / 'disk.vhdx')
    subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'vhdx', '-o',
                    'block_size=8M', raw, path], check=True)
    return path


def _runs(path, capacity=6 * GiB):
    with open(path, 'rb') as f:
        data = f.read()

    def read_at(offset, length):
        return data[offset:offset + length]
    return vhdx_bat.data_runs(read_at, len(data), capacity)


def _region(path, guid):
    with open(path, 'rb') as f:
        f.seek(vhdx_bat.REGION_TABLE)
        table = f.read(64 * 1024)
    count, = struct.unpack_from('<I', table, 8)
    for i in range(count):
        at = vhdx_bat.REGION_TABLE + 16 + i * 32
        if vhdx_bat._guid(table[16 + i * 32:32 + i * 32]) == guid:
            offset, length = struct.unpack_from('<QI', table,
                                                16 + i * 32 + 16)
            return at, offset, length
    raise AssertionError('no region %s' % guid)


def _patch(path, offset, data):
    with open(path, 'r+b') as f:
        f.seek(offset)
        f.write(data)


def test_runs_are_the_blocks_with_data(vhdx):
    assert _runs(vhdx) == [(0, 2 * BLOCK), (643 * BLOCK, 644 * BLOCK)]


def test_an_empty_disk_has_no_runs(tmp_path):
    path = str(tmp_path / 'empty.vhdx')
    subprocess.run(['qemu-img', 'create', '-f', 'vhdx', path, '1G'],
                   check=True, stdout=subprocess.DEVNULL)
    assert _runs(path, GiB) == []


def test_a_block_in_an_unknown_state_is_read(vhdx):
    _at, bat, _length = _region(vhdx, vhdx_bat._BAT)
    # Block 700 (BAT entry 701: one bitmap entry before it) marked
    # PARTIALLY_PRESENT: qemu fails reading it, so the writer must ask.
    _patch(vhdx, bat + 8 * 701, struct.pack('<Q', 7))
    assert (700 * BLOCK, 701 * BLOCK) in _runs(vhdx)


def test_another_virtual_size_than_qemus_is_refused(vhdx):
    assert _runs(vhdx, 6 * GiB - MiB) is None


def test_a_bat_past_the_end_of_the_file_is_refused(vhdx):
    at, _offset, length = _region(vhdx, vhdx_bat._BAT)
    _patch(vhdx, at + 16, struct.pack('<Q', 1 << 40))
    assert _runs(vhdx) is None


def test_a_bat_shorter_than_the_disk_needs_is_refused(vhdx):
    at, _offset, _length = _region(vhdx, vhdx_bat._BAT)
    _patch(vhdx, at + 24, struct.pack('<I', 8))
    assert _runs(vhdx) is None


def test_a_missing_region_table_is_refused(vhdx):
    _patch(vhdx, vhdx_bat.REGION_TABLE, b'xxxx')
    assert _runs(vhdx) is None


@pytest.mark.parametrize('block_size, flags', [
    (3 * MiB, 0),          # not a power of two
    (512 * 1024, 0),       # below 1 MiB
    (512 * MiB, 0),        # above 256 MiB
    (BLOCK, 2),            # has a parent
])
def test_file_parameters_qemu_refuses_are_refused(vhdx, block_size, flags):
    _at, metadata, _length = _region(vhdx, vhdx_bat._METADATA)
    with open(vhdx, 'rb') as f:
        f.seek(metadata)
        table = f.read(64 * 1024)
    count, = struct.unpack_from('<H', table, 10)
    for i in range(count):
        entry = table[32 + i * 32:64 + i * 32]
        if vhdx_bat._guid(entry[:16]) == vhdx_bat._FILE_PARAMETERS:
            item, = struct.unpack_from('<I', entry, 16)
            _patch(vhdx, metadata + item, struct.pack('<II', block_size,
                                                      flags))
            break
    assert _runs(vhdx) is None
