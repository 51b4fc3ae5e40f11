"""The exchange endpoint under attack, over real sockets on loopback.

Each abuse comes from 127.0.0.2 (raw sockets: what a hostile client on
the migration network can send); the signed control requests that must
keep working meanwhile come from 127.0.0.1 through the real client.
Deadlines are small options here (1 s) so the tests stay short; every
wait is on a condition with a deadline.
"""

import base64
import json
import socket
import ssl
import threading
import time

import pytest

from nova_xhv.migration import client as exchange_client
from nova_xhv.migration import exchange
from nova_xhv.migration import signing
from tests.fixtures import vcsim as vcsim_fixture
from tests.unit.migration.test_exchange import RecordingHandler

SECRET = 'abuse-test-secret'
ATTACKER = '127.0.0.2'
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
PER_CLIENT = 8
GLOBAL = 20
MiB = 1024 * 1024
# Generous bound on one answer: the deadline plus the reaper's tick on a
# busy 2-core machine.
ANSWER_WITHIN = 15


def _limits():
    return exchange.Limits(header_timeout=HEADER_TIMEOUT,
                           body_timeout=BODY_TIMEOUT, idle_timeout=5,
                           max_connections=GLOBAL,
                           max_connections_per_client=PER_CLIENT)


def _start(handler=None):
    server = exchange.ExchangeServer(
        SECRET, bind_host='127.0.0.1', port=0, advertise_host='127.0.0.1',
        use_tls=False, control_handler=handler or RecordingHandler(),
        limits=_limits())
    server.start()
    return server


@pytest.fixture(scope='module')
def server():
    server = _start()
    yield server
    server.stop(wait=True)


def _port(server):
    return int(server.url.rsplit(':', 1)[1])


def _connect(server, source=ATTACKER):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(ANSWER_WITHIN)
    sock.connect(('127.0.0.1', _port(server)))
    return sock


def _status(sock):
    """The answer's status code from the socket; None: closed without."""
    data = b''
    try:
        while b'\r\n' not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    if not data.startswith(b'HTTP/1.1 '):
        return None
    return int(data[9:12])


def _ask(server, raw):
    sock = _connect(server)
    try:
        sock.sendall(raw)
        return _status(sock)
    finally:
        sock.close()


def _answer(server, raw, source='127.0.0.1'):
    """The whole answer to a request whose connection the server closes."""
    sock = _connect(server, source)
    try:
        sock.sendall(raw)
        data = b''
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
    finally:
        sock.close()


def _control_works(server):
    client = exchange_client.ExchangeClient(SECRET, timeout=10)
    assert client.ping(server.url) == {'pong': True}
    assert client.stage_start(server.url, {'key': 'k1', 'disks': []})[
        'state'] == 'running'
    assert client.stage_start(server.url, {
        'probe_original': True, 'instance_uuid': 'u', 'key': 'k2'})[
        'key'] == 'k2'


def _wait_for(condition, timeout=ANSWER_WITHIN):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, 'condition not met in time'
        time.sleep(0.02)


def _rss():
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024


def _signed(server, method, path, body=b'', target=None,
            content_type='application/json'):
    target = target or signing.target_of_url(server.url)
    headers = signing.sign(SECRET, method, target, path, body)
    headers.update({'Host': target, 'Content-Length': str(len(body)),
                    'Content-Type': content_type})
    return (('%s %s HTTP/1.1\r\n' % (method, path)) + ''.join(
        '%s: %s\r\n' % item for item in headers.items()) +
        '\r\n').encode() + body


def _post(headers, body=b''):
    return (b'POST /stage HTTP/1.1\r\nHost: x\r\n' + headers +
            b'\r\n' + body)


