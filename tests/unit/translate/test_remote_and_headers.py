import json
import struct

import pytest

from nova_xhv import translate
from nova_xhv.translate import headers
from nova_xhv.translate import nbd_bridge


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


def test_password_not_in_repr_or_bridge_filename():
    source = translate.RemoteSource('https://h/d.qcow2', 'qcow2',
                                    username='u', password='hunter2')
    assert 'hunter2' not in repr(source)
    bridge = nbd_bridge.NBDBridge(source, 1024)
    bridge._folder = '/run/xhv-nbd-test'
    name = bridge.filename('qcow2')
    opts = json.loads(name[len('json:'):])
    assert opts == {'driver': 'qcow2', 'file': {
        'driver': 'nbd', 'export': 'xhv',
        'server': {'type': 'unix', 'path': '/run/xhv-nbd-test/nbd.sock'}},
        'backing': None}
