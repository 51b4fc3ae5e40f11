import errno
import os
import shutil
import sys

import pytest

from nova_xhv import translate
from nova_xhv.translate import qemu_img

GiB = 1024 ** 3


@pytest.mark.parametrize('buffer,value', [
    (b'    (0.00/100%)\r', 0.0),
    (b'    (0.00/100%)\r    (12.50/100%)\r    (25.01/10', 12.5),
    (b'    (100.00/100%)\r\n', 100.0),
    (b'', None),
    (b'garbage (5/100%)', 5.0),
])
def test_parse_progress(buffer, value):
    assert qemu_img.parse_progress(buffer) == value


def test_convert_argv_full():
    argv = qemu_img.convert_argv(
        'src', 'vpc', 'dst', 'vmdk', ['subformat=streamOptimized'],
        sparse_size=4096, coroutines=16, out_of_order=True,
        rate_limit=1048576, objects=['--object', 'secret,id=s'])
    assert argv == ['qemu-img', 'convert', '--object', 'secret,id=s', '-p',
                    '-f', 'vpc', '-O', 'vmdk', '-o',
                    'subformat=streamOptimized', '-S', '4096', '-m', '16',
                    '-W', '-r', '1048576', 'src', 'dst']


def test_convert_argv_minimal_always_has_f():
    argv = qemu_img.convert_argv('s', 'raw', 'd', 'qcow2', progress=False)
    assert argv[argv.index('-f') + 1] == 'raw'
    assert '-p' not in argv and '-W' not in argv and '-r' not in argv


def test_prlimit_argv():
    limits = qemu_img.Limits(30, 2 * GiB)
    argv = qemu_img.prlimit_argv(limits, prefer_binary=False)
    assert argv[:3] == [sys.executable, '-m', 'oslo_concurrency.prlimit']
    assert argv[3:] == ['--as=%d' % (2 * GiB), '--cpu=30', '--']
    binary = qemu_img.prlimit_argv(limits)
    assert binary[-3:] == argv[-3:]
    if shutil.which('prlimit'):
        assert binary[0] == shutil.which('prlimit')


@pytest.mark.parametrize('size,expected', [
    (0, 300), (1, 360), (GiB, 360), (GiB + 1, 420), (100 * GiB, 6300)])
def test_timeout_scales_with_size(size, expected):
    assert translate.ConvertOptions().timeout_for(size) == expected


def test_long_limits_follow_timeout():
    options = translate.ConvertOptions(cpu_seconds=30, timeout_base=10,
                                       timeout_per_gib=5)
    assert options.info_limits().cpu_seconds == 30
    assert options.long_limits(10 * GiB).cpu_seconds == 120
    assert options.long_limits(0).cpu_seconds == 30


def test_convert_argv_cache_mode():
    argv = qemu_img.convert_argv('s', 'raw', 'd', 'qcow2',
                                 cache=qemu_img.CACHE_DIRECT)
    assert argv[argv.index('-t') + 1] == 'none'
    assert '-t' not in qemu_img.convert_argv('s', 'raw', 'd', 'qcow2')


def test_direct_io_probe_on_disk(tmp_path):
    # tmp_path is on the root filesystem (ext4 on the test beds), which
    # takes O_DIRECT.  The probe leaves nothing behind.
    assert qemu_img.supports_direct_io(str(tmp_path))
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.parametrize('fails_at', ['open', 'write'])
def test_direct_io_probe_einval_means_no(tmp_path, monkeypatch, fails_at):
    real = getattr(os, fails_at)

    def refuse(*args):
        if fails_at == 'write' or args[1] & os.O_DIRECT:
            raise OSError(errno.EINVAL, 'Invalid argument')
        return real(*args)
    monkeypatch.setattr(os, fails_at, refuse)
    assert not qemu_img.supports_direct_io(str(tmp_path))
    monkeypatch.undo()
    assert os.listdir(str(tmp_path)) == []


def test_direct_io_probe_other_errors_are_raised(tmp_path):
    with pytest.raises(FileNotFoundError):
        qemu_img.supports_direct_io(str(tmp_path / 'missing'))
