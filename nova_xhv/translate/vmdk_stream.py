"""Decode a streamOptimized vmdk front to back, in one sequential pass.

A streamOptimized vmdk (VMware's export format, and the format vSphere
stores XHV's disks in) was made for streaming: after the header and the
descriptor come markers, each compressed grain behind a 12-byte marker that
names its guest sector, then the grain tables, directory and footer in
marked blocks, and an end-of-stream marker.  It can be decoded in file
order without its tables, so a remote disk needs one GET and no seeks.

qemu's vmdk driver reads it through the tables instead, under one lock, and
reads two clusters for every compressed grain (in case marker and data
straddle them): for a 1 GiB disk, 2 GiB of reads and, measured on qemu 7.2,
1.7 s of system time spent mapping and unmapping a 128 KiB buffer per
grain.  Decoding the stream here and letting qemu write the result (see
stream_convert) costs about a third of that.

Everything this reads is hostile: every marker is checked before it is
used, a grain must name a grain-aligned sector inside the disk's capacity,
inflate to at most one grain (a deflate bomb stops there), and the stream
must end with its end-of-stream marker (a truncated transfer is an error,
never a shorter disk).  Pure: no Nova, no Cinder, no I/O but ``read``.
"""

import dataclasses
import struct
import zlib

try:
    # zlib-ng: the same API and stream format; its checksum (adler32, which
    # every grain carries and which is checked) is SIMD, 5x faster than
    # the system zlib's, and it inflates about 1.5x faster.
    from zlib_ng import zlib_ng as DEFAULT_ZLIB
except ImportError:  # pragma: no cover - a platform without its wheel
    DEFAULT_ZLIB = zlib

SECTOR = 512
MAGIC = b'KDMV'
_HEADER = struct.Struct('<4sIIQQQQIQQQ?4sH')
_MARKER = struct.Struct('<QI')
_FLAG_VALID_NEWLINE = 1
_FLAG_COMPRESSED = 1 << 16
_FLAG_MARKERS = 1 << 17
_COMPRESS_DEFLATE = 1
_NEWLINE_CHARS = b'\n \r\n'
# Grain sizes this decoder takes: VMware uses 128 sectors (64 KiB); the
# format allows any power of two >= 8.  Larger grains only cost memory.
MIN_GRAIN_SECTORS = 8
MAX_GRAIN_SECTORS = 2048  # 1 MiB

MARKER_EOS = 0
MARKER_GT = 1
MARKER_GD = 2
MARKER_FOOTER = 3
_METADATA_MARKERS = (MARKER_GT, MARKER_GD, MARKER_FOOTER)
_READ_CHUNK = 4 * 1024 * 1024


class StreamError(Exception):
    """The stream is not a decodable streamOptimized vmdk."""


@dataclasses.dataclass(frozen=True)
class StreamHeader:
    """The fields of a sparse-extent header this decoder relies on."""

    capacity_sectors: int
    grain_sectors: int
    overhead_sectors: int

    @property
    def capacity(self):
        return self.capacity_sectors * SECTOR

    @property
    def grain_bytes(self):
        return self.grain_sectors * SECTOR

    @property
    def max_compressed(self):
        # deflate's worst case is a few bytes per 16 KiB stored block;
        # anything far above one grain is not a grain.
        return self.grain_bytes + self.grain_bytes // 8 + 1024


def parse_header(data):
    """StreamHeader of the first 512 bytes, or StreamError saying why not.

    Only what this decoder can decode passes: compressed grains with
    markers, deflate, a sane grain size and data after the header.
    """
    if len(data) < _HEADER.size:
        raise StreamError('the vmdk header is truncated')
    (magic, version, flags, capacity, grain, _desc_offset, _desc_size,
     _gtes, _rgd, _gd, overhead, _unclean, newline,
     algorithm) = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise StreamError('not a sparse vmdk (no KDMV magic)')
    if version not in (1, 2, 3):
        raise StreamError('vmdk version %d is unknown' % version)
    if not flags & _FLAG_COMPRESSED or not flags & _FLAG_MARKERS:
        raise StreamError('the vmdk has no compressed grains with markers '
                          '(not streamOptimized)')
    if flags & _FLAG_VALID_NEWLINE and newline != _NEWLINE_CHARS:
        raise StreamError('the vmdk header\'s newline check failed (the '
                          'file was transferred in text mode)')
    if algorithm != _COMPRESS_DEFLATE:
        raise StreamError('vmdk compression algorithm %d is not deflate'
                          % algorithm)
    if grain < MIN_GRAIN_SECTORS or grain > MAX_GRAIN_SECTORS or \
            grain & (grain - 1):
        raise StreamError('vmdk grain size of %d sectors is not a power of '
                          'two between %d and %d' % (
                              grain, MIN_GRAIN_SECTORS, MAX_GRAIN_SECTORS))
    if capacity <= 0:
        raise StreamError('vmdk capacity is zero')
    if overhead < 1:
        raise StreamError('vmdk overhead of %d sectors leaves no room for '
                          'the header' % overhead)
    return StreamHeader(capacity_sectors=capacity, grain_sectors=grain,
                        overhead_sectors=overhead)


