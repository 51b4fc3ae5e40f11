"""The exchange's deadlines and caps hold with green threads too.

nova-compute runs the exchange on native threads (Nova 34's default) or,
opted in, under eventlet.  A fresh Python per mode serves the endpoint
(HTTP and HTTPS) and abuses it from the same process: the caps shed, a
silent client is cut with 408, a silent TLS client is cut, a negative
Content-Length is refused unread, and signed control works meanwhile.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.fixtures import vcsim as vcsim_fixture

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))
CHILD_TIMEOUT = 60

CHILD = r'''
import sys
mode, ca, cert, key = sys.argv[1:]
if mode == 'eventlet':
    import eventlet
    eventlet.monkey_patch()
import json
import socket
import ssl
import threading
import time

from nova_xhv.migration import client
from nova_xhv.migration import exchange

SECRET = 'green-secret'
limits = exchange.Limits(header_timeout=1.0, body_timeout=1.0,
                         idle_timeout=5, max_connections=20,
                         max_connections_per_client=4)


def connect(server, source='127.0.0.2'):
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(15)
    sock.connect(('127.0.0.1', int(server.url.rsplit(':', 1)[1])))
    return sock


def status(sock):
    data = b''
    try:
        while b'\r\n' not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    return int(data[9:12]) if data.startswith(b'HTTP/1.1 ') else None


def wait_for(condition):
    deadline = time.monotonic() + 15
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError('not in time')
        time.sleep(0.02)


result = {'green_socket': socket.socket.__module__.startswith('eventlet')}
for scheme in ('http', 'https'):
    server = exchange.ExchangeServer(
        SECRET, bind_host='127.0.0.1', port=0, advertise_host='127.0.0.1',
        use_tls=scheme == 'https', cert_file=cert, key_file=key,
        limits=limits)
    server.start()
    peer = client.ExchangeClient(SECRET, ca_file=ca, timeout=10)
    silent = [connect(server) for _ in range(4)]
    wait_for(lambda: server.open_connections == 4)
    # One more client trickles a request (a TLS hello over HTTPS), one byte
    # every 0.1 s: never complete within the 1 s deadline.
    if scheme == 'https':
        bio_in, bio_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        hello = ssl.create_default_context(cafile=ca).wrap_bio(
            bio_in, bio_out, server_hostname='127.0.0.1')
        try:
            hello.do_handshake()
        except ssl.SSLWantReadError:
            pass
        slow_bytes = bio_out.read()
    else:
        slow_bytes = b'GET /ping HTTP/1.1\r\nHost: x\r\n' * 10
    trickler = connect(server, '127.0.0.3')
    stop = threading.Event()

    def trickle():
        for byte in slow_bytes:
            if stop.wait(0.1):
                return
            try:
                trickler.send(bytes([byte]))
            except OSError:
                return
    trickling = threading.Thread(target=trickle)
    trickling.start()
    shed = connect(server)
    got = {'shed': status(shed)}
    shed.close()
    started = time.monotonic()
    got['ping_during'] = peer.ping(server.url)
    got['silent'] = [status(sock) for sock in silent]
    got['trickled'] = status(trickler)
    # Well before the attacker's own 15 s socket timeout.
    got['cut_within'] = time.monotonic() - started < 10
    got['trickle_unfinished'] = trickling.is_alive()
    stop.set()
    trickling.join()
    trickler.close()
    for sock in silent:
        sock.close()
    wait_for(lambda: server.open_connections == 0)
    if scheme == 'http':
        sock = connect(server)
        sock.sendall(b'POST /stage HTTP/1.1\r\nHost: x\r\n'
                     b'Content-Length: -1\r\n\r\n')
        got['negative_length'] = status(sock)
        sock.close()
    got['ping_after'] = peer.ping(server.url)
    server.stop(wait=True)
    result[scheme] = got
print('RESULT ' + json.dumps(result))
'''


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    return vcsim_fixture.make_ca_and_server_cert(
        str(tmp_path_factory.mktemp('limits-ca')))


@pytest.mark.parametrize('mode', ['native', 'eventlet'])
def test_caps_and_deadlines_in_both_concurrency_modes(mode, pki):
    ca, cert, key = pki
    env = dict(os.environ, PYTHONPATH=ROOT)
    child = subprocess.run(
        (sys.executable, '-c', CHILD, mode, ca, cert, key),
        capture_output=True, text=True, timeout=CHILD_TIMEOUT, cwd=ROOT,
        env=env)
    lines = [line for line in child.stdout.splitlines()
             if line.startswith('RESULT ')]
    assert child.returncode == 0 and lines, child.stderr[-3000:]
    result = json.loads(lines[-1][len('RESULT '):])
    assert result['green_socket'] == (mode == 'eventlet')
    http, https = result['http'], result['https']
    assert http['shed'] == 503 and http['silent'] == [408] * 4
    assert http['negative_length'] == 400
    # Over TLS a shed or silent client is closed: no session to answer in.
    assert http['trickled'] == 408
    assert https['shed'] is None and https['silent'] == [None] * 4
    assert https['trickled'] is None
    for got in (http, https):
        assert got['ping_during'] == got['ping_after'] == {'pong': True}
        assert got['cut_within'] and got['trickle_unfinished']
