"""Conversion outputs written with O_DIRECT, with real qemu-img/qemu-nbd.

What is checked is the effect an operator cares about: after a conversion
the output's data is not in the host's page cache (util-linux ``fincore``
counts its resident bytes), and the data is right.  Writing through the
page cache leaves it all resident, which proves the measurement can fail.
"""

import errno
import logging
import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest

from nova_xhv import translate
from tests.functional.translate import helpers

MiB = 1024 * 1024
DATA = 32 * MiB


def resident_bytes(path):
    out = subprocess.run(['fincore', '--bytes', '--noheadings',
                          '--output', 'RES', path], check=True,
                         capture_output=True, text=True).stdout
    return int(out.split()[0])


def _on_tmpfs(path):
    out = subprocess.run(['stat', '--file-system', '--format', '%T', path],
                         check=True, capture_output=True, text=True).stdout
    return out.strip() == 'tmpfs'


@pytest.fixture
def disk_dir(tmp_path):
    """A folder on a disk: tmpfs keeps all files in memory, O_DIRECT or not."""
    if not _on_tmpfs(str(tmp_path)):
        yield tmp_path
        return
    folder = tempfile.mkdtemp(prefix='xhv-direct-io-', dir='/var/tmp')
    try:
        yield pathlib.Path(folder)
    finally:
        shutil.rmtree(folder)


@pytest.fixture(scope='module')
def raw_source(tmp_path_factory):
    """64 MiB virtual, 32 MiB of random data."""
    path = str(tmp_path_factory.mktemp('direct-io') / 'src.raw')
    with open(path, 'wb') as f:
        f.truncate(2 * DATA)
        f.seek(DATA // 2)
        f.write(os.urandom(DATA))
    return path


@pytest.fixture(scope='module')
def stream_vmdk(raw_source):
    path = raw_source[:-len('.raw')] + '.vmdk'
    helpers.qemu('convert', '-f', 'raw', '-O', 'vmdk', '-o',
                 'subformat=streamOptimized', raw_source, path)
    return path


def qemu_img_cache_modes(launches):
    return [argv[argv.index('-t') + 1] for argv in launches.calls
            if 'convert' in argv]


@pytest.mark.parametrize('source,to_format', [
    ('raw', 'qcow2'), ('raw', 'raw'), ('raw', 'vhdx'),
    ('vmdk', 'qcow2'), ('vmdk', 'raw'),  # these two: stream decoder
    ('raw', 'vmdk')])  # the vmdk stream writer
def test_output_is_written_past_the_page_cache(
        raw_source, stream_vmdk, disk_dir, launches, caplog, source,
        to_format):
    caplog.set_level(logging.INFO)
    src = raw_source if source == 'raw' else stream_vmdk
    out = str(disk_dir / ('out.' + to_format))
    translate.convert(src, out, to_format)
    assert resident_bytes(out) < DATA // 4
    assert 'writing with O_DIRECT' in caplog.text
    if to_format == 'vmdk':
        assert not qemu_img_cache_modes(launches)
        assert [a for a in launches.calls if 'write_child' in a[-1]]
    elif source == 'raw':
        assert qemu_img_cache_modes(launches) == ['none']
    else:
        assert [a for a in launches.calls if 'stream_child' in a[-1]]
    assert translate.compare(out, to_format, raw_source, 'raw')


@pytest.mark.parametrize('source', ['raw', 'vmdk'])
def test_direct_io_off_writes_through_the_page_cache(
        raw_source, stream_vmdk, disk_dir, launches, caplog, source):
    caplog.set_level(logging.INFO)
    src = raw_source if source == 'raw' else stream_vmdk
    out = str(disk_dir / 'out.qcow2')
    translate.convert(src, out, 'qcow2', options=translate.ConvertOptions(
        direct_io=False))
    assert resident_bytes(out) > DATA * 3 // 4
    assert 'writing through the page cache' in caplog.text
    assert qemu_img_cache_modes(launches) == (
        ['unsafe'] if source == 'raw' else [])
    assert translate.compare(out, 'qcow2', raw_source, 'raw')


@pytest.mark.parametrize('to_format,subformat', [
    ('vmdk', 'streamOptimized'), ('vmdk', 'monolithicSparse'),
    ('vhd', 'dynamic')])
def test_small_write_outputs_keep_the_page_cache(
        raw_source, disk_dir, launches, caplog, to_format, subformat):
    # qemu writes these grain by grain (and table by table): O_DIRECT
    # would make every one a disk write.  (XHV's own streamOptimized
    # writer writes large blocks, with O_DIRECT: off here.)
    caplog.set_level(logging.INFO)
    out = str(disk_dir / ('out.' + to_format))
    translate.convert(raw_source, out, to_format, subformat=subformat,
                      options=translate.ConvertOptions(
                          vmdk_stream_writer=False))
    assert qemu_img_cache_modes(launches) == ['unsafe']
    assert 'writing through the page cache' in caplog.text
    assert translate.compare(out, to_format, raw_source, 'raw')


@pytest.mark.parametrize('source', ['raw', 'vmdk'])
def test_filesystem_without_o_direct_falls_back(
        raw_source, stream_vmdk, disk_dir, launches, caplog, monkeypatch,
        source):
    # As tmpfs before Linux 6.6 and some FUSE filesystems answer.
    real_open = os.open

    def no_direct(path, flags, *args, **kwargs):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, 'Invalid argument', path)
        return real_open(path, flags, *args, **kwargs)
    monkeypatch.setattr(os, 'open', no_direct)
    caplog.set_level(logging.INFO)
    src = raw_source if source == 'raw' else stream_vmdk
    out = str(disk_dir / 'out.qcow2')
    translate.convert(src, out, 'qcow2')
    monkeypatch.undo()
    assert 'writing through the page cache' in caplog.text
    assert qemu_img_cache_modes(launches) == (
        ['unsafe'] if source == 'raw' else [])
    assert resident_bytes(out) > DATA * 3 // 4
    assert translate.compare(out, 'qcow2', raw_source, 'raw')
