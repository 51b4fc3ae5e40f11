"""The exchange endpoint over real sockets: TLS, signatures, tokens, Range.

Loopback only (127.0.0.1, kernel-chosen ports), native threads, real
qemu-img reading a published disk through its curl driver.
"""

import base64
import http.client
import json
import os
import ssl
import time

import pytest

from nova_xhv import disk as xhv_disk
from nova_xhv.migration import client as exchange_client
from nova_xhv.migration import exchange
from nova_xhv.migration import signing
from nova_xhv import translate
from tests.fixtures import disks
from tests.fixtures import vcsim as vcsim_fixture

SECRET = 'unit-test-secret'


class RecordingHandler(object):

    def __init__(self):
        self.started = []

    def stage_start(self, request):
        self.started.append(request)
        return {'key': request['key'], 'state': 'running'}

    def stage_status(self, key):
        return {'key': key, 'state': 'done'}

    def stage_discard(self, key):
        return {'key': key, 'state': 'discarded'}


@pytest.fixture(scope='module')
def certs(tmp_path_factory):
    folder = tmp_path_factory.mktemp('exchange-tls')
    return vcsim_fixture.make_ca_and_server_cert(str(folder))


@pytest.fixture
def tls_server(certs):
    _ca, cert, key = certs
    handler = RecordingHandler()
    server = exchange.ExchangeServer(
        SECRET, bind_host='127.0.0.1', port=0, advertise_host='127.0.0.1',
        use_tls=True, cert_file=cert, key_file=key,
        control_handler=handler)
    server.start()
    server.handler = handler
    yield server
    server.stop()


@pytest.fixture
def http_server():
    server = exchange.ExchangeServer(
        SECRET, bind_host='127.0.0.1', port=0, advertise_host='127.0.0.1',
        use_tls=False, control_handler=RecordingHandler())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def guest_disk(tmp_path):
    raw = str(tmp_path / 'guest.raw')
    extents = disks.make_raw_disk(raw, 16 * disks.MiB, seed=3)
    qcow2 = str(tmp_path / 'guest.qcow2')
    translate.convert(raw, qcow2, to_format='qcow2', from_format='raw')
    return raw, qcow2, extents


