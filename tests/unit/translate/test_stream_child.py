"""The stream decoder's child process: what it imports and accepts.

Its conversions are tested end to end in
tests/functional/translate/test_stream_decoder.py.
"""

import json
import os
import subprocess
import sys

import pytest

from nova_xhv.translate import qemu_img
from nova_xhv.translate import stream_child
from nova_xhv.translate import stream_convert

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


def test_child_starts_without_the_engine_and_oslo():
    # The child starts once per conversion: the engine's imports (oslo.log,
    # oslo.utils, oslo.concurrency) would double its start time.
    probe = ('import sys; from nova_xhv.translate.stream_child import main; '
             'print(sorted(m for m in sys.modules if m.startswith(('
             '"oslo", "nova_xhv.translate.engine", '
             '"nova_xhv.translate.inspect", "nova_xhv.translate.qemu_img"'
             '))))')
    out = subprocess.run([sys.executable, '-c', probe], cwd=ROOT,
                         env=stream_convert.child_env(), check=True,
                         capture_output=True, text=True).stdout
    assert out.strip() == '[]'


def test_cache_modes_are_the_engines():
    assert set(stream_child.CACHE_MODES) == {qemu_img.CACHE_DIRECT,
                                             qemu_img.CACHE_PAGE}


def test_unknown_cache_mode_is_refused_before_qemu_nbd_starts(tmp_path):
    config = {'output': str(tmp_path / 'out.qcow2'), 'cache': 'directsync',
              'output_format': 'qcow2', 'capacity': 1024 * 1024,
              'limit_argv': [], 'scratch_dir': str(tmp_path),
              'path': os.devnull}
    with pytest.raises(stream_child.exceptions.ConversionFailed,
                       match="unknown output cache mode 'directsync'"):
        stream_child.convert(config)
    assert os.listdir(str(tmp_path)) == []


def test_main_reports_one_line_and_exit_1(tmp_path):
    config = {'output': str(tmp_path / 'out.qcow2'), 'cache': 'none',
              'output_format': 'qcow2', 'capacity': 1024 * 1024,
              'limit_argv': [], 'scratch_dir': str(tmp_path),
              'path': str(tmp_path / 'missing.vmdk')}
    done = subprocess.run(stream_convert.child_argv(), cwd=ROOT,
                          env=stream_convert.child_env(),
                          input=json.dumps(config) + '\n',
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.count('\n') == 1
    assert 'missing.vmdk' in done.stderr
