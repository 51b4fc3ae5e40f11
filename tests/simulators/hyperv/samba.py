"""A real Samba (Debian's smbd) sharing the simulated host's VM storage.

Hyper-V hosts expose their VM storage as an SMB share; XHV reads and
writes disks there with smbprotocol.  Here smbd runs unprivileged in
everything but its uid: its own smb.conf, passdb, lock/state/cache/pid
directories in one private folder, listening on 127.0.0.1 only, on a
free port, SMB 2.1+ with signing and encryption required.  Samba
authenticates Unix users, so the Windows account name maps to root
(``username map``), which owns the shared folder.
"""

import os
import signal
import socket
import subprocess
import time

SMBD = '/usr/sbin/smbd'
PDBEDIT = '/usr/bin/pdbedit'
SHARE = 'xhv-vms'
# A second share: the folder the test bed serves as an NFS export, seen
# over SMB as a dual-protocol filer shows one export to Windows hosts.
VOLUME_SHARE = 'xhv-volumes'


def available():
    return os.path.exists(SMBD) and os.path.exists(PDBEDIT)


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Samba(object):

    def __init__(self, folder, share_dir, username, password,
                 volume_dir=None):
        self.folder = folder
        self.share_dir = share_dir
        self.volume_dir = volume_dir
        self.username = username
        self.password = password
        self.port = None
        self.proc = None

    def _config(self):
        dirs = {name: os.path.join(self.folder, name) for name in (
            'private', 'lock', 'state', 'cache', 'pid')}
        for path in dirs.values():
            os.makedirs(path, mode=0o700, exist_ok=True)
        users = os.path.join(self.folder, 'users.map')
        with open(users, 'w') as f:
            f.write('root = %s\n' % self.username)
        conf = os.path.join(self.folder, 'smb.conf')
        with open(conf, 'w') as f:
            f.write('\n'.join([
                '[global]',
                'server role = standalone server',
                'smb ports = %d' % self.port,
                'interfaces = 127.0.0.1',
                'bind interfaces only = yes',
                'disable netbios = yes',
                'private dir = %(private)s',
                'lock directory = %(lock)s',
                'state directory = %(state)s',
                'cache directory = %(cache)s',
                'pid directory = %(pid)s',
                'ncalrpc dir = %(lock)s/ncalrpc',
                'log file = %s' % os.path.join(self.folder, 'smbd.log'),
                'passdb backend = tdbsam:%(private)s/passdb.tdb',
                'username map = %s' % users,
                'server min protocol = SMB2_10',
                'server signing = mandatory',
                'smb encrypt = required',
                'load printers = no', 'printing = bsd',
                'printcap name = /dev/null', 'disable spoolss = yes',
                '[%s]' % SHARE,
                'path = %s' % self.share_dir,
                'read only = no',
                'valid users = root',
                'force user = root', ''] + ([
                    '[%s]' % VOLUME_SHARE,
                    'path = %s' % self.volume_dir,
                    'read only = no',
                    'valid users = root',
                    'force user = root', ''] if self.volume_dir else []))
                % dirs)
        return conf

    def prepare(self, port=None):
        """smb.conf and passdb for ``port`` (None: a free one); smbd's argv.

        The password reaches pdbedit on its stdin, never its argv.  The
        argv runs smbd in the foreground, in the caller's process group.
        """
        self.port = port or _free_port()
        conf = self._config()
        subprocess.run([PDBEDIT, '-s', conf, '-a', '-u', 'root', '-t'],
                       input='%s\n%s\n' % (self.password, self.password),
                       text=True, check=True, capture_output=True)
        return [SMBD, '-F', '--no-process-group', '-s', conf,
                '--debug-stdout', '-d', '1']

    def start(self, timeout=30):
        argv = self.prepare()
        log = open(os.path.join(self.folder, 'smbd.out'), 'wb')
        self.proc = subprocess.Popen(
            argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError('smbd exited with %s: %s'
                                   % (self.proc.returncode, self.log_tail()))
            try:
                socket.create_connection(('127.0.0.1', self.port),
                                         timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError('smbd does not listen: %s' % self.log_tail())

    def log_tail(self, size=2000):
        try:
            with open(os.path.join(self.folder, 'smbd.out'), 'rb') as f:
                return f.read()[-size:].decode(errors='replace')
        except OSError:
            return ''

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            # smbd forks a child per client: its whole session goes.
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=15)
        self.proc = None
