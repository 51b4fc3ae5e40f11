"""The gate by class: where a parent reference hides, what carries it,
what it points at, local or remote, and whether qemu alone still holds.

Two layers are tested separately:

* the inspection refuses every case before any conversion process runs
  (``launches`` records every qemu-img and decoder start);
* with the inspection bypassed (its verdict forced to "safe"), qemu-img
  opens the file through the gate's block-node spec and still reads no
  byte of the host canary: backing files are switched off in qemu itself.

Controls prove each case is real: a naive ``qemu-img convert -f <fmt>``
of the same file copies the canary (or hangs on a FIFO).
"""

import os
import random
import re
import struct
import subprocess
import sys
import time

import pytest

from nova_xhv import translate
from nova_xhv.translate import engine
from nova_xhv.translate import headers
from nova_xhv.translate import remote
from tests.fixtures import disks
from tests.fixtures import http_range
from tests.functional.translate import helpers
from tests.functional.translate import test_hostile

MiB = 1024 * 1024
GiB = 1024 * MiB
SIZE = 4 * MiB
OPTIONS = dict(max_virtual_size=2 * GiB)

# -- what a parent reference points at --------------------------------------


def _cid(text):
    return re.search(rb'(?:^|\n)CID=(\w+)', text).group(1)


def host_vmdk(case):
    """A sparse vmdk on the host holding the canary: (path, its CID)."""
    path = str(case.host / 'parent.vmdk')
    helpers.qemu('convert', '-f', 'raw', '-O', 'vmdk', case.canary, path)
    with open(path, 'rb') as f:
        f.seek(512)
        return path, _cid(f.read(10240))


