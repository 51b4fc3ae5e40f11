"""One Open vSwitch + OVN in userspace: its files, daemons and settings.

Shared by the all-in-one (tools/aio/network.py: daemons under xhv-aio's
PID tracking) and the tests' fixture (tests/fixtures/ovn.py: detached
daemons in a temp folder).  Checked on Debian 12 (OVS 3.1, OVN 23.03):
the kernel has no openvswitch module, so every bridge is
``datapath_type=netdev`` and every daemon a plain process whose databases,
control sockets and pid files live in one folder (OVS_RUNDIR & co.), so
that several such beds run side by side on one machine.  No module of
xhv-aio is imported here.
"""

import contextlib
import fcntl
import os
import subprocess
import time

OVS_SCHEMA = '/usr/share/openvswitch/vswitch.ovsschema'
NB_SCHEMA = '/usr/share/ovn/ovn-nb.ovsschema'
SB_SCHEMA = '/usr/share/ovn/ovn-sb.ovsschema'
PACKAGES = ('openvswitch-switch', 'ovn-central', 'ovn-host')
# The userspace (netdev) datapath's own device is one per machine: a second
# ovs-vswitchd cannot open it (EBUSY), logs "failed to create bridge" and
# leaves every bridge of its bed dead while ovs-vsctl reports success.  So
# one bed's ovs-vswitchd runs at a time: see sole_datapath().
DATAPATH_DEVICE = 'ovs-netdev'
DATAPATH_LOCK = '/tmp/xhv-ovs-netdev.lock'
# An all-in-one holds the datapath for its whole life (~15-20 min).
DATAPATH_WAIT = 2400
DATAPATH_POLL = 1.0
# (name, schema, socket attribute) of the three ovsdb-servers.
DATABASES = (('ovsdb', OVS_SCHEMA, 'ovs_db'), ('ovnnb', NB_SCHEMA, 'nb'),
             ('ovnsb', SB_SCHEMA, 'sb'))


def available():
    """Are Open vSwitch and OVN installed (their schemas)?"""
    return all(os.path.exists(p) for p in (OVS_SCHEMA, NB_SCHEMA, SB_SCHEMA))


def vswitchd_pids():
    """PIDs of the live (not zombie) ovs-vswitchd processes here."""
    pids = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry) as f:
                name, rest = f.read().split('(', 1)[1].rsplit(')', 1)
        except (OSError, ValueError, IndexError):
            continue
        if name == 'ovs-vswitchd' and rest.split()[0] != 'Z':
            pids.append(int(entry))
    return pids


