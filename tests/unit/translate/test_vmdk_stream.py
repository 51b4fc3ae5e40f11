"""The streamOptimized vmdk decoder against hand-made streams.

Real qemu-made and VMware-shaped streams, decoded through the engine and
compared with qemu-img's own reading, are in
tests/functional/translate/test_stream_decoder.py.
"""

import io
import os
import struct
import zlib

import pytest
from zlib_ng import zlib_ng

from nova_xhv.translate import vmdk_stream

GRAIN = 128  # sectors
GRAIN_BYTES = GRAIN * 512
OVERHEAD = 4  # sectors: header + 3 of descriptor room


def header(capacity_sectors, grain=GRAIN, flags=0x30001, algorithm=1,
           overhead=OVERHEAD, magic=b'KDMV', version=3):
    data = struct.pack('<4sIIQQQQIQQQ?4sH', magic, version, flags,
                       capacity_sectors, grain, 1, 1, 512, 0,
                       0xffffffffffffffff, overhead, False, b'\n \r\n',
                       algorithm)
    return data + bytes(512 - len(data))


def pad(data):
    return data + bytes(-len(data) % 512)


def grain(lba, data, compressed=None):
    compressed = zlib.compress(data) if compressed is None else compressed
    return pad(struct.pack('<QI', lba, len(compressed)) + compressed)


def metadata(kind, sectors=1):
    return pad(struct.pack('<QII', sectors, 0, kind)) + bytes(512 * sectors)


EOS = metadata(vmdk_stream.MARKER_EOS, 0)


def stream(capacity_sectors, *records, **header_args):
    body = b''.join(records)
    head = header(capacity_sectors, **header_args)
    return head + bytes((OVERHEAD - 1) * 512) + body


def decode(data, expected_capacity=None, chunk=None, zlib_module=None):
    f = io.BytesIO(data)
    read = f.read if chunk is None else (lambda n: f.read(min(n, chunk)))
    decoder = vmdk_stream.Decoder(read, expected_capacity, zlib_module)
    return decoder, [(o, bytes(d)) for o, d in decoder.grains()]


# Every inflate test runs with zlib-ng (the default) and with the system
# zlib (the fallback where zlib-ng has no wheel).
ZLIBS = pytest.mark.parametrize('zlib_module', [zlib_ng, zlib],
                                ids=['zlib-ng', 'zlib'])


def test_zlib_ng_inflates_by_default():
    assert vmdk_stream.DEFAULT_ZLIB is zlib_ng


@ZLIBS
def test_grains_in_any_order_with_metadata_and_end_marker(zlib_module):
    a, b = os.urandom(GRAIN_BYTES), os.urandom(GRAIN_BYTES)
    data = stream(16 * GRAIN, grain(5 * GRAIN, a),
                  metadata(vmdk_stream.MARKER_GT, 4), grain(0, b),
                  metadata(vmdk_stream.MARKER_GD), metadata(
                      vmdk_stream.MARKER_FOOTER), EOS,
                  grain(GRAIN, a))  # after the end: padding, not data
    for chunk in (None, 1000, 7):  # records straddling reads
        decoder, grains = decode(data, 16 * GRAIN * 512, chunk,
                                 zlib_module)
        assert grains == [(5 * GRAIN_BYTES, a), (0, b)]
        assert decoder.saw_end_marker
        assert decoder.grains_seen == 2


def test_stream_without_end_marker_ends_on_a_record_boundary():
    a = os.urandom(GRAIN_BYTES)
    data = stream(2 * GRAIN, grain(GRAIN, a))
    decoder, grains = decode(data)
    assert grains == [(GRAIN_BYTES, a)]
    assert not decoder.saw_end_marker
    assert decoder.consumed == len(data)  # the caller compares with size


def test_zero_grains_are_skipped_and_the_last_grain_is_clipped():
    capacity = 2 * GRAIN - 8  # not a whole number of grains
    tail = os.urandom(GRAIN_BYTES)
    data = stream(capacity, grain(0, bytes(GRAIN_BYTES)),
                  grain(GRAIN, tail), EOS)
    _decoder, grains = decode(data)
    assert grains == [(GRAIN_BYTES, tail[:(GRAIN - 8) * 512])]


def test_short_grain_is_kept_as_it_is():
    data = stream(GRAIN, grain(0, b'x' * 1000), EOS)
    assert decode(data)[1] == [(0, b'x' * 1000)]


@pytest.mark.parametrize('cut', [1, 11, 600, 700])
def test_truncated_inside_a_record(cut):
    data = stream(2 * GRAIN, grain(0, os.urandom(GRAIN_BYTES)),
                  grain(GRAIN, os.urandom(GRAIN_BYTES)))
    with pytest.raises(vmdk_stream.StreamError, match='stream ended'):
        decode(data[:len(data) - cut])