MALFORMED = [
    ('negative length', _post(b'Content-Length: -1\r\n'), 400),
    ('non-numeric length', _post(b'Content-Length: 12abc\r\n'), 400),
    ('absurd length', _post(b'Content-Length: %s\r\n' % (b'9' * 5000)),
     400),
    ('huge length', _post(b'Content-Length: 99999999999\r\n'), 413),
    ('two lengths', _post(b'Content-Length: 2\r\nContent-Length: 2\r\n',
                          b'{}'), 400),
    ('length list', _post(b'Content-Length: 2, 2\r\n', b'{}'), 400),
    ('chunked', _post(b'Transfer-Encoding: chunked\r\n', b'2\r\n{}\r\n0'
                      b'\r\n\r\n'), 411),
    ('chunked and length', _post(b'Transfer-Encoding: chunked\r\n'
                                 b'Content-Length: 2\r\n', b'{}'), 411),
    ('POST without length', _post(b''), 411),
    ('GET with a body', b'GET /ping HTTP/1.1\r\nHost: x\r\n'
                        b'Content-Length: 5\r\n\r\nhello', 400),
    ('unknown method', b'PUT /stage HTTP/1.1\r\nHost: x\r\n\r\n', 405),
    ('method not a token', b'G(T /ping HTTP/1.1\r\nHost: x\r\n\r\n', 400),
    ('wrong method for the path', b'POST /ping HTTP/1.1\r\nHost: x\r\n'
                                  b'Content-Length: 0\r\n\r\n', 405),
    ('unknown path', b'GET /etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n', 404),
    ('relative target', b'GET ping HTTP/1.1\r\nHost: x\r\n\r\n', 400),
    ('absolute URL target', b'GET http://x/ping HTTP/1.1\r\nHost: x\r\n'
                            b'\r\n', 400),
    ('double slash', b'GET //evil/ping HTTP/1.1\r\nHost: x\r\n\r\n', 404),
    ('query', b'GET /ping?debug=1 HTTP/1.1\r\nHost: x\r\n\r\n', 400),
    ('fragment', b'GET /ping#x HTTP/1.1\r\nHost: x\r\n\r\n', 400),
    ('HTTP/0.9', b'GET /ping\r\n', 400),
    ('HTTP/2.0', b'GET /ping HTTP/2.0\r\nHost: x\r\n\r\n', 400),
    ('no Host', b'GET /ping HTTP/1.1\r\n\r\n', 400),
    ('two Hosts', b'GET /ping HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', 400),
    ('garbage bytes', bytes(range(256)) + b'\r\n\r\n', 400),
    ('a TLS hello on plain HTTP', b'\x16\x03\x01\x02\x00\x01\x00\x01\xfc'
                                  b'\x03\x03' + b'\x00' * 64, 400),
    ('request line too long', b'GET /' + b'a' * 10000 + b' HTTP/1.1\r\n'
                              b'\r\n', 414),
    ('header too large', b'GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: ' +
                         b'b' * 20000 + b'\r\n\r\n', 431),
    ('too many headers', b'GET /ping HTTP/1.1\r\nHost: x\r\n' +
                         b''.join(b'X-%d: 1\r\n' % i for i in range(100)) +
                         b'\r\n', 431),
    ('folded header', b'GET /ping HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n'
                      b' folded\r\n\r\n', 400),
    ('header without colon', b'GET /ping HTTP/1.1\r\nHost x\r\n\r\n', 400),
    ('space before colon', b'GET /ping HTTP/1.1\r\nHost : x\r\n\r\n', 400),
    ('unsigned control', b'GET /ping HTTP/1.1\r\nHost: x\r\n\r\n', 401),
    ('wrong content type', _post(b'Content-Type: text/plain\r\n'
                                 b'Content-Length: 2\r\n', b'{}'), 415),
    ('body shorter than announced (then silence)',
     _post(b'Content-Type: application/json\r\nContent-Length: 100\r\n',
           b'{}'), 408),
    ('headers never finished (then silence)',
     b'GET /ping HTTP/1.1\r\nHost: x\r\n', 408),
]


@pytest.mark.parametrize('raw,expected', [(raw, status) for _name, raw,
                                          status in MALFORMED],
                         ids=[name for name, _raw, _status in MALFORMED])
