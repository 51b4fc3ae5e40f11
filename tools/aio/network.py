"""The all-in-one's network: Open vSwitch + OVN in userspace.

Neutron runs ML2 with ``mechanism_drivers = ovn,xhv``
(templates/ml2_conf.ini): OVN binds the KVM compute, whose chassis is
named after its Nova host, XHV's driver the vSphere compute (a
distributed port group ``xhv-public-<VLAN>`` on vcsim's DVS0).  Physical
network ``public`` (VLANs 100-199) reaches both: on the KVM side it is an
OVS bridge of its own in OVN's bridge mappings.  A guest's address comes
from OVN's built-in DHCP: no DHCP agent, no dnsmasq, no namespace.

The daemons (ovsdb-server for Open_vSwitch, ovs-vswitchd, the OVN
northbound and southbound ovsdb-servers, ovn-northd, ovn-controller) run
under xhv-aio's PID tracking like every other service; their sockets are
in ``<state>/run/ovn``, their databases in ``<state>/lib/ovn``
(tools/aio/ovn_userspace.py has the command lines the tests' fixture
shares).  The kernel has no openvswitch module, so every bridge is
``datapath_type=netdev``: a tap device per bridge, which ``stop`` removes
with the taps os-vif left on our bridges.
"""

import os
import subprocess
import sys
import time

import ovn_userspace
import procs
import services
from services import log

# Kernel device names (<= 15 characters), one all-in-one per machine.
BRIDGE = 'br-xhvaio'          # OVN's integration bridge
EXT_BRIDGE = 'br-xhvaio-ex'   # carries physical network PHYSNET
PHYSNET = 'public'
NETDEV_DATAPATH = ovn_userspace.DATAPATH_DEVICE
# In start order; stop goes the other way.
DAEMONS = ('ovs-db', 'ovs-vswitchd', 'ovn-nb-db', 'ovn-sb-db', 'ovn-northd',
           'ovn-controller')
# What the Linux test guest prints once its kernel runs (the CPU probe).
GUEST_UP = 'XHV-GUEST-UP'


def layout(cloud):
    return ovn_userspace.Layout(os.path.join(cloud.state, 'run', 'ovn'),
                                os.path.join(cloud.lib, 'ovn'))


def _argv(lay, name):
    return {'ovs-db': lambda: lay.ovsdb_argv('ovsdb'),
            'ovs-vswitchd': lay.vswitchd_argv,
            'ovn-nb-db': lambda: lay.ovsdb_argv('ovnnb'),
            'ovn-sb-db': lambda: lay.ovsdb_argv('ovnsb'),
            'ovn-northd': lay.northd_argv,
            'ovn-controller': lay.controller_argv}[name]()


def _remove_device(name):
    if subprocess.run(['ip', 'link', 'show', name],
                      capture_output=True).returncode == 0:
        subprocess.run(['ip', 'link', 'delete', name], capture_output=True)
        return True
    return False


