#!/usr/bin/env python3
"""Measure what an attacker can take from one exchange endpoint.

Serves an exchange endpoint (plain HTTP, default options) in a child
Python, on native threads or under eventlet, and from this process:

* opens idle connections from one address, then from many (127.0.x.y),
  and counts how many the endpoint holds before it sheds; reports the
  child's RSS and thread count at that point;
* sends a large body with a negative, then an absent, Content-Length and
  reports how much the attacker got through and the child's peak RSS.

    tools/bench/exchange_abuse.py [--mode native|eventlet|both]
                                  [--body-mib 256] [--tree PATH]

``--tree`` runs the endpoint of another XHV source tree (e.g. an older
release unpacked with ``git archive``) for a baseline in the same run.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
MiB = 1024 * 1024
# Enough to pass the default caps (256 in all, 64 per client address).
IDLE_TRIES = 320

SERVER = r'''
import sys
if sys.argv[1] == 'eventlet':
    import eventlet
    eventlet.monkey_patch()
from nova_xhv.migration import exchange
server = exchange.ExchangeServer('bench-secret', bind_host='127.0.0.1',
                                 port=0, advertise_host='127.0.0.1',
                                 use_tls=False)
print(server.start(), flush=True)
import time
while True:
    time.sleep(1)  # green under eventlet, unlike a read of stdin
'''


def _status(pid):
    found = {}
    with open('/proc/%d/status' % pid) as status:
        for line in status:
            name, _sep, value = line.partition(':')
            if name in ('VmRSS', 'VmHWM'):
                found[name] = int(value.split()[0]) * 1024
            elif name == 'Threads':
                found[name] = int(value)
    return found


def _connect(port, source):
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(5)
    sock.connect(('127.0.0.1', port))
    return sock


def _held(sockets, settle=1.0):
    """How many of ``sockets`` the server keeps open (no answer, no EOF)."""
    time.sleep(settle)  # let the accept loop admit or shed each
    held = 0
    for sock in sockets:
        sock.setblocking(False)
        try:
            data = sock.recv(1)
        except BlockingIOError:
            held += 1
            continue
        except OSError:
            continue
        if not data:
            continue
    return held


def _idle(port, pid, sources):
    sockets = []
    try:
        for index in range(IDLE_TRIES):
            sockets.append(_connect(port, sources[index % len(sources)]))
        held = _held(sockets)
        return {'held': held, 'tried': len(sockets), **_status(pid)}
    finally:
        for sock in sockets:
            sock.close()


def _flood(port, pid, headers, body_mib):
    before = _status(pid)
    sock = _connect(port, '127.0.0.2')
    sock.settimeout(30)
    sock.sendall(b'POST /stage HTTP/1.1\r\nHost: x\r\n' + headers +
                 b'\r\n')
    block = b'\0' * MiB
    sent = 0
    started = time.monotonic()
    try:
        for _ in range(body_mib):
            sock.sendall(block)
            sent += MiB
        sock.shutdown(socket.SHUT_WR)
        answer = sock.recv(64)
    except OSError as error:
        answer = ('(%s)' % type(error).__name__).encode()
    sock.close()
    after = _status(pid)
    return {'sent_mib': round(sent / MiB, 1),
            'answer': answer[:12].decode('latin-1'),
            'peak_rss_growth_mib': round(
                (after['VmHWM'] - before['VmHWM']) / MiB, 1),
            'seconds': round(time.monotonic() - started, 2)}


def run(mode, tree, body_mib):
    env = dict(os.environ, PYTHONPATH=tree)
    child = subprocess.Popen((sys.executable, '-c', SERVER, mode),
                             stdout=subprocess.PIPE, text=True, cwd=tree,
                             env=env)
    try:
        url = child.stdout.readline().strip()
        port = int(url.rsplit(':', 1)[1])
        time.sleep(0.5)
        result = {'mode': mode, 'tree': tree, 'start': _status(child.pid)}
        result['idle_one_client'] = _idle(port, child.pid, ['127.0.0.2'])
        result['idle_many_clients'] = _idle(
            port, child.pid, ['127.0.%d.%d' % (1 + i // 200, 1 + i % 200)
                              for i in range(IDLE_TRIES)])
        # Let the server drop what it held before flooding.
        time.sleep(1)
        result['negative_length'] = _flood(port, child.pid,
                                           b'Content-Length: -1\r\n',
                                           body_mib)
        result['absent_length'] = _flood(port, child.pid, b'', body_mib)
        return result
    finally:
        child.terminate()
        child.wait(30)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--mode', choices=('native', 'eventlet', 'both'),
                        default='both')
    parser.add_argument('--body-mib', type=int, default=256)
    parser.add_argument('--tree', default=ROOT)
    args = parser.parse_args()
    modes = ('native', 'eventlet') if args.mode == 'both' else (args.mode,)
    for mode in modes:
        print(json.dumps(run(mode, os.path.abspath(args.tree),
                             args.body_mib), indent=1))


if __name__ == '__main__':
    main()