def test_every_malformed_request_gets_a_4xx(server, raw, expected):
    assert _ask(server, raw) == expected
    _control_works(server)
    # Every refused connection is closed by the server: no thread left.
    _wait_for(lambda: server.open_connections == 0)


@pytest.mark.parametrize('body,expected', [
    (b'{"key": ', 400), (b'\xff\xfe', 400), (b'[1, 2]', 400), (b'"x"', 400),
    (b'[' * 600000 + b']' * 600000, 413), (b'[' * 50000, 400),
], ids=['truncated', 'not utf-8', 'a list', 'a string', 'too large',
        'too deep'])
def test_signed_but_bad_json_is_a_4xx(server, body, expected):
    assert _ask(server, _signed(server, 'POST', '/stage', body)) == expected
    _control_works(server)


def test_absurd_ranges_are_416_never_a_dropped_connection(server,
                                                          tmp_path):
    disk = tmp_path / 'd.raw'
    disk.write_bytes(b'x' * 4096)
    disk_id, token = server.publisher.publish(str(disk))
    auth = base64.b64encode(('%s:%s' % (disk_id, token)).encode())
    for wanted in (b'bytes=' + b'9' * 5000 + b'-', b'bytes=0-' + b'9' * 30,
                   b'bytes=99999999999999999999-', b'bytes=5-3',
                   b'bytes=0-1,5-6', b'bytes=-', b'bytes=a-b',
                   b'items=0-1', b'bytes=4096-'):
        raw = (b'GET /disks/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Basic '
               b'%s\r\nRange: %s\r\n\r\n' % (disk_id.encode(), auth,
                                             wanted))
        assert _ask(server, raw) == 416, wanted
    two = (b'GET /disks/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Basic %s'
           b'\r\nRange: bytes=0-1\r\nRange: bytes=2-3\r\n\r\n'
           % (disk_id.encode(), auth))
    assert _ask(server, two) == 416
    good = (b'GET /disks/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Basic %s'
            b'\r\nRange: bytes=0-9\r\n\r\n' % (disk_id.encode(), auth))
    assert _ask(server, good) == 206
    _control_works(server)


def _flood(sock, megabytes, sent):
    block = b'\0' * MiB
    try:
        for _ in range(megabytes):
            sock.sendall(block)
            sent[0] += len(block)
    except OSError:
        pass  # the server closed: what we want


@pytest.mark.parametrize('headers,expected', [
    (b'Content-Length: -1\r\n', 400),
    (b'', 411),
    (b'Content-Length: -99999999999\r\n', 400),
    (b'Transfer-Encoding: chunked\r\n', 411),
], ids=['negative', 'absent', 'very negative', 'chunked'])
def test_a_large_body_without_valid_length_is_refused_unread(
        server, headers, expected):
    before = _rss()
    sock = _connect(server)
    sock.sendall(_post(headers))
    assert _status(sock) == expected
    # The attacker goes on sending 64 MiB: the server reads none of it and
    # has closed the connection, so the sender is stopped after at most
    # the sockets' buffers.
    sent = [0]
    sender = threading.Thread(target=_flood, args=(sock, 64, sent))
    sender.start()
    _control_works(server)
    sender.join(ANSWER_WITHIN)
    assert not sender.is_alive()
    sock.close()
    assert sent[0] < 32 * MiB
    assert _rss() - before < 16 * MiB