@pytest.mark.parametrize('lba,why', [
    (16 * GRAIN, 'not a grain boundary inside'),
    (2 ** 63, 'not a grain boundary inside'),
    (3, 'not a grain boundary inside'),
])
def test_grain_outside_the_disk_or_misaligned(lba, why):
    data = stream(16 * GRAIN, grain(lba, b'data'), EOS)
    with pytest.raises(vmdk_stream.StreamError, match=why):
        decode(data)


@ZLIBS
def test_compressible_grains_inflate(zlib_module):
    text = (b'the quick brown fox ' * 4000)[:GRAIN_BYTES]
    data = stream(4 * GRAIN, grain(GRAIN, text), grain(2 * GRAIN, b'\x01'),
                  EOS)
    assert decode(data, zlib_module=zlib_module)[1] == [
        (GRAIN_BYTES, text), (2 * GRAIN_BYTES, b'\x01')]


@ZLIBS
def test_deflate_bomb_stops_at_one_grain(zlib_module):
    bomb = zlib.compress(bytes(64 * GRAIN_BYTES), 9)  # 4 MiB of zeros
    assert len(bomb) < GRAIN_BYTES
    data = stream(16 * GRAIN, grain(0, b'', compressed=bomb), EOS)
    with pytest.raises(vmdk_stream.StreamError,
                       match='more than one 65536-byte grain'):
        decode(data, zlib_module=zlib_module)


@ZLIBS
def test_garbage_and_truncated_deflate(zlib_module):
    with pytest.raises(vmdk_stream.StreamError, match='does not inflate'):
        decode(stream(GRAIN, grain(0, b'', compressed=b'\xff' * 100), EOS),
               zlib_module=zlib_module)
    cut = zlib.compress(os.urandom(1000))[:-10]
    with pytest.raises(vmdk_stream.StreamError, match='truncated deflate'):
        decode(stream(GRAIN, grain(0, b'', compressed=cut), EOS),
               zlib_module=zlib_module)


@ZLIBS
def test_wrong_checksum_is_refused(zlib_module):
    # Each grain is a zlib stream ending in the adler32 of its data: a
    # grain damaged where it is stored fails there, as in qemu.
    damaged = bytearray(zlib.compress(os.urandom(GRAIN_BYTES)))
    damaged[-1] ^= 0x01
    data = stream(GRAIN, grain(0, b'', compressed=bytes(damaged)), EOS)
    with pytest.raises(vmdk_stream.StreamError, match='does not inflate'):
        decode(data, zlib_module=zlib_module)


def test_oversized_compressed_grain():
    data = stream(GRAIN, pad(struct.pack('<QI', 0, 10 * GRAIN_BYTES)), EOS)
    with pytest.raises(vmdk_stream.StreamError, match='compressed bytes'):
        decode(data)


def test_unknown_marker():
    with pytest.raises(vmdk_stream.StreamError, match='marker type 9'):
        decode(stream(GRAIN, metadata(9), EOS))


def test_capacity_must_be_the_inspected_one():
    data = stream(GRAIN, EOS)
    with pytest.raises(vmdk_stream.StreamError,
                       match='changed after inspection'):
        decode(data, expected_capacity=2 * GRAIN * 512)


@pytest.mark.parametrize('args,why', [
    ({'magic': b'COWD'}, 'no KDMV magic'),
    ({'version': 9}, 'version 9'),
    ({'flags': 0x10001}, 'not streamOptimized'),
    ({'flags': 0x20001}, 'not streamOptimized'),
    ({'algorithm': 2}, 'not deflate'),
    ({'grain': 100}, 'power of two'),
    ({'grain': 4096}, 'power of two'),
    ({'overhead': 0}, 'no room for the header'),
])
def test_headers_the_decoder_does_not_take(args, why):
    with pytest.raises(vmdk_stream.StreamError, match=why):
        vmdk_stream.parse_header(header(GRAIN, **args))


def test_zero_capacity_and_short_header():
    with pytest.raises(vmdk_stream.StreamError, match='capacity is zero'):
        vmdk_stream.parse_header(header(0))
    with pytest.raises(vmdk_stream.StreamError, match='truncated'):
        vmdk_stream.parse_header(b'KDMV')


def test_text_mode_transfer_is_caught():
    head = bytearray(header(GRAIN))
    head[73:77] = b'\n \n\n'
    with pytest.raises(vmdk_stream.StreamError, match='text mode'):
        vmdk_stream.parse_header(bytes(head))