class _Reader(object):
    """Sequential reads of exact lengths over a ``read(n)`` callable.

    Records are handed out as memoryviews of the chunks ``read`` returned
    (no copy) unless one straddles two chunks.
    """

    def __init__(self, read):
        self._read = read
        self._chunk = b''
        self._pos = 0
        self.consumed = 0  # bytes of the stream handed out or skipped

    def _more(self, wanted):
        chunk = self._read(max(_READ_CHUNK, wanted))
        return bytes(chunk) if chunk else b''

    def at_end(self):
        if self._pos < len(self._chunk):
            return False
        self._chunk, self._pos = self._more(1), 0
        return not self._chunk

    def take(self, length):
        """Exactly ``length`` bytes, or StreamError at the end."""
        end = self._pos + length
        if end <= len(self._chunk):
            data = memoryview(self._chunk)[self._pos:end]
            self._pos = end
        else:
            parts = [self._chunk[self._pos:]]
            have = len(parts[0])
            while have < length:
                chunk = self._more(length - have)
                if not chunk:
                    raise StreamError(
                        'the stream ended %d bytes in, inside a record and '
                        'before its end-of-stream marker'
                        % (self.consumed + have))
                parts.append(chunk)
                have += len(chunk)
            self._chunk = parts[-1]
            self._pos = len(self._chunk) - (have - length)
            parts[-1] = parts[-1][:self._pos]
            data = b''.join(parts)
        self.consumed += length
        return data

    def skip(self, length):
        while length:
            step = min(length, _READ_CHUNK)
            self.take(step)
            length -= step


class Decoder(object):
    """One pass over one stream.

    ``read(n)`` returns up to ``n`` further bytes of the stream (b'' at its
    end).  ``grains()`` yields ``(offset, data)`` for every grain holding
    non-zero data: guest byte offsets, grain-aligned, inside the capacity;
    ``data`` is at most one grain, clipped to the capacity.  A later grain
    for the same offset replaces an earlier one, as a write would.  Raises
    StreamError on anything that is not a well-formed stream, including a
    header whose capacity differs from ``expected_capacity`` (bytes).
    ``consumed`` tells how many bytes of the stream were read so far.

    The stream ends with its end-of-stream marker (``saw_end_marker``), or
    at the end of the data on a record boundary: then the caller checks
    that it got every byte it expected.
    """

    def __init__(self, read, expected_capacity=None, zlib_module=None):
        self._reader = _Reader(read)
        self._zlib = zlib_module or DEFAULT_ZLIB
        self._expected_capacity = expected_capacity
        self.grains_seen = 0
        self.saw_end_marker = False

    @property
    def consumed(self):
        return self._reader.consumed

    def grains(self):
        reader = self._reader
        header = parse_header(reader.take(SECTOR))
        if self._expected_capacity is not None and \
                header.capacity != self._expected_capacity:
            raise StreamError(
                'the stream\'s header says %d bytes of capacity, the '
                'inspected image %d: the source changed after inspection' %
                (header.capacity, self._expected_capacity))
        reader.skip((header.overhead_sectors - 1) * SECTOR)
        grain_bytes = header.grain_bytes
        zero_grain = bytes(grain_bytes)
        while not reader.at_end():
            record_at = reader.consumed
            marker = reader.take(_MARKER.size)
            lba, size = _MARKER.unpack(marker)
            if size == 0:
                # A metadata marker fills one sector: lba counts the
                # sectors of metadata after it, then a 4-byte type.
                kind, = struct.unpack('<I', reader.take(4))
                reader.skip(SECTOR - _MARKER.size - 4)
                if kind == MARKER_EOS:
                    # What follows is padding (qemu pads with zeros, and a
                    # zero sector reads as this marker).
                    self.saw_end_marker = True
                    return
                if kind not in _METADATA_MARKERS:
                    raise StreamError('unknown vmdk marker type %d at byte '
                                      '%d' % (kind, record_at))
                reader.skip(lba * SECTOR)
                continue
            if size > header.max_compressed:
                raise StreamError(
                    'grain at byte %d claims %d compressed bytes, more than '
                    'a %d-byte grain can take' % (record_at, size,
                                                  grain_bytes))
            if lba % header.grain_sectors or lba >= header.capacity_sectors:
                raise StreamError(
                    'grain at byte %d names sector %d, which is not a grain '
                    'boundary inside the %d-sector disk' % (
                        record_at, lba, header.capacity_sectors))
            padded = -(-(_MARKER.size + size) // SECTOR) * SECTOR
            compressed = reader.take(padded - _MARKER.size)
            data = _inflate(self._zlib, compressed, size, grain_bytes,
                            record_at)
            self.grains_seen += 1
            offset = lba * SECTOR
            data = data[:header.capacity - offset]
            if not _is_zero(data, zero_grain):
                yield offset, data


def _is_zero(data, zero_grain):
    if len(data) == len(zero_grain):
        return data == zero_grain  # a memcmp that stops at the first byte
    return not any(data)


def _inflate(zlib_module, compressed, size, grain_bytes, record_at):
    inflater = zlib_module.decompressobj()
    try:
        data = inflater.decompress(compressed[:size], grain_bytes + 1)
    except zlib_module.error as error:
        raise StreamError('grain at byte %d does not inflate: %s'
                          % (record_at, error))
    if len(data) > grain_bytes or inflater.unconsumed_tail:
        raise StreamError('grain at byte %d inflates to more than one '
                          '%d-byte grain' % (record_at, grain_bytes))
    if not inflater.eof:
        raise StreamError('grain at byte %d is a truncated deflate stream'
                          % record_at)
    return data