def test_silent_and_trickling_clients_are_cut_at_the_deadline(server):
    threads_before = threading.active_count()
    silent = [_connect(server) for _ in range(PER_CLIENT - 1)]
    trickler = _connect(server)
    _wait_for(lambda: server.open_connections == PER_CLIENT)
    # The per-client cap is reached: the next one is shed at once, with a
    # thread count bounded by the cap.
    shed = _connect(server)
    assert _status(shed) == 503
    shed.close()
    assert threading.active_count() <= threads_before + PER_CLIENT + 1
    started = time.monotonic()
    # Signed control from another address works during the abuse.
    _control_works(server)
    # One byte every 0.1 s never completes a request line: cut like the
    # silent ones, with 408.
    stop = threading.Event()

    def trickle():
        for byte in b'GET /ping HTTP/1.1\r\nHost: x\r\n' * 100:
            if stop.is_set():
                return
            try:
                trickler.send(bytes([byte]))
            except OSError:
                return
            stop.wait(0.1)
    trickling = threading.Thread(target=trickle)
    trickling.start()
    statuses = [_status(sock) for sock in silent + [trickler]]
    stop.set()
    trickling.join()
    elapsed = time.monotonic() - started
    assert statuses == [408] * PER_CLIENT
    assert elapsed < HEADER_TIMEOUT + ANSWER_WITHIN
    for sock in silent + [trickler]:
        sock.close()
    _wait_for(lambda: server.open_connections == 0)
    _wait_for(lambda: threading.active_count() <= threads_before)
    # Slots are free again for the same client.
    assert _ask(server, b'GET /ping HTTP/1.1\r\nHost: x\r\n\r\n') == 401


