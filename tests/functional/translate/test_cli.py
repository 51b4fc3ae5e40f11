"""xhv-convert as a real process (``python -m nova_xhv.cmd.convert``)."""

import json
import os
import pty
import subprocess
import sys

from tests.fixtures import disks
from tests.functional.translate import helpers

MiB = 1024 * 1024
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


def xhv_convert(*args):
    return subprocess.run(
        [sys.executable, '-m', 'nova_xhv.cmd.convert'] + list(args),
        capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_convert_is_quiet_without_a_terminal(tmp_path):
    src = str(tmp_path / 'disk.raw')
    extents = disks.make_raw_disk(src, 8 * MiB)
    dst = str(tmp_path / 'disk.vmdk')
    done = xhv_convert(src, dst, '--to', 'vmdk', '--verify')
    assert done.returncode == 0, done.stderr
    assert done.stdout == '' and done.stderr == ''
    assert helpers.virtual_size(dst, 'vmdk') == 8 * MiB
    info = xhv_convert('--info', dst, '--json')
    assert info.returncode == 0
    data = json.loads(info.stdout)
    assert (data['format'], data['subformat'], data['virtual_size'],
            data['safe']) == ('vmdk', 'streamOptimized', 8 * MiB, True)
    back = str(tmp_path / 'back.raw')
    done = xhv_convert(dst, back, '--to', 'raw', '--from', 'vmdk',
                       '--debug')
    assert done.returncode == 0, done.stderr
    assert 'with the vmdk stream decoder, writing with O_DIRECT' in \
        done.stderr
    assert disks.check_extents(back, extents)
    # The same through qemu-img's vmdk driver and the page cache, as the
    # flags ask.
    again = str(tmp_path / 'again.raw')
    done = xhv_convert(dst, again, '--to', 'raw', '--debug',
                       '--no-vmdk-stream-decoder', '--no-direct-io')
    assert done.returncode == 0, done.stderr
    assert 'to raw with qemu-img, writing through the page cache' in \
        done.stderr
    assert disks.check_extents(again, extents)


def test_refusal_is_one_line_and_exit_1(tmp_path):
    canary = helpers.write_canary(str(tmp_path / 'secret.bin'))
    hostile = str(tmp_path / 'hostile.qcow2')
    helpers.qemu('create', '-q', '-f', 'qcow2', '-b', canary, '-F', 'raw',
                 hostile)
    dst = str(tmp_path / 'out.raw')
    done = xhv_convert(hostile, dst, '--to', 'raw')
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith('xhv-convert: refused: ')
    assert 'backing file' in lines[0]
    assert not os.path.exists(dst)
    mismatch = xhv_convert(hostile, dst, '--to', 'raw', '--from', 'raw')
    assert mismatch.returncode == 1
    assert len(mismatch.stderr.splitlines()) == 1
    assert 'content is qcow2, not the claimed raw' in mismatch.stderr


def test_info_text_shows_verdict(tmp_path):
    canary = helpers.write_canary(str(tmp_path / 'secret.bin'))
    hostile = str(tmp_path / 'hostile.qcow2')
    helpers.qemu('create', '-q', '-f', 'qcow2', '-b', canary, '-F', 'raw',
                 hostile)
    done = xhv_convert('--info', hostile)
    assert done.returncode == 1
    assert 'verdict:       UNSAFE' in done.stdout
    assert 'backing file' in done.stdout
    as_json = json.loads(xhv_convert('--info', hostile, '--json').stdout)
    assert as_json['safe'] is False
    assert as_json['format'] == 'qcow2'


def test_usage_errors_exit_2(tmp_path):
    done = xhv_convert(str(tmp_path / 'a'), str(tmp_path / 'b'))
    assert done.returncode == 2
    assert '--to' in done.stderr
    bad = xhv_convert(str(tmp_path / 'a'), str(tmp_path / 'b'), '--to',
                      'vdi')
    assert bad.returncode == 2
    assert 'unsupported disk format' in bad.stderr


def test_missing_source_fails_cleanly(tmp_path):
    done = xhv_convert(str(tmp_path / 'nope.raw'), str(tmp_path / 'b'),
                       '--to', 'qcow2')
    assert done.returncode == 3
    assert done.stderr.strip().endswith('does not exist')
    assert len(done.stderr.splitlines()) == 1


def test_demo(tmp_path):
    workdir = str(tmp_path / 'demo')
    done = xhv_convert('demo', '--workdir', workdir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'Demo passed.' in done.stdout
    rows = [line.split() for line in done.stdout.splitlines()
            if line.startswith(('qcow2', 'vmdk', 'vhdx', 'vhd '))]
    assert len(rows) == 6
    for row in rows:
        assert row[2] == '38800896'
        assert row[-2:] == ['yes', 'identical']
    assert done.stdout.count(': refused (') == 2


def test_progress_bar_on_a_terminal(tmp_path):
    src = str(tmp_path / 'disk.raw')
    disks.make_raw_disk(src, 8 * MiB)
    primary, secondary = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, '-m', 'nova_xhv.cmd.convert', src,
             str(tmp_path / 'disk.vhdx'), '--to', 'vhdx'],
            stdout=subprocess.PIPE, stderr=secondary, cwd=ROOT, timeout=300)
        os.close(secondary)
        secondary = None
        drawn = b''
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        if secondary is not None:
            os.close(secondary)
        os.close(primary)
    assert done.returncode == 0
    assert b'\r[' in drawn
    assert b'100.0%' in drawn