def _get(server, path, auth=None, headers=None, method='GET'):
    host, port = server.url.rsplit('/', 1)[-1].rsplit(':', 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = dict(headers or {})
    if auth:
        headers['Authorization'] = 'Basic ' + base64.b64encode(
            ('%s:%s' % auth).encode()).decode()
    conn.request(method, path, headers=headers)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response, body


# -- configuration --------------------------------------------------------

def test_no_secret_is_refused_with_the_option_to_set():
    with pytest.raises(exchange.ExchangeConfigError,
                       match='exchange_secret'):
        exchange.ExchangeServer('', use_tls=False)
    with pytest.raises(exchange_client.ExchangeError,
                       match='exchange_secret'):
        exchange_client.ExchangeClient(None)


def test_tls_without_certificate_names_the_options():
    with pytest.raises(exchange.ExchangeConfigError,
                       match='exchange_cert_file'):
        exchange.ExchangeServer(SECRET, use_tls=True)


def test_port_in_use_names_the_options(http_server):
    port = int(http_server.url.rsplit(':', 1)[1])
    other = exchange.ExchangeServer(SECRET, bind_host='127.0.0.1',
                                    port=port, use_tls=False)
    with pytest.raises(exchange.ExchangeConfigError, match='exchange_port'):
        other.start()


# -- TLS and signed control requests ---------------------------------------

def test_tls_control_request_verified_with_the_ca(tls_server, certs):
    ca, _cert, _key = certs
    client = exchange_client.ExchangeClient(SECRET, ca_file=ca)
    assert tls_server.url.startswith('https://127.0.0.1:')
    assert client.ping(tls_server.url) == {'pong': True}
    reply = client.stage_start(tls_server.url, {'key': 'm1', 'disks': []})
    assert reply == {'key': 'm1', 'state': 'running'}
    assert tls_server.handler.started == [{'key': 'm1', 'disks': []}]
    assert client.stage_status(tls_server.url, 'm1')['state'] == 'done'
    assert client.stage_discard(tls_server.url, 'm1')['state'] == \
        'discarded'


def test_tls_verification_is_on_by_default(tls_server):
    # The throwaway CA is not in the system trust store.
    client = exchange_client.ExchangeClient(SECRET)
    with pytest.raises(exchange_client.ExchangeError,
                       match='CERTIFICATE_VERIFY_FAILED'):
        client.ping(tls_server.url)
    assert exchange_client.ExchangeClient(
        SECRET, insecure=True).ping(tls_server.url) == {'pong': True}


def test_wrong_secret_is_refused(tls_server, certs):
    client = exchange_client.ExchangeClient('not-the-secret',
                                            ca_file=certs[0])
    with pytest.raises(exchange_client.ExchangeError,
                       match='HTTP 401.*exchange_secret') as error:
        client.stage_start(tls_server.url, {'key': 'm1', 'disks': []})
    assert error.value.status == 401
    assert tls_server.handler.started == []


def test_unsigned_replayed_and_stale_requests_are_refused(http_server):
    response, _body = _get(http_server, '/ping')
    assert response.status == 401
    target = signing.target_of_url(http_server.url)
    headers = signing.sign(SECRET, 'GET', target, '/ping')
    assert _get(http_server, '/ping', headers=headers)[0].status == 200
    response, body = _get(http_server, '/ping', headers=headers)
    assert response.status == 401 and b'replayed' in body
    stale = signing.sign(SECRET, 'GET', target, '/ping',
                         now=time.time() - 3600)
    response, body = _get(http_server, '/ping', headers=stale)
    assert response.status == 401 and b'NTP' in body


def test_signature_covers_the_body():
    verifier = signing.Verifier(SECRET, targets=['10.0.0.5:8799'])
    headers = signing.sign(SECRET, 'POST', '10.0.0.5:8799', '/stage',
                           b'{"a": 1}')
    with pytest.raises(signing.SignatureError, match='bad signature'):
        verifier.verify('POST', '/stage', headers, b'{"a": 2}')
    verifier.verify('POST', '/stage', headers, b'{"a": 1}')


# -- disks: tokens and Range ------------------------------------------------

def test_range_requests_and_tokens(http_server, guest_disk):
    raw, _qcow2, _extents = guest_disk
    disk_id, token = http_server.publisher.publish(raw)
    path = '/disks/' + disk_id
    with open(raw, 'rb') as f:
        content = f.read()

    response, _ = _get(http_server, path, (disk_id, token), method='HEAD')
    assert response.status == 200
    assert response.headers['Accept-Ranges'] == 'bytes'
    assert int(response.headers['Content-Length']) == len(content)

    start = disks.MiB + 123
    response, body = _get(http_server, path, (disk_id, token),
                          {'Range': 'bytes=%d-%d' % (start, start + 999)})
    assert response.status == 206
    assert response.headers['Content-Range'] == 'bytes %d-%d/%d' % (
        start, start + 999, len(content))
    assert body == content[start:start + 1000]
    response, body = _get(http_server, path, (disk_id, token),
                          {'Range': 'bytes=-512'})
    assert response.status == 206 and body == content[-512:]
    response, _ = _get(http_server, path, (disk_id, token),
                       {'Range': 'bytes=%d-' % len(content)})
    assert response.status == 416

    # Wrong token, another disk's id, no credentials: all refused.
    other_id, other_token = http_server.publisher.publish(raw)
    assert _get(http_server, path, (disk_id, 'x' * 43))[0].status == 401
    assert _get(http_server, path, (other_id, other_token))[0].status == 401
    assert _get(http_server, path)[0].status == 401
    # Revoked once the destination staged it: one transfer only.
    assert http_server.publisher.revoke(disk_id)
    assert _get(http_server, path, (disk_id, token))[0].status == 401


class _FailingReader(xhv_disk.DiskReader):
    """A backend's disk that breaks: at once, or after ``good`` bytes."""

    def __init__(self, size, good=None):
        self.size = size
        self.good = good
        self.closed = False

    def iter_range(self, start, end, chunk=1024 * 1024):
        if self.good is None:
            raise OSError('datastore said HTTP 503')
        yield b'x' * self.good
        raise OSError('connection to the datastore lost')

    def close(self):
        self.closed = True


def test_a_reader_that_cannot_start_answers_502(http_server):
    reader = _FailingReader(4096)
    disk_id, token = http_server.publisher.publish(reader)
    response, _ = _get(http_server, '/disks/' + disk_id, (disk_id, token),
                       {'Range': 'bytes=0-1023'})
    assert response.status == 502
    # HEAD needs no data: the size is known.
    response, _ = _get(http_server, '/disks/' + disk_id, (disk_id, token),
                       method='HEAD')
    assert response.status == 200
    assert response.headers['Content-Length'] == '4096'
    assert http_server.publisher.revoke(disk_id) and reader.closed


def test_a_reader_failing_midway_never_passes_for_whole(http_server):
    reader = _FailingReader(4096, good=1000)
    disk_id, token = http_server.publisher.publish(reader)
    host, port = http_server.url.rsplit('/', 1)[-1].rsplit(':', 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request('GET', '/disks/' + disk_id, headers={
        'Authorization': 'Basic ' + base64.b64encode(
            ('%s:%s' % (disk_id, token)).encode()).decode()})
    response = conn.getresponse()
    assert response.status == 200
    # The connection closes after the 1000 good bytes: a short body.
    with pytest.raises(http.client.IncompleteRead):
        response.read()
    conn.close()


def test_expired_token_is_refused(http_server, guest_disk):
    raw = guest_disk[0]
    disk_id, token = http_server.publisher.publish(raw, ttl=0.01)
    time.sleep(0.05)  # expiry is the behaviour under test
    assert _get(http_server, '/disks/' + disk_id,
                (disk_id, token))[0].status == 401


def test_qemu_img_streams_a_published_disk_into_the_engine(
        http_server, guest_disk, tmp_path):
    raw, qcow2, extents = guest_disk
    disk_id, token = http_server.publisher.publish(qcow2)
    source = translate.RemoteSource(http_server.disk_url(disk_id),
                                    format='qcow2', username=disk_id,
                                    password=token)
    target = str(tmp_path / 'out.vmdk')
    result = translate.convert(source, target, to_format='vmdk',
                               subformat='streamOptimized')
    assert result.virtual_size == 16 * disks.MiB
    assert translate.compare(target, 'vmdk', raw, 'raw')
    # One pass: qemu-img read about the qcow2's size, not a full copy
    # first (the header inspection adds at most 5 MiB).
    assert http_server.bytes_served <= os.path.getsize(qcow2) + 5 * \
        disks.MiB + disks.MiB


def test_qemu_img_over_tls_verifies_by_default(tls_server, guest_disk,
                                               tmp_path):
    _raw, qcow2, _extents = guest_disk
    disk_id, token = tls_server.publisher.publish(qcow2)
    url = tls_server.disk_url(disk_id)
    with pytest.raises(translate.TranslationError):
        translate.convert(translate.RemoteSource(
            url, format='qcow2', username=disk_id, password=token),
            str(tmp_path / 'refused.qcow2'), to_format='qcow2')
    assert not os.path.exists(str(tmp_path / 'refused.qcow2'))
    translate.convert(translate.RemoteSource(
        url, format='qcow2', username=disk_id, password=token,
        insecure=True), str(tmp_path / 'lab.qcow2'), to_format='qcow2')
    assert translate.compare(str(tmp_path / 'lab.qcow2'), 'qcow2', qcow2,
                             'qcow2')


def test_ssl_context_refuses_old_protocols(tls_server, certs):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(certs[0])
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    host, port = tls_server.url.rsplit('/', 1)[-1].rsplit(':', 1)
    conn = http.client.HTTPSConnection(host, int(port), context=context,
                                       timeout=5)
    with pytest.raises((ssl.SSLError, OSError)):
        conn.request('GET', '/ping')
        conn.getresponse()


class _DirectReader(xhv_disk.LocalFileReader):
    """A local disk that also offers direct reads (like a datastore)."""

    def __init__(self, path, fail=False):
        super().__init__(path)
        self.minted = 0
        self._fail = fail

    def direct_read(self):
        if self._fail:
            raise OSError('vCenter said no')
        self.minted += 1
        return xhv_disk.DirectRead(
            url='https://vcenter.example/folder/d.vmdk?dsName=ds1',
            headers={'Cookie': 'vmware_cgi_ticket=t-%d' % self.minted},
            ca_pem='-----BEGIN CERTIFICATE-----\n...')


def test_direct_read_needs_the_disk_token_and_mints_one_per_ask(
        http_server, guest_disk, caplog):
    _raw, qcow2, _extents = guest_disk
    reader = _DirectReader(qcow2)
    disk_id, token = http_server.publisher.publish(reader)
    path = '/disks/%s/direct' % disk_id
    for auth in (None, (disk_id, 'wrong'), ('other-id', token)):
        response, _ = _get(http_server, path, auth, method='POST')
        assert response.status == 401
    assert reader.minted == 0
    answers = []
    for _ in range(2):
        response, body = _get(http_server, path, (disk_id, token),
                              method='POST')
        assert response.status == 200
        answers.append(json.loads(body))
    assert reader.minted == 2
    assert answers[0]['url'] == \
        'https://vcenter.example/folder/d.vmdk?dsName=ds1'
    assert answers[0]['headers'] == {'Cookie': 'vmware_cgi_ticket=t-1'}
    assert answers[1]['headers'] == {'Cookie': 'vmware_cgi_ticket=t-2'}
    assert answers[0]['ca_pem'].startswith('-----BEGIN CERTIFICATE-----')
    # Credentials never reach the log.
    assert 'vmware_cgi_ticket' not in caplog.text
    # GET is not how a direct read is asked for.
    response, _ = _get(http_server, path, (disk_id, token))
    assert response.status != 200
    http_server.publisher.revoke(disk_id)
    response, _ = _get(http_server, path, (disk_id, token), method='POST')
    assert response.status == 401


def test_no_direct_read_is_a_404_and_the_disk_still_reads(http_server,
                                                          guest_disk):
    _raw, qcow2, _extents = guest_disk
    for reader in (xhv_disk.LocalFileReader(qcow2),
                   _DirectReader(qcow2, fail=True)):
        disk_id, token = http_server.publisher.publish(reader)
        response, body = _get(http_server, '/disks/%s/direct' % disk_id,
                              (disk_id, token), method='POST')
        assert response.status == 404
        response, body = _get(http_server, '/disks/' + disk_id,
                              (disk_id, token), {'Range': 'bytes=0-511'})
        assert response.status == 206 and len(body) == 512
        http_server.publisher.revoke(disk_id)