@contextlib.contextmanager
def sole_datapath(own=(), timeout=DATAPATH_WAIT, log=print):
    """Start an ovs-vswitchd inside: it will be the only one running.

    Waits (with a deadline) until no ovs-vswitchd but the PIDs in ``own``
    runs; holds DATAPATH_LOCK until the block ends, so that two starters
    never both see the machine free.  The caller starts its vswitchd in
    the block; that process then keeps the next starter waiting.
    """
    deadline = time.monotonic() + timeout
    with open(DATAPATH_LOCK, 'a') as lock:
        told = False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                others = [p for p in vswitchd_pids() if p not in own]
                if not others:
                    break
                fcntl.flock(lock, fcntl.LOCK_UN)
            except BlockingIOError:
                others = ['a starter holding %s' % DATAPATH_LOCK]
            if time.monotonic() > deadline:
                raise RuntimeError(
                    'another ovs-vswitchd (%s) still holds the userspace '
                    'datapath (%s) after %d s; one runs per machine'
                    % (', '.join(map(str, others)), DATAPATH_DEVICE,
                       timeout))
            if not told:
                log('waiting for ovs-vswitchd %s to stop: the userspace '
                    'datapath (%s) is one per machine'
                    % (', '.join(map(str, others)), DATAPATH_DEVICE))
                told = True
            time.sleep(DATAPATH_POLL)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class Layout(object):
    """Where one bed's files are and the command lines of its daemons.

    ``run_dir``: sockets, control sockets and pid files; ``db_dir``: the
    database files (the same folder, or one that outlives the daemons).
    """

    def __init__(self, run_dir, db_dir=None):
        self.run_dir = run_dir
        self.db_dir = db_dir or run_dir
        self.env = dict(os.environ, OVS_RUNDIR=run_dir, OVS_DBDIR=self.db_dir,
                        OVS_LOGDIR=run_dir, OVN_RUNDIR=run_dir,
                        OVN_DBDIR=self.db_dir, OVN_LOGDIR=run_dir)
        self.ovs_db = 'unix:%s/db.sock' % run_dir
        self.nb = 'unix:%s/ovnnb.sock' % run_dir
        self.sb = 'unix:%s/ovnsb.sock' % run_dir

    def db_file(self, name):
        return os.path.join(self.db_dir, name + '.db')

    def create_databases(self):
        """ovsdb-tool create each database file that does not exist."""
        for name, schema, _socket in DATABASES:
            if not os.path.exists(self.db_file(name)):
                self.run('ovsdb-tool', 'create', self.db_file(name), schema)

    def ovsdb_argv(self, name):
        socket = getattr(self, dict((n, s) for n, _, s in DATABASES)[name])
        return ['ovsdb-server', self.db_file(name), '--remote=p' + socket]

    def vswitchd_argv(self):
        return ['ovs-vswitchd', self.ovs_db]

    def northd_argv(self):
        return ['ovn-northd', '--ovnnb-db=' + self.nb,
                '--ovnsb-db=' + self.sb]

    def controller_argv(self):
        # Its control socket lands in OVN_RUNDIR (it takes no --unixctl).
        return ['ovn-controller', self.ovs_db]

    def run(self, *argv, timeout=30, check=True):
        result = subprocess.run(argv, env=self.env, capture_output=True,
                                text=True, timeout=timeout)
        if check and result.returncode:
            raise RuntimeError('%s failed (%d): %s' % (
                ' '.join(argv[:2]), result.returncode, result.stderr[-1500:]))
        return result.stdout

    def vsctl(self, *args, timeout=20):
        # A timeout always: ovs-vsctl waits for ever on a dead vswitchd.
        return self.run('ovs-vsctl', '--db=' + self.ovs_db,
                        '--timeout=%d' % timeout, *args,
                        timeout=timeout + 10)

    def sbctl(self, *args):
        return self.run('ovn-sbctl', '--db=' + self.sb, '--timeout=10',
                        *args)

    def add_bridge(self, bridge, secure=True):
        args = ['--may-exist', 'add-br', bridge, '--', 'set', 'Bridge',
                bridge, 'datapath_type=netdev']
        if secure:
            args.append('fail-mode=secure')
        self.vsctl(*args)

    def set_chassis(self, host, bridge, bridge_mappings=None):
        """The chassis ovn-controller registers: ``hostname`` = ``host``.

        Neutron's OVN mechanism driver binds ports for the Nova host of that
        name; ``bridge_mappings`` ({physical network: bridge}) lets it bind
        flat and VLAN segments of those physical networks too.
        """
        ids = ['external_ids:system-id=%s' % host,
               'external_ids:hostname=%s' % host,
               'external_ids:ovn-remote=%s' % self.sb,
               'external_ids:ovn-encap-type=geneve',
               'external_ids:ovn-encap-ip=127.0.0.1',
               'external_ids:ovn-bridge=%s' % bridge,
               'external_ids:ovn-bridge-datapath-type=netdev']
        if bridge_mappings:
            ids.append('external_ids:ovn-bridge-mappings="%s"' % ','.join(
                '%s:%s' % kv for kv in sorted(bridge_mappings.items())))
        self.vsctl('set', 'Open_vSwitch', '.', *ids)

    def chassis_registered(self, host):
        return host in self.sbctl('show')

    def announce_bridge(self, host, bridge):
        """Tell Neutron which bridge the chassis of ``host`` integrates.

        Neutron's OVN driver binds ports with the bridge named in the
        Chassis_Private record (written by its metadata agent, which does
        not run here), else ``br-int``, and os-vif would create and plug
        into a ``br-int`` that OVN never looks at.
        """
        self.sbctl('set', 'Chassis_Private', host,
                   'external_ids:"neutron:ovn-bridge"=%s' % bridge)
