#!/usr/bin/env python3
"""What the all-in-one's networking costs neutron-server, in one run.

Starts, one after the other and ``--rounds`` times each, neutron-server
as the all-in-one ran it before networking (ML2 with no mechanism driver,
the ``router`` plugin) and as it runs it now (``ovn,xhv`` on Open vSwitch
+ OVN in userspace, the ``ovn-router`` plugin), with the tests' fixtures
(tests/fixtures/neutron.py: uWSGI, one worker, SQLite;
tests/fixtures/ovn.py), and prints for each: seconds until the API
answers, neutron-server's RSS (master + worker) once it answers, and for
the networked one the time the six OVS/OVN daemons take to start (chassis
registered) and their RSS.  Ratios are against the baseline measured in
the same run.  No libvirt, no fixed ports: no lock needed.

    tools/bench/aio_network.py [--rounds 2]
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'tools', 'aio'))

import network  # noqa: E402  (tools/aio)
from tests.fixtures import neutron as neutron_fixture  # noqa: E402
from tests.fixtures import ovn as ovn_fixture  # noqa: E402


def _neutron(**kwargs):
    server = neutron_fixture.NeutronServer(**kwargs)
    began = time.monotonic()
    try:
        server.start()
        seconds = time.monotonic() - began
        return seconds, network.rss_mib(server.proc.pid)
    finally:
        server.stop()


def baseline():
    return _neutron(mechanism_drivers='', service_plugins='router')


def networked():
    began = time.monotonic()
    bed = ovn_fixture.OVNBed('bench-kvm').start()
    try:
        ovn_seconds = time.monotonic() - began
        pids = []
        for name in ('ovsdb', 'ovs-vswitchd', 'ovnnb', 'ovnsb',
                     'ovn-northd', 'ovn-controller'):
            with open(os.path.join(bed.dir, name + '.pid')) as f:
                pids.append(int(f.read().split()[0]))
        ovn_rss = sum(network.rss_mib(pid) for pid in pids)
        seconds, rss = _neutron(
            mechanism_drivers='ovn,xhv', tenant_types='geneve',
            service_plugins='ovn-router',
            ml2_xhv={'host_families': 'bench-vc:vmware',
                     'physical_network_mappings': 'vmware:public:DVS0'},
            extra_ml2='\n[ovn]\novn_nb_connection = %s\n'
                      'ovn_sb_connection = %s\novn_metadata_enabled = '
                      'false\n' % (bed.nb, bed.sb))
        return seconds, rss, ovn_seconds, ovn_rss
    finally:
        bed.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rounds', type=int, default=2)
    args = parser.parse_args()
    if not ovn_fixture.available():
        sys.exit('Open vSwitch/OVN are not installed')
    base, net = [], []
    for _ in range(args.rounds):
        base.append(baseline())
        net.append(networked())
    b_s = min(r[0] for r in base)
    b_rss = min(r[1] for r in base)
    n_s = min(r[0] for r in net)
    n_rss = min(r[1] for r in net)
    o_s = min(r[2] for r in net)
    o_rss = min(r[3] for r in net)
    print('best of %d rounds' % args.rounds)
    print('%-44s %8s %9s' % ('', 'seconds', 'RSS MiB'))
    print('%-44s %8.1f %9.1f' % ('neutron-server, ML2 without drivers '
                                 '(baseline)', b_s, b_rss))
    print('%-44s %8.1f %9.1f' % ('neutron-server, ML2 ovn,xhv', n_s, n_rss))
    print('%-44s %8.1f %9.1f' % ('OVS + OVN daemons (6)', o_s, o_rss))
    print('neutron-server ovn,xhv / baseline: start x%.2f, RSS x%.2f; '
          'networking adds %.0f MiB (%.0f MiB neutron + %.0f MiB daemons)'
          % (n_s / b_s, n_rss / b_rss, n_rss - b_rss + o_rss,
             n_rss - b_rss, o_rss))


if __name__ == '__main__':
    main()