def host_flat_chain(case):
    """A host text descriptor whose flat extent is the raw canary file."""
    path = str(case.host / 'chain.vmdk')
    with open(path, 'w') as f:
        f.write('# Disk DescriptorFile\nversion=1\nCID=1234abcd\n'
                'parentCID=ffffffff\ncreateType="monolithicFlat"\n'
                'RW %d FLAT "%s" 0\n' % (SIZE // 512, case.canary))
    return path, b'1234abcd'


def host_fifo(case):
    path = str(case.host / 'pipe.vmdk')
    os.mkfifo(path)
    return path, b'1234abcd'


TARGETS = {'host_vmdk': host_vmdk, 'flat_chain': host_flat_chain,
           'fifo': host_fifo}

# -- where the reference hides in a sparse vmdk's descriptor ----------------
# Each takes the descriptor text qemu-img wrote and returns (text qemu
# reads at offset 512, header descriptorSize in sectors or None).


def _without_parent_cid(text):
    return text.replace(b'parentCID=ffffffff\n', b'')


def hide_in_comment(text, parent, cid):
    return (b'# parentCID=%s\n# parentFileNameHint="%s"\n' % (cid, parent)
            + text), None


def hide_past_descriptor_size(text, parent, cid):
    visible = _without_parent_cid(text)
    assert len(visible) < 512
    return (visible.ljust(512, b'\n') + b'parentCID=%s\n'
            b'parentFileNameHint="%s"\n' % (cid, parent)), 1


def hide_inside_another_value(text, parent, cid):
    line = b'ddb.comment = "parentCID=%s parentFileNameHint="%s" "\n' % (
        cid, parent)
    return line + _without_parent_cid(text), None


def hide_after_nul_padding(text, parent, cid):
    # qemu's strstr stops at the NUL: refused anyway (defence in depth).
    return (text + b'\0parentCID=%s\nparentFileNameHint="%s"\n' % (
        cid, parent)), None


def hide_in_other_case(text, parent, cid):
    # qemu's search is case-sensitive: refused anyway.
    return text + b'PARENTFILENAMEHINT="%s"\n' % parent, None


PLACEMENTS = {'comment': hide_in_comment,
              'past_descriptor_size': hide_past_descriptor_size,
              'inside_another_value': hide_inside_another_value,
              'after_nul_padding': hide_after_nul_padding,
              'other_case': hide_in_other_case}
# The placements qemu 7.2 follows (the controls show it).
QEMU_FOLLOWS = ('comment', 'past_descriptor_size', 'inside_another_value')


def hinted_vmdk(case, placement, subformat='monolithicSparse',
                target='host_vmdk'):
    """A vmdk with no data of its own whose descriptor hides a parent."""
    parent, cid = TARGETS[target](case)
    path = case.path('hinted-%s.vmdk' % placement)
    zeros = case.path('zeros.raw')
    with open(zeros, 'wb') as f:
        f.truncate(SIZE)
    helpers.qemu('convert', '-f', 'raw', '-O', 'vmdk', '-o',
                 'subformat=%s' % subformat, zeros, path)
    os.unlink(zeros)
    with open(path, 'r+b') as f:
        header = f.read(512)
        desc_sector, desc_sectors = struct.unpack('<QQ', header[28:44])
        grain_dir = struct.unpack('<Q', header[56:64])[0]
        f.seek(desc_sector * 512)
        text = f.read(desc_sectors * 512).split(b'\0', 1)[0]
        new_text, new_sectors = PLACEMENTS[placement](
            text, parent.encode(), cid)
        # Stay clear of the grain directory qemu-img wrote after it.
        assert desc_sector * 512 + len(new_text) <= min(grain_dir, 21) * 512
        f.seek(desc_sector * 512)
        f.write(new_text.ljust(desc_sectors * 512, b'\0'))
        if new_sectors is not None:
            f.seek(36)
            f.write(struct.pack('<Q', new_sectors))
    return path


# -- the two layers ----------------------------------------------------------


def _no_canary_anywhere(*folders):
    for folder in folders:
        for path in helpers.files_under(str(folder)):
            assert not helpers.contains_canary(path), path


def _refused(case, path, claimed, launches, reason):
    out = case.root / 'out'
    out.mkdir(exist_ok=True)
    with pytest.raises(translate.UnsafeImage) as raised:
        translate.convert(path, str(out / 'disk.qcow2'), 'qcow2',
                          from_format=claimed,
                          options=translate.ConvertOptions(
                              staging_dir=case.staging, **OPTIONS))
    assert reason in str(raised.value)
    assert '\n' not in str(raised.value)
    assert launches.calls == []
    assert helpers.files_under(str(out)) == []
    return raised.value


@pytest.mark.parametrize('placement', sorted(PLACEMENTS))
@pytest.mark.parametrize('subformat', ['monolithicSparse', 'streamOptimized'])
def test_parent_hint_refused_wherever_it_hides(tmp_path, launches,
                                               placement, subformat):
    case = test_hostile.Case(tmp_path)
    path = hinted_vmdk(case, placement, subformat)
    _refused(case, path, 'vmdk', launches, 'names a parent disk')
    _no_canary_anywhere(case.work, tmp_path / 'out')


@pytest.fixture
def inspection_bypassed(monkeypatch):
    """The inspector's verdict ignored: qemu's own lock-down must hold."""
    real = engine._inspect_source

    def lenient(src, from_format, options):
        if isinstance(src, translate.RemoteSource):
            info = remote.inspect_remote(src, from_format or src.format,
                                         max_virtual_size=8 * GiB,
                                         raise_on_unsafe=False)
            info.inspected_blocks = {}  # and the re-read check too
        else:
            info = translate.inspect_image(
                os.fspath(src), from_format, max_virtual_size=8 * GiB,
                raise_on_unsafe=False)
        info.safe, info.failures = True, []
        if info.format == 'vmdk' and not info.subformat:
            info.subformat = 'monolithicSparse'
        return info

    monkeypatch.setattr(engine, '_inspect_source', lenient)
    return real


def _convert_bypassed(case, path, claimed, to_format='raw'):
    out = case.root / 'out'
    out.mkdir(exist_ok=True)
    dst = str(out / ('disk.' + to_format))
    try:
        translate.convert(path, dst, to_format, from_format=claimed,
                          options=translate.ConvertOptions(
                              structure_check=False, verify=True,
                              vmdk_stream_decoder=False, **OPTIONS))
    except translate.TranslationError:
        pass  # qemu may refuse the file outright: fine, as long as...
    _no_canary_anywhere(out)  # ...no canary byte reached any output
    return dst


@pytest.mark.parametrize('placement', QEMU_FOLLOWS)
@pytest.mark.parametrize('subformat', ['monolithicSparse', 'streamOptimized'])
@pytest.mark.parametrize('target', ['host_vmdk', 'flat_chain'])
def test_qemu_alone_follows_no_parent_hint(tmp_path, inspection_bypassed,
                                           launches, placement, subformat,
                                           target):
    case = test_hostile.Case(tmp_path)
    path = hinted_vmdk(case, placement, subformat, target)
    dst = _convert_bypassed(case, path, 'vmdk')
    assert os.path.exists(dst)  # converted: the hint was simply not read
    for argv in launches.calls:
        assert not any(case.canary in str(a) or 'parent' in str(a)
                       for a in argv)


@pytest.mark.parametrize('placement', QEMU_FOLLOWS)
@pytest.mark.parametrize('target', ['host_vmdk', 'flat_chain'])
def test_control_naive_qemu_follows_hidden_hint(tmp_path, placement, target):
    case = test_hostile.Case(tmp_path)
    path = hinted_vmdk(case, placement, 'monolithicSparse', target)
    out = str(tmp_path / 'naive.raw')
    helpers.qemu('convert', '-f', 'vmdk', '-O', 'raw', path, out)
    assert helpers.contains_canary(out)


def test_qemu_alone_ignores_qcow2_backing_file(tmp_path, inspection_bypassed):
    case = test_hostile.Case(tmp_path)
    path, claimed, _exc, _reason = test_hostile.qcow2_backing_file(case)
    assert os.path.exists(_convert_bypassed(case, path, claimed))


def test_qemu_alone_refuses_vhdx_parent(tmp_path, inspection_bypassed):
    case = test_hostile.Case(tmp_path)
    path = _vhdx_with_parent_flag(case)
    _convert_bypassed(case, path, 'vhdx')


def _vhdx_with_parent_flag(case):
    path = case.clean('child.vhdx', 'vhdx')
    with open(path, 'r+b') as f:
        offset = headers.vhdx_metadata_offset(f)
        f.seek(offset)
        table = f.read(64 * 1024)
        count, = struct.unpack('<H', table[10:12])
        for i in range(count):
            entry = table[32 + i * 32:64 + i * 32]
            if headers._guid(entry[:16]) == headers._VHDX_FILE_PARAMETERS:
                item, = struct.unpack('<I', entry[16:20])
                f.seek(offset + item + 4)
                flags, = struct.unpack('<I', f.read(4))
                f.seek(offset + item + 4)
                f.write(struct.pack('<I', flags | 2))
    return path


def test_vhdx_parent_refused(tmp_path, launches):
    case = test_hostile.Case(tmp_path)
    _refused(case, _vhdx_with_parent_flag(case), 'vhdx', launches,
             'differencing')


def test_fifo_parent_refused_fast(tmp_path, launches):
    # A naive qemu-img would block opening the FIFO until its time budget
    # ran out; the gate refuses from the header alone.
    case = test_hostile.Case(tmp_path)
    path = hinted_vmdk(case, 'comment', target='fifo')
    started = time.monotonic()
    _refused(case, path, 'vmdk', launches, 'names a parent disk')
    assert time.monotonic() - started < 30


def test_fifo_parent_ignored_by_qemu_alone(tmp_path, inspection_bypassed):
    case = test_hostile.Case(tmp_path)
    path = hinted_vmdk(case, 'comment', target='fifo')
    started = time.monotonic()
    _convert_bypassed(case, path, 'vmdk')
    assert time.monotonic() - started < 60


def _capacity_zero_vmdk(case):
    """A capacity-0 sparse vmdk embedding a descriptor of host extents."""
    path = case.clean('extents.vmdk', 'vmdk')
    with open(path, 'r+b') as f:
        f.seek(12)
        f.write(struct.pack('<Q', 0))
        f.seek(512)
        f.write(('# Disk DescriptorFile\nversion=1\nCID=fffffffe\n'
                 'parentCID=ffffffff\ncreateType="monolithicFlat"\n'
                 'RW %d FLAT "%s" 0\n' % (SIZE // 512, case.canary))
                .encode().ljust(20 * 512, b'\0'))
    return path


def test_descriptor_extents_in_a_sparse_vmdk_refused(tmp_path, launches):
    # The one way to reach qemu's extent list from a sparse vmdk: the spec
    # cannot switch it off, the inspection must (and does).
    case = test_hostile.Case(tmp_path)
    _refused(case, _capacity_zero_vmdk(case), 'vmdk', launches,
             'capacity 0')


def test_control_capacity_zero_vmdk_opens_its_extents(tmp_path):
    case = test_hostile.Case(tmp_path)
    out = str(tmp_path / 'naive.raw')
    helpers.qemu('convert', '-f', 'vmdk', '-O', 'raw',
                 _capacity_zero_vmdk(case), out)
    assert helpers.contains_canary(out)


def test_flat_descriptor_parent_in_a_comment_refused(tmp_path, launches):
    case = test_hostile.Case(tmp_path)
    disks.make_raw_disk(os.path.join(case.stage(), 'guest-flat.vmdk'), SIZE)
    path = case.descriptor(
        ['RW %d FLAT "guest-flat.vmdk" 0' % (SIZE // 512)],
        extra='# parentFileNameHint="%s"' % case.canary,
        folder=case.staging)
    _refused(case, path, 'vmdk', launches, 'names a parent disk')


# -- source names qemu would read as protocols (item 3) ---------------------


@pytest.mark.parametrize('name', [
    'json:{"driver":"raw","file":{"driver":"file","filename":"secret.bin"}}',
    'file:secret.bin', 'nbd:unix:secret.sock'])
def test_source_name_is_never_a_protocol(tmp_path, name):
    case = test_hostile.Case(tmp_path)
    benign = case.host / name
    disks.make_raw_disk(str(benign), SIZE)
    out = tmp_path / 'out.qcow2'
    # Relative names, from the folder that also holds the canary.
    proc = subprocess.run(
        [sys.executable, '-m', 'nova_xhv.cmd.convert', name,
         str(out), '--to', 'qcow2', '--from', 'raw'],
        cwd=str(case.host), capture_output=True, text=True,
        env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert proc.returncode == 0, proc.stderr
    assert not helpers.contains_canary(str(out))
    assert translate.compare(str(benign), 'raw', str(out), 'qcow2')


# -- fields qemu trusts that the header does not say (item 4) ---------------


def _stream_with_footer(case, footer_capacity=None, grain_dir=None):
    """A qemu-written stream turned into VMware's layout: GD in a footer."""
    raw = case.path('src.raw')
    disks.make_raw_disk(raw, SIZE)
    path = case.path('footer.vmdk')
    helpers.qemu('convert', '-f', 'raw', '-O', 'vmdk', '-o',
                 'subformat=streamOptimized', raw, path)
    with open(path, 'r+b') as f:
        header = bytearray(f.read(512))
        footer = bytearray(header)
        if footer_capacity is not None:
            footer[12:20] = struct.pack('<Q', footer_capacity // 512)
        if grain_dir is not None:
            footer[56:64] = struct.pack('<Q', grain_dir)
        header[56:64] = struct.pack('<Q', headers.VMDK_GD_AT_END)
        f.seek(0)
        f.write(header)
        f.seek(0, os.SEEK_END)
        marker = struct.pack('<QII', 1, 0, 3).ljust(512, b'\0')
        eos = bytes(512)
        f.write(marker + bytes(footer) + eos)
    return path


def test_footer_capacity_above_the_header_refused(tmp_path, launches):
    case = test_hostile.Case(tmp_path)
    path = _stream_with_footer(case, footer_capacity=64 * GiB)
    error = _refused(case, path, 'vmdk', launches,
                     'footer disagrees with the header on capacity')
    info = translate.inspect_image(path, 'vmdk', raise_on_unsafe=False,
                                   **OPTIONS)
    assert not info.safe
    # The size judged is qemu's: 64 GiB is over the 2 GiB cap too.
    assert any('exceeds the limit' in f for f in info.failures), error


def test_footer_grain_directory_past_the_end_refused(tmp_path, launches):
    case = test_hostile.Case(tmp_path)
    path = _stream_with_footer(case, grain_dir=1 << 30)
    _refused(case, path, 'vmdk', launches, 'grain directory')


def test_consistent_footer_converts(tmp_path):
    case = test_hostile.Case(tmp_path)
    path = _stream_with_footer(case)
    out = str(tmp_path / 'out.qcow2')
    translate.convert(path, out, 'qcow2', options=translate.ConvertOptions(
        vmdk_stream_decoder=False, verify=True))


# -- structural corruption, malformed headers (item 5) ----------------------


def _qcow2_with_data(case, name='data.qcow2'):
    raw = case.path('data.raw')
    disks.make_raw_disk(raw, SIZE)
    path = case.path(name)
    helpers.qemu('convert', '-f', 'raw', '-O', 'qcow2', raw, path)
    return path


def _qcow2_field(path, offset, fmt):
    with open(path, 'rb') as f:
        f.seek(offset)
        return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]


def test_qcow2_l2_table_past_the_end_refused_by_check(tmp_path, launches):
    case = test_hostile.Case(tmp_path)
    path = _qcow2_with_data(case)
    l1 = _qcow2_field(path, 40, '>Q')
    test_hostile._patch(path, l1, struct.pack('>Q', (1 << 63) | (1 << 40)))
    # Bare qemu-img converts it "successfully", with zeros for the data.
    helpers.qemu('convert', '-f', 'qcow2', '-O', 'raw', path,
                 str(tmp_path / 'naive.raw'))
    out = tmp_path / 'out'
    out.mkdir()
    with pytest.raises(translate.UnsafeImage, match='corruption'):
        translate.convert(path, str(out / 'x.raw'), 'raw',
                          from_format='qcow2')
    assert [argv for argv in launches.calls if 'convert' in argv] == []
    assert helpers.files_under(str(out)) == []


@pytest.mark.parametrize('what,offset,value,reason', [
    ('corrupt bit', 72, struct.pack('>Q', 2), 'marked corrupt'),
    ('l1 past the end', 40, struct.pack('>Q', 1 << 40), 'L1 table'),
    ('refcount table past the end', 48, struct.pack('>Q', 1 << 40),
     'refcount table'),
    ('cluster bits', 20, struct.pack('>I', 40), 'cluster_bits'),
    ('extension past the cluster', None,
     struct.pack('>II', 0x12345678, 1 << 30), 'extension'),
])
def test_qcow2_structure_refused(tmp_path, launches, what, offset, value,
                                 reason):
    case = test_hostile.Case(tmp_path)
    path = _qcow2_with_data(case)
    if offset is None:  # the first header extension
        offset = _qcow2_field(path, 100, '>I')
    test_hostile._patch(path, offset, value)
    _refused(case, path, 'qcow2', launches, reason)


def test_qcow2_v2_with_header_extension_converts(tmp_path):
    case = test_hostile.Case(tmp_path)
    raw = case.path('data.raw')
    disks.make_raw_disk(raw, SIZE)
    path = case.path('v2.qcow2')
    helpers.qemu('convert', '-f', 'raw', '-O', 'qcow2', '-o',
                 'compat=0.10', raw, path)
    # A backing-format extension right after the 72-byte v2 header, as
    # older qemu versions left behind: its length (5) read as v3 feature
    # bits looks like "external data file".
    extension = struct.pack('>II', headers.QCOW2_EXT_BACKING_FORMAT, 5) + \
        b'qcow2\0\0\0' + struct.pack('>II', 0, 0)
    test_hostile._patch(path, 72, extension)
    with open(path, 'rb') as f:
        header = headers.qcow2_header(f)
    assert header.version == 2
    assert header.extensions == (headers.QCOW2_EXT_BACKING_FORMAT,)
    out = str(tmp_path / 'out.raw')
    translate.convert(path, out, 'raw', from_format='qcow2')
    assert translate.compare(raw, 'raw', out, 'raw')


def test_vmdk_grain_table_past_the_end_refused(tmp_path, launches):
    case = test_hostile.Case(tmp_path)
    raw = case.path('data.raw')
    disks.make_raw_disk(raw, SIZE)
    path = case.path('sparse.vmdk')
    helpers.qemu('convert', '-f', 'raw', '-O', 'vmdk', raw, path)
    gd = _qcow2_field(path, 56, '<Q')
    test_hostile._patch(path, gd * 512, struct.pack('<I', 1 << 24))
    _refused(case, path, 'vmdk', launches, 'grain table past the end')


@pytest.mark.parametrize('to_format', ['qcow2', 'raw'])
def test_one_byte_raw_clear_message(tmp_path, launches, to_format):
    path = str(tmp_path / 'one.raw')
    with open(path, 'wb') as f:
        f.write(b'x')
    with pytest.raises(translate.UnsupportedFormat,
                       match='1 bytes, not a whole number of 512-byte'):
        translate.convert(path, str(tmp_path / ('o.' + to_format)),
                          to_format)
    assert launches.calls == []


def _valid_images(case):
    raw = case.path('seed.raw')
    disks.make_raw_disk(raw, SIZE)
    images = []
    for fmt, opts in (('qcow2', ()), ('vmdk', ()),
                      ('vmdk', ('-o', 'subformat=streamOptimized')),
                      ('vpc', ()), ('vhdx', ())):
        path = case.path('seed-%d.%s' % (len(images), fmt))
        helpers.qemu('convert', '-f', 'raw', '-O', fmt, *opts, raw, path)
        images.append(path)
    return images


def test_malformed_headers_never_traceback(tmp_path):
    """Truncations and corrupted header bytes: a verdict, never a crash."""
    case = test_hostile.Case(tmp_path)
    rng = random.Random(16)
    for image in _valid_images(case):
        with open(image, 'rb') as f:
            data = f.read()
        variants = [data[:n] for n in (1, 3, 8, 64, 100, 511, 512, 513,
                                       1024, 4096, 65536, 200000)]
        for _ in range(40):
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                pos = rng.randrange(min(len(data), 4096))
                mutated[pos] = rng.randrange(256)
            variants.append(bytes(mutated))
        for n, variant in enumerate(variants):
            path = case.path('bad-%d' % n)
            with open(path, 'wb') as f:
                f.write(variant)
            try:
                translate.inspect_image(path, raise_on_unsafe=False,
                                        **OPTIONS)
            except translate.TranslationError as error:
                assert '\n' not in str(error)
            os.unlink(path)


# -- remote sources (items 1 and 2 over HTTP) -------------------------------


@pytest.fixture
def served(tmp_path):
    folder = tmp_path / 'served'
    folder.mkdir()
    with http_range.RangeServer(str(folder)) as server:
        yield server


@pytest.mark.parametrize('placement', QEMU_FOLLOWS)
def test_remote_parent_hint_refused(tmp_path, served, launches, placement):
    case = test_hostile.Case(tmp_path)
    path = hinted_vmdk(case, placement, 'streamOptimized')
    url = served.add_file(path)
    out = tmp_path / 'out'
    out.mkdir()
    with pytest.raises(translate.UnsafeImage, match='names a parent disk'):
        translate.convert(translate.RemoteSource(url, 'vmdk'),
                          str(out / 'd.qcow2'), 'qcow2')
    assert launches.calls == []
    _no_canary_anywhere(out)


def _same_size(a, b):
    size = max(os.path.getsize(a), os.path.getsize(b))
    for path in (a, b):
        with open(path, 'r+b') as f:
            f.truncate(size)


def _changing(case, served, benign, hostile):
    """Serve ``benign`` to the inspection and ``hostile`` afterwards."""
    _same_size(benign, hostile)
    url = served.add_file(benign, 'changing.img')
    before = served.gets('changing.img')
    remote.inspect_remote(translate.RemoteSource(url), max_virtual_size=GiB)
    inspection_gets = served.gets('changing.img') - before
    served.change_after('changing.img',
                        served.gets('changing.img') + inspection_gets,
                        hostile)
    return url


def _hostile_qcow2(case):
    path = case.path('hostile.qcow2')
    helpers.qemu('create', '-q', '-f', 'qcow2', '-b', case.canary, '-F',
                 'raw', path, str(SIZE))
    return path


@pytest.mark.parametrize('verify', [False, True])
def test_remote_source_changing_after_inspection_refused(tmp_path, served,
                                                         verify):
    case = test_hostile.Case(tmp_path)
    benign = _qcow2_with_data(case, 'benign.qcow2')
    url = _changing(case, served, benign, _hostile_qcow2(case))
    out = tmp_path / 'out'
    out.mkdir()
    with pytest.raises(translate.ConversionFailed,
                       match='changed after it was inspected'):
        translate.convert(translate.RemoteSource(url, 'qcow2'),
                          str(out / 'd.raw'), 'raw',
                          options=translate.ConvertOptions(verify=verify))
    assert helpers.files_under(str(out)) == []
    _no_canary_anywhere(out, case.work)


def test_remote_stream_changing_after_inspection_refused(tmp_path, served):
    case = test_hostile.Case(tmp_path)
    raw = case.path('a.raw')
    disks.make_raw_disk(raw, SIZE, seed=3)
    benign = case.path('benign.vmdk')
    helpers.qemu('convert', '-f', 'raw', '-O', 'vmdk', '-o',
                 'subformat=streamOptimized', raw, benign)
    hostile = hinted_vmdk(case, 'comment', 'streamOptimized')
    url = _changing(case, served, benign, hostile)
    out = tmp_path / 'out'
    out.mkdir()
    with pytest.raises(translate.ConversionFailed,
                       match='changed after it was inspected'):
        translate.convert(translate.RemoteSource(url, 'vmdk'),
                          str(out / 'd.qcow2'), 'qcow2')
    _no_canary_anywhere(out)


def test_remote_change_without_the_recheck_reaches_no_host_file(
        tmp_path, served, inspection_bypassed):
    # Layer two alone: the re-read check off, qemu still opens no backing.
    case = test_hostile.Case(tmp_path)
    benign = _qcow2_with_data(case, 'benign.qcow2')
    url = _changing(case, served, benign, _hostile_qcow2(case))
    _convert_bypassed(case, translate.RemoteSource(url, 'qcow2'), 'qcow2')


# -- xhv-convert: one line, no secret in any child (items 5 and 7) ----------


def _xhv_convert(*args, env=None, cwd=None):
    return subprocess.run(
        [sys.executable, '-m', 'nova_xhv.cmd.convert'] + list(args),
        capture_output=True, text=True, cwd=cwd,
        env=dict(os.environ, PYTHONPATH=os.getcwd(), **(env or {})))


@pytest.mark.parametrize('placement', QEMU_FOLLOWS)
def test_cli_refuses_in_one_line(tmp_path, placement):
    case = test_hostile.Case(tmp_path)
    path = hinted_vmdk(case, placement)
    out = str(tmp_path / 'out.raw')
    proc = _xhv_convert(path, out, '--to', 'raw')
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('xhv-convert: refused:')
    assert 'names a parent disk' in lines[0]
    assert 'Traceback' not in proc.stderr
    assert not os.path.exists(out)


def test_cli_malformed_inputs_one_line(tmp_path):
    case = test_hostile.Case(tmp_path)
    for n, image in enumerate(_valid_images(case)):
        with open(image, 'r+b') as f:
            f.truncate(700)
        proc = _xhv_convert(image, str(tmp_path / ('o%d.raw' % n)),
                            '--to', 'raw')
        assert proc.returncode != 0, image
        assert 'Traceback' not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


SECRET = 'pw-7f3a9c-never-in-a-child'


def test_children_get_no_secret(tmp_path, served, monkeypatch):
    monkeypatch.setenv('XHV_CONVERT_PASSWORD', SECRET)
    monkeypatch.setenv('OS_PASSWORD', SECRET)
    from nova_xhv.translate import nbd_bridge
    from nova_xhv.translate import qemu_img
    # A real child of the short-call seam shows its own environment.
    out, _err = qemu_img._execute('cat', '/proc/self/environ')
    assert SECRET not in out and 'PATH=' in out
    # Every process the engine starts, with the environment it got.
    seen = []
    real_popen = subprocess.Popen

    def popen(argv, **kwargs):
        seen.append((list(argv), kwargs.get('env')))
        return real_popen(argv, **kwargs)

    case = test_hostile.Case(tmp_path)
    url = served.add_file(_qcow2_with_data(case))
    monkeypatch.setattr(subprocess, 'Popen', popen)
    source = translate.RemoteSource(url, 'qcow2', username='u',
                                    password=SECRET)
    translate.convert(source, str(tmp_path / 'o.raw'), 'raw')
    assert seen
    for argv, env in seen:
        assert env is not None, argv  # never the inherited environment
        assert SECRET not in repr(env) and SECRET not in repr(argv)
    # The bridge child's real environment, read while it runs.
    info = remote.inspect_remote(source)
    with nbd_bridge.NBDBridge(source, info.actual_size,
                              str(tmp_path)) as bridge:
        with open('/proc/%d/environ' % bridge._proc.pid, 'rb') as f:
            environ = f.read()
    assert SECRET.encode() not in environ and b'PATH=' in environ


def test_cli_remote_source_changing_after_inspection(tmp_path, served):
    case = test_hostile.Case(tmp_path)
    benign = _qcow2_with_data(case, 'benign.qcow2')
    url = _changing(case, served, benign, _hostile_qcow2(case))
    out = str(tmp_path / 'out.raw')
    proc = _xhv_convert(url, out, '--to', 'raw', '--from', 'qcow2',
                        '--verify', env={'XHV_CONVERT_PASSWORD': SECRET})
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert 'changed after it was inspected' in lines[0]
    assert not os.path.exists(out)
    _no_canary_anywhere(tmp_path / 'work')
