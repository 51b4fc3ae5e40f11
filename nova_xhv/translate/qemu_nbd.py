"""What the engine's child programs share around qemu-nbd.

The stream decoder (stream_child) writes its output through a qemu-nbd,
the stream writer (write_child) reads its source through one.  Both start
it on a private UNIX socket with the conversion's limits and the qemu
environment allow list, send its messages to a file (a pipe nobody reads
could fill and stall it), and report progress the way qemu-img -p does.
"""

import os
import subprocess
import sys
import time

from nova_xhv.translate import child_environ
from nova_xhv.translate import exceptions
from nova_xhv.translate import nbd_client

QEMU_NBD = 'qemu-nbd'
STARTUP_TIMEOUT = 30.0
_LOG = 'qemu-nbd.log'
_PROGRESS_INTERVAL = 0.5


class Progress(object):
    """Prints ``(NN.NN/100%)`` as qemu-img -p does, twice a second."""

    def __init__(self, total):
        self._total = max(total, 1)
        self._last = 0.0

    def update(self, done, force=False):
        now = time.monotonic()
        if force or now - self._last >= _PROGRESS_INTERVAL:
            self._last = now
            sys.stdout.write('    (%.2f/100%%)\r' % min(
                100.0, 100.0 * done / self._total))
            sys.stdout.flush()


def start(limit_argv, args, folder, client_class, what):
    """Start ``qemu-nbd <args> <socket options>`` and connect to it.

    :param limit_argv: the prlimit prefix of the conversion
    :param args: qemu-nbd's options and its image (last)
    :param client_class: an nbd_client.NBDConnection subclass
    :param what: what it serves, for messages ('the source', 'the output')
    :returns: (process, connected client)
    """
    sock_path = os.path.join(folder, 'nbd.sock')
    argv = list(limit_argv) + [
        QEMU_NBD, '--socket=%s' % sock_path, '--export-name=',
        '--shared=1'] + list(args)
    with open(os.path.join(folder, _LOG), 'wb') as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=log,
                                env=child_environ.for_qemu())
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise exceptions.ConversionFailed(
                'qemu-nbd exited with %s before serving %s' % (
                    proc.returncode, what),
                proc.returncode, log_tail(folder))
        if os.path.exists(sock_path):
            try:
                return proc, client_class.connect_unix(sock_path)
            except (ConnectionRefusedError, FileNotFoundError):
                pass
            except (ConnectionResetError, BrokenPipeError,
                    nbd_client.NBDError):
                # It listened, then went away (e.g. it could not open the
                # image): its exit status, checked above, says why.
                try:
                    proc.wait(1)
                except subprocess.TimeoutExpired:
                    pass
        if time.monotonic() > deadline:
            proc.kill()
            raise exceptions.ConversionFailed(
                'qemu-nbd did not listen within %.0f s' % STARTUP_TIMEOUT)
        time.sleep(0.01)  # polling a socket file that qemu-nbd creates


def log_tail(folder):
    """The end of what qemu-nbd said (for error messages)."""
    try:
        with open(os.path.join(folder, _LOG), 'rb') as f:
            return f.read()[-4000:].decode('utf-8', 'replace').strip()
    except OSError:
        return ''