def test_global_cap_sheds_and_recovers(server):
    sockets = []
    for client in range(GLOBAL // PER_CLIENT + 1):
        for _ in range(PER_CLIENT):
            if len(sockets) < GLOBAL:
                sockets.append(_connect(server, '127.0.1.%d' % (client + 1)))
    _wait_for(lambda: server.open_connections == GLOBAL)
    shed_before = server.shed
    # A new address is shed too once the endpoint is full.
    newcomer = _connect(server, '127.0.2.1')
    assert _status(newcomer) == 503
    newcomer.close()
    assert server.shed == shed_before + 1
    for sock in sockets:
        sock.close()
    _wait_for(lambda: server.open_connections == 0)
    _control_works(server)


@pytest.mark.parametrize('use_tls', [False, True], ids=['http', 'https'])
def test_the_client_retries_when_shed(certs, use_tls):
    ca, cert, key = certs
    server = exchange.ExchangeServer(
        SECRET, bind_host='127.0.0.1', port=0, advertise_host='127.0.0.1',
        use_tls=use_tls, cert_file=cert, key_file=key,
        control_handler=RecordingHandler(),
        limits=exchange.Limits(header_timeout=30, max_connections=1))
    server.start()
    try:
        holder = _connect(server, '127.0.0.1')
        _wait_for(lambda: server.open_connections == 1)
        answers = []
        client = exchange_client.ExchangeClient(SECRET, ca_file=ca,
                                                timeout=10)
        pinging = threading.Thread(
            target=lambda: answers.append(client.ping(server.url)))
        pinging.start()
        # Shed at least once (503 or, over TLS, closed), then room again.
        _wait_for(lambda: server.shed >= 1)
        holder.close()
        pinging.join(ANSWER_WITHIN)
        assert answers == [{'pong': True}]
    finally:
        server.stop(wait=True)


def test_kept_alive_connection_serves_again_and_a_refusal_closes(server):
    target = signing.target_of_url(server.url)
    sock = _connect(server, '127.0.0.1')
    reader = sock.makefile('rb')
    for _ in range(2):
        sock.sendall(_signed(server, 'GET', '/ping', target=target))
        assert reader.readline().startswith(b'HTTP/1.1 200 ')
        length = 0
        while True:
            line = reader.readline()
            if line.lower().startswith(b'content-length:'):
                length = int(line.split(b':')[1])
            if line == b'\r\n':
                break
        assert json.loads(reader.read(length)) == {'pong': True}
    sock.sendall(b'GET /ping HTTP/1.1\r\nHost: x\r\n\r\n')
    assert reader.readline().startswith(b'HTTP/1.1 401 ')
    while reader.readline() not in (b'\r\n', b''):
        pass
    reader.read()  # the rest, until the server closes
    assert sock.recv(1) == b''
    sock.close()


# -- the signature binds the target ---------------------------------------

def test_a_request_signed_for_one_compute_is_refused_by_another():
    first, second = _start(), _start()
    try:
        assert _port(first) != _port(second)
        body = json.dumps({'key': 'k9', 'disks': []}).encode()
        for_first = _signed(first, 'POST', '/stage', body)
        # Replayed to another compute sharing the secret: refused, and
        # rewriting the target header breaks the signature.
        answer = _answer(second, for_first)
        assert answer.startswith(b'HTTP/1.1 401 ')
        assert b'signed for 127.0.0.1:%d' % _port(first) in answer
        forged = for_first.replace(
            b'X-XHV-Target: 127.0.0.1:%d' % _port(first),
            b'X-XHV-Target: 127.0.0.1:%d' % _port(second))
        assert forged != for_first
        answer = _answer(second, forged)
        assert answer.startswith(b'HTTP/1.1 401 ') and b'bad signature' in \
            answer
        assert second.control_handler.started == []
        # The compute it was signed for takes it once; a replay there is
        # refused as before.
        assert _ask(first, for_first) == 202
        answer = _answer(first, for_first)
        assert answer.startswith(b'HTTP/1.1 401 ') and b'replayed' in answer
        started = first.control_handler.started
        assert started == [{'key': 'k9', 'disks': []}]
        # The real client addresses each by its own URL.
        _control_works(first)
        _control_works(second)
    finally:
        first.stop(wait=True)
        second.stop(wait=True)


def test_an_unsigned_target_names_the_upgrade(server):
    # What a peer running an older XHV sends: no X-XHV-Target.
    raw = _signed(server, 'GET', '/ping').replace(
        b'X-XHV-Target: ', b'X-Old-Target: ')
    answer = _answer(server, raw)
    assert answer.startswith(b'HTTP/1.1 401 ') and b'upgrade' in answer


# -- TLS: the handshake is under the header deadline too -------------------

@pytest.fixture(scope='module')
def certs(tmp_path_factory):
    return vcsim_fixture.make_ca_and_server_cert(
        str(tmp_path_factory.mktemp('abuse-tls')))


def test_tls_handshake_silent_or_trickled_is_cut(certs):
    ca, cert, key = certs
    server = exchange.ExchangeServer(
        SECRET, bind_host='127.0.0.1', port=0, advertise_host='127.0.0.1',
        use_tls=True, cert_file=cert, key_file=key,
        control_handler=RecordingHandler(), limits=_limits())
    server.start()
    try:
        silent = _connect(server)
        trickler = _connect(server)
        # A real ClientHello, one byte every 0.1 s: each read inside the
        # handshake is short, the whole is not.
        context = ssl.create_default_context(cafile=ca)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        hello = context.wrap_bio(incoming, outgoing,
                                 server_hostname='127.0.0.1')
        with pytest.raises(ssl.SSLWantReadError):
            hello.do_handshake()
        client_hello = outgoing.read()
        _wait_for(lambda: server.open_connections == 2)
        stop = threading.Event()

        def trickle():
            for byte in client_hello:
                if stop.wait(0.1):
                    return
                try:
                    trickler.send(bytes([byte]))
                except OSError:
                    return
        trickling = threading.Thread(target=trickle)
        trickling.start()
        client = exchange_client.ExchangeClient(SECRET, ca_file=ca,
                                                timeout=10)
        assert client.ping(server.url) == {'pong': True}
        started = time.monotonic()
        for sock in (silent, trickler):
            # Closed without an answer (no TLS session to answer in).
            assert _status(sock) is None
        assert time.monotonic() - started < ANSWER_WITHIN
        stop.set()
        trickling.join()
        assert len(client_hello) * 0.1 > HEADER_TIMEOUT + 2
        _wait_for(lambda: server.open_connections == 0)
        assert client.stage_start(server.url, {'key': 't1', 'disks': []})[
            'state'] == 'running'
    finally:
        server.stop(wait=True)
