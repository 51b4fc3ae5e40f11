"""Children get no secret; qemu gets only explicit specs (issue 16)."""

import json

from nova_xhv.translate import block_spec
from nova_xhv.translate import child_environ

PARENT = {
    'PATH': '/usr/bin', 'LANG': 'C.UTF-8', 'TMPDIR': '/var/tmp',
    'XHV_CONVERT_PASSWORD': 'hunter2', 'XHV_CONVERT_USERNAME': 'u',
    'OS_PASSWORD': 'hunter2', 'OS_TOKEN': 'tok', 'AWS_SECRET_ACCESS_KEY': 'k',
    'PYTHONPATH': '/src', 'https_proxy': 'http://user:pw@proxy:3128',
    'no_proxy': 'localhost', 'HTTP_PROXY': 'http://proxy:3128',
    'MALLOC_TOP_PAD_': '1'}


def test_qemu_gets_only_the_allow_list():
    env = child_environ.for_qemu(PARENT)
    assert env == {'PATH': '/usr/bin', 'LANG': 'C.UTF-8',
                   'TMPDIR': '/var/tmp', 'MALLOC_TOP_PAD_': '1'}


def test_python_children_get_no_secret():
    env = child_environ.for_python({'PYTHONPATH': '/xhv'}, PARENT)
    assert 'hunter2' not in repr(env) and 'tok' not in repr(env)
    assert 'https_proxy' not in env  # it holds a password
    assert env['HTTP_PROXY'] == 'http://proxy:3128'
    assert env['no_proxy'] == 'localhost'
    assert env['PYTHONPATH'] == '/xhv'


def test_specs_name_an_absolute_file_and_no_backing():
    spec = block_spec.local('json:{"x": 1}', 'qcow2')
    assert spec.startswith('json:{')
    opts = json.loads(spec[5:])
    assert opts['backing'] is None
    assert opts['file']['driver'] == 'file'
    assert opts['file']['filename'].startswith('/')
    assert opts['file']['filename'].endswith('/json:{"x": 1}')
    assert block_spec.display(spec) == opts['file']['filename']
    assert block_spec.output('file:x').startswith('/')
