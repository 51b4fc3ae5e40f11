#!/usr/bin/env python3
"""Scale check of XHV's vSphere backend against vcsim (a benchmark, not a
test).

Starts a vcsim with one cluster holding ``--vms`` VMs (all marked as Nova
instances, as the backend would have made them), then times
``update_provider_tree`` and ``list_instances`` (each one PropertyCollector
query) and prints the median and spread of ``--runs`` runs:

    /opt/xhv/venv/bin/python tools/bench/vmware_scale.py --vms 1000
"""

import argparse
import concurrent.futures
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..'))

from nova.compute import provider_tree  # noqa: E402
from nova import objects  # noqa: E402
from oslo_config import cfg  # noqa: E402
from pyVmomi import vim  # noqa: E402

from nova_xhv.backends.vmware import backend as vmware_backend  # noqa: E402
from nova_xhv.backends.vmware import inventory  # noqa: E402
from nova_xhv.backends.vmware import vm as vmops  # noqa: E402
from tests.fixtures.vcsim import VcsimServer  # noqa: E402


def mark_as_instances(backend, workers=8):
    """Give every VM of the cluster the annotation of a Nova instance."""
    session = backend._session
    found = inventory.vms(session, backend._compute)

    def mark(item):
        ref, props = item
        note = '%s %s\nbenchmark VM' % (vmops.INSTANCE_MARKER,
                                        props['config.instanceUuid'])
        session.run_task('ReconfigVM_Task', ref.ReconfigVM_Task,
                         spec=vim.vm.ConfigSpec(annotation=note))

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(mark, found))
    return len(found)


def timed(func, runs):
    times = []
    result = None
    for _ in range(runs):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return result, times


def describe(name, times):
    return ('%-22s median %7.1f ms   min %7.1f ms   max %7.1f ms   (%d runs)'
            % (name, statistics.median(times) * 1000, min(times) * 1000,
               max(times) * 1000, len(times)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--vms', type=int, default=1000)
    parser.add_argument('--hosts', type=int, default=8)
    parser.add_argument('--runs', type=int, default=7)
    args = parser.parse_args()
    objects.register_all()
    conf = cfg.CONF
    conf([], project='nova')

    server = VcsimServer(vms=args.vms, cluster_hosts=args.hosts)
    start = time.perf_counter()
    info = server.start()
    print('vcsim with %d VMs on %d hosts ready in %.1f s'
          % (args.vms, args.hosts, time.perf_counter() - start))
    try:
        for name, value in dict(
                host=info.host, port=info.port, username=info.username,
                password=info.password, ca_file=info.ca_file,
                cluster_name=info.cluster,
                staging_dir=tempfile.mkdtemp()).items():
            conf.set_override(name, value, group='xhv_vmware')
        backend = vmware_backend.VMwareBackend(None)
        backend.init_host('bench')
        start = time.perf_counter()
        marked = mark_as_instances(backend)
        print('marked %d VMs as Nova instances in %.1f s'
              % (marked, time.perf_counter() - start))
        node = backend.get_available_nodes()[0]
        tree = provider_tree.ProviderTree()
        tree.new_root(node, '3c1a4f4e-7f3a-4d6e-9a55-1b2c3d4e5f60')

        _, tree_times = timed(
            lambda: backend.update_provider_tree(tree, node), args.runs)
        names, list_times = timed(backend.list_instances, args.runs)
        uuids, uuid_times = timed(backend.list_instance_uuids, args.runs)
        if len(names) != args.vms or len(uuids) != args.vms:
            sys.exit('expected %d instances, listed %d names and %d uuids'
                     % (args.vms, len(names), len(uuids)))
        print(describe('update_provider_tree', tree_times))
        print(describe('list_instances', list_times))
        print(describe('list_instance_uuids', uuid_times))
        backend.cleanup_host('bench')
    finally:
        server.stop()


if __name__ == '__main__':
    main()
