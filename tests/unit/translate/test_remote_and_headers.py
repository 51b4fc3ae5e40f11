import json
import os
import struct

import pytest

from nova_xhv import translate
from nova_xhv.translate import headers
from nova_xhv.translate import remote


def _footer(disk_type, size, good_checksum=True):
    footer = bytearray(512)
    footer[:8] = b'conectix'
    footer[48:56] = struct.pack('>Q', size)
    footer[60:64] = struct.pack('>I', disk_type)
    checksum = (~sum(footer)) & 0xffffffff
    if not good_checksum:
        checksum ^= 1
    footer[64:68] = struct.pack('>I', checksum)
    return bytes(footer)


def test_vhd_footer_parse():
    footer = headers.parse_vhd_footer(_footer(2, 12345 * 512))
    assert footer.disk_type == 2 and footer.current_size == 12345 * 512
    assert footer.checksum_ok
    assert not headers.parse_vhd_footer(_footer(3, 1, False)).checksum_ok
    assert headers.parse_vhd_footer(b'x' * 512) is None
    assert headers.vhd_type_name(4) == 'differencing'


def test_remote_source_refuses_credentials_in_url():
    with pytest.raises(translate.TranslationError, match='never in the URL'):
        translate.RemoteSource('http://u:p@host/disk', 'raw')


def test_remote_source_refuses_other_schemes():
    for url in ('file:///etc/shadow', 'ftp://x/y', 'nbd://x'):
        with pytest.raises(translate.UnsupportedFormat):
            translate.RemoteSource(url, 'raw')


def test_password_not_in_repr_or_filename():
    source = translate.RemoteSource('https://h/d.qcow2', 'qcow2',
                                    username='u', password='hunter2')
    assert 'hunter2' not in repr(source)
    name = remote.qemu_filename(source, 'qcow2', 'sec0')
    assert 'hunter2' not in name
    opts = json.loads(name[len('json:'):])
    assert opts['driver'] == 'qcow2'
    assert opts['file'] == {'driver': 'https', 'url': 'https://h/d.qcow2',
                            'sslverify': True, 'username': 'u',
                            'password-secret': 'sec0', 'timeout': 60}
    insecure = translate.RemoteSource('https://h/d', 'raw', insecure=True)
    assert '"sslverify": false' in remote.qemu_filename(insecure, 'raw')


def test_secret_file_private_and_removed(tmp_path):
    source = translate.RemoteSource('http://h/d', 'raw', username='u',
                                    password='s3cret')
    with remote.qemu_objects(source, str(tmp_path)) as (objects, secret):
        assert objects[0] == '--object'
        path = objects[1].split('file=')[1].split(',')[0]
        assert os.stat(path).st_mode & 0o777 == 0o600
        with open(path) as f:
            assert f.read() == 's3cret'
        assert secret in objects[1]
    assert os.listdir(str(tmp_path)) == []
    no_password = translate.RemoteSource('http://h/d', 'raw')
    with remote.qemu_objects(no_password) as (objects, secret):
        assert (objects, secret) == ([], None)