def start(cloud):
    """Start OVS and OVN (idempotent); the KVM chassis registered."""
    if not ovn_userspace.available():
        raise procs.ServiceFailed(
            'Open vSwitch/OVN are not installed (tools/install-deps '
            'installs %s)' % ', '.join(ovn_userspace.PACKAGES))
    began = time.monotonic()
    lay = layout(cloud)
    tracked = cloud.procs
    os.makedirs(lay.run_dir, exist_ok=True)
    os.makedirs(lay.db_dir, exist_ok=True)
    if tracked.pid('ovs-vswitchd') is None:
        # A netdev bridge's tap outlives a vswitchd that was killed.
        for dev in (BRIDGE, EXT_BRIDGE):
            _remove_device(dev)
    lay.create_databases()
    for name in DAEMONS:
        if name == 'ovn-controller':
            host = services.HOSTS['libvirt']
            lay.set_chassis(host, BRIDGE, {PHYSNET: EXT_BRIDGE})
        if name == 'ovs-vswitchd':
            own = [tracked.pid(name)] if tracked.pid(name) else []
            with ovn_userspace.sole_datapath(own, log=log):
                tracked.start(name, _argv(lay, name), env=lay.env)
        else:
            tracked.start(name, _argv(lay, name), env=lay.env)
        if name == 'ovs-db':
            tracked.wait_for(name, lambda: lay.vsctl(
                '--no-wait', 'init', timeout=5) is not None, 30, 'answering')
        elif name == 'ovs-vswitchd':
            # add-br waits for vswitchd to create the bridge.
            tracked.wait_for(name, lambda: (
                lay.add_bridge(BRIDGE),
                lay.add_bridge(EXT_BRIDGE, secure=False)), 60,
                'creating %s and %s' % (BRIDGE, EXT_BRIDGE))
        elif name in ('ovn-nb-db', 'ovn-sb-db'):
            db = lay.nb if name == 'ovn-nb-db' else lay.sb
            tool = 'ovn-nbctl' if name == 'ovn-nb-db' else 'ovn-sbctl'
            tracked.wait_for(name, lambda: lay.run(
                tool, '--db=' + db, '--timeout=5', 'show') is not None,
                30, 'answering')
    host = services.HOSTS['libvirt']
    tracked.wait_for('ovn-controller', lambda: lay.chassis_registered(
        host), 60, 'registered as OVN chassis %s' % host)
    tracked.wait_for('ovn-controller', lambda: lay.announce_bridge(
        host, BRIDGE) is None, 30, 'with a Chassis_Private record')
    log('OVS + OVN (userspace) up in %.1f s' % (time.monotonic() - began))


def stop(cloud):
    """Stop the daemons; remove our bridges' devices and the taps left."""
    lay = layout(cloud)
    tracked = cloud.procs
    bridges, ports = [BRIDGE, EXT_BRIDGE], []
    if tracked.pid('ovs-db'):
        try:
            # os-vif may have added one (a binding naming another bridge).
            bridges += [b for b in lay.vsctl('list-br', timeout=5).split()
                        if b not in bridges]
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        for bridge in bridges:
            try:
                ports += lay.vsctl('list-ports', bridge,
                                   timeout=5).split()
            except (RuntimeError, subprocess.TimeoutExpired):
                continue
        for port in ports:
            try:
                lay.vsctl('--no-wait', '--if-exists', 'del-port', port,
                          timeout=5)
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        for bridge in bridges[2:]:  # not ours: gone from the database too
            try:
                lay.vsctl('--no-wait', '--if-exists', 'del-br', bridge,
                          timeout=5)
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
    stopped = [name for name in reversed(DAEMONS) if tracked.stop(name)]
    removed = [dev for dev in ports + bridges
               if _remove_device(dev)]
    # The netdev datapath's own device, one per machine (held by one
    # ovs-vswitchd at a time: ovn_userspace.sole_datapath): removed once
    # none runs.
    if (not ovn_userspace.vswitchd_pids() and
            _remove_device(NETDEV_DATAPATH)):
        removed.append(NETDEV_DATAPATH)
    if removed:
        log('removed network devices: %s' % ', '.join(removed))
    return stopped


def probe_guest():
    """``guest_probe.choose`` arguments: the guest the demo runs on KVM.

    The networked demo's server is XHV's Linux test guest; some machines'
    KVM starts the boot-sector disk but not a Linux kernel (nested KVM),
    so the KVM compute's virt_type is chosen by starting that guest.
    """
    sys.path.insert(0, services.TOP)
    from tests.fixtures import linux_guest
    return {'disk': linux_guest.guest_disk(), 'marker': GUEST_UP,
            'memory_mib': 256}


def rss_mib(pid):
    """Resident memory of ``pid`` and all its descendants, in MiB."""
    children = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open('/proc/%s/stat' % entry) as f:
                    ppid = int(f.read().rsplit(')', 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            with open('/proc/%d/status' % current) as f:
                for line in f:
                    if line.startswith('VmRSS:'):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024.0


def footprint(cloud):
    """[(service, MiB)] of every running service, the network's marked."""
    rows = []
    for name in cloud.procs.names():
        pid = cloud.procs.pid(name)
        if pid:
            rows.append((name, rss_mib(pid)))
    return rows
