"""The destination's HTTPS pull works on native threads and under eventlet.

Each case runs a fresh Python that imports XHV (and with it requests,
urllib3, ssl, socketserver) *before* ``eventlet.monkey_patch()``, as
Nova's functional harness and any library importing requests early do.
That order used to break the pull: urllib3's SSL context recursed until
RecursionError (it had bound the unpatched SSLContext class), and the
CA-verifying loopback relay of the time waited in socketserver's unpatched
selector, blocking every green thread until qemu-img timed out.

The exchange endpoint runs here (native threads); the child verifies it
against the test CA: signed control request, header inspection, and
qemu-img reading the disk through the engine's NBD bridge.
"""

import json
import os
import subprocess
import sys

import pytest

from nova_xhv.migration import exchange
from nova_xhv import translate
from tests.fixtures import disks
from tests.fixtures import vcsim as vcsim_fixture

SECRET = 'eventlet-tls-secret'
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))
# Generous: the pull of a 16 MiB disk takes well under a second; the old
# failure mode was a hang until qemu's curl timeout.
CHILD_TIMEOUT = 60

CHILD = r'''
import json
import sys

from nova_xhv.migration import client
from nova_xhv import translate
from nova_xhv.translate import remote

mode, secret, url, disk_url, disk_id, token, ca, wrong_ca, out = \
    sys.argv[1:]
if mode == 'eventlet':
    import eventlet
    eventlet.monkey_patch()
    import threading  # green now


def pull(ca_file):
    source = translate.RemoteSource(disk_url, format='qcow2',
                                    username=disk_id, password=token,
                                    ca_file=ca_file)
    try:
        translate.convert(source, out, to_format='raw')
        return 'pulled'
    except translate.TranslationError as error:
        return str(error)


result = {'context': type(remote.ssl_context(ca)).__name__,
          'ping': client.ExchangeClient(secret, ca_file=ca).ping(url)}
try:
    client.ExchangeClient(secret).ping(url)
    result['unverified_ping'] = 'accepted'
except client.ExchangeError as error:
    result['unverified_ping'] = str(error)
result['wrong_ca'] = pull(wrong_ca)
if mode == 'eventlet':
    # Where the stager runs it: in a (green) thread of its own.
    box = []
    worker = threading.Thread(target=lambda: box.append(pull(ca)))
    worker.start()
    worker.join()
    result['pull'] = box[0]
else:
    result['pull'] = pull(ca)
print('RESULT ' + json.dumps(result))
'''


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    good = vcsim_fixture.make_ca_and_server_cert(
        str(tmp_path_factory.mktemp('exchange-ca')))
    other = vcsim_fixture.make_ca_and_server_cert(
        str(tmp_path_factory.mktemp('other-ca')))
    return good, other[0]


@pytest.fixture
def tls_endpoint(pki):
    (_ca, cert, key), _wrong = pki
    server = exchange.ExchangeServer(
        SECRET, bind_host='127.0.0.1', port=0, advertise_host='127.0.0.1',
        use_tls=True, cert_file=cert, key_file=key)
    server.start()
    yield server
    server.stop(wait=True)


@pytest.mark.parametrize('mode', ['native', 'eventlet'])
def test_https_pull_verified_against_the_ca(mode, pki, tls_endpoint,
                                            tmp_path):
    (ca, _cert, _key), wrong_ca = pki
    raw = str(tmp_path / 'guest.raw')
    extents = disks.make_raw_disk(raw, 16 * disks.MiB, seed=5)
    qcow2 = str(tmp_path / 'guest.qcow2')
    translate.convert(raw, qcow2, to_format='qcow2', from_format='raw')
    disk_id, token = tls_endpoint.publisher.publish(qcow2)
    out = str(tmp_path / 'pulled.raw')

    env = dict(os.environ, PYTHONPATH=ROOT)
    child = subprocess.run(
        (sys.executable, '-c', CHILD, mode, SECRET, tls_endpoint.url,
         tls_endpoint.disk_url(disk_id), disk_id, token, ca, wrong_ca, out),
        capture_output=True, text=True, timeout=CHILD_TIMEOUT, cwd=ROOT,
        env=env)
    lines = [line for line in child.stdout.splitlines()
             if line.startswith('RESULT ')]
    assert child.returncode == 0 and lines, child.stderr[-3000:]
    result = json.loads(lines[-1][len('RESULT '):])

    # Under eventlet the context is the green one (cooperative sockets).
    assert result['context'] == ('GreenSSLContext' if mode == 'eventlet'
                                 else 'SSLContext')
    assert result['ping'] == {'pong': True}
    # Verification stays on: no CA, or the wrong one, is refused.
    assert 'CERTIFICATE_VERIFY_FAILED' in result['unverified_ping']
    assert 'TLS verification' in result['wrong_ca']
    assert result['pull'] == 'pulled'
    assert disks.check_extents(out, extents)
    assert translate.compare(out, 'raw', raw, 'raw')
