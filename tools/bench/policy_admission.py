#!/usr/bin/env python3
"""nova-api admission: what reading the cloud's host classes costs.

    python tools/bench/policy_admission.py [--hosts 1000] [--classes 10]
                                           [--repeat 20]

In Nova's own test database (SQLite, nova.test.TestCase: an API database,
cell0 and cell1), ``--hosts`` compute node records with XHV's stats in
``--classes`` classes, half of them in aggregates with metadata.  Measured
in the same run, median ms:

* ``host_classes``: one read of every class (every cell's compute nodes,
  every aggregate) -- what a request costs when the cached list is stale
  or about to refuse -- against the read as ComputeNode objects (what it
  did before, the baseline for its ratio);
* an allowed request through the filter (cached classes), the baseline
  for the ratio;
* a refused request (the classes read again before the 403, as when
  refusals come a second or more apart).
"""

import argparse
import os
import statistics
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

ARGS = None
POLICY = '''rules:
  - id: pci-admin-only
    template: scoped_moves
    match: {tags: [pci]}
    parameters:
      allow: [{from: kvm, to: vmware, roles: [admin]}]
'''


def median_ms(function, repeat):
    function()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def classes_from_objects(context):
    """The read before: every compute node as a ComputeNode object."""
    from nova import context as nova_context
    from nova import objects

    from nova_xhv.policy import inputs
    from nova_xhv.policy import nova_input

    by_host = {}
    for aggregate in objects.AggregateList.get_all(context):
        for host in aggregate.hosts or ():
            by_host.setdefault(host, []).append(aggregate)
    found = {}
    for cell in objects.CellMappingList.get_all(context):
        if cell.is_cell0():
            continue
        with nova_context.target_cell(context, cell) as cctxt:
            nodes = objects.ComputeNodeList.get_all(cctxt)
        for node in nodes:
            aggregates, zone = nova_input.aggregates_view(
                by_host.get(node.host, ()))
            view = inputs.host_from_stats(None, node.stats or {},
                                          node.hypervisor_type, aggregates,
                                          zone)
            found.setdefault(inputs.host_class(view), view)
    return list(found.values())


def make_bench_case():
    from nova import context as nova_context
    from nova import objects
    from nova import test
    from oslo_utils.fixture import uuidsentinel as uuids

    from nova_xhv.api import admission
    import nova_xhv.conf  # noqa: F401
    from nova_xhv.policy import inputs

    class AdmissionBench(test.TestCase):

        def setUp(self):
            super().setUp()
            self.ctxt = nova_context.get_admin_context()
            folder = self.useFixture(
                __import__('fixtures').TempDir()).path
            with open(os.path.join(folder, 'policy.yaml'), 'w') as f:
                f.write(POLICY)
            self.flags(policy_file=os.path.join(folder, 'policy.yaml'),
                       policy_dir=os.path.join(folder, 'policy.d'),
                       group='xhv_policy')

        def make_cloud(self, count, classes):
            families = ('kvm', 'vmware')
            per_family = max(1, classes // len(families))
            aggregates = [objects.Aggregate(
                self.ctxt, name='agg-%d' % n,
                metadata={'availability_zone': 'az-%d' % n,
                          'tier': 'gold'}) for n in range(per_family)]
            for aggregate in aggregates:
                aggregate.create()
            cell = self.cell_mappings['cell1']
            with nova_context.target_cell(self.ctxt, cell) as cctxt:
                for n in range(count):
                    family = families[n % 2]
                    host = 'host-%05d' % n
                    objects.ComputeNode(
                        cctxt, host=host, hypervisor_hostname=host,
                        uuid=getattr(uuids, host), vcpus=8, memory_mb=8192,
                        local_gb=100, vcpus_used=0, memory_mb_used=0,
                        local_gb_used=0, hypervisor_type=(
                            'QEMU' if family == 'kvm' else 'VMware'),
                        hypervisor_version=1, cpu_info='{}',
                        stats={'xhv_family': family,
                               'xhv_accepts': 'kvm,vmware',
                               'xhv_capabilities': 'exchange,uefi',
                               'xhv_policy_digest': 'bench',
                               'num_instances': str(n % 7)}).create()
                    objects.HostMapping(self.ctxt, host=host,
                                        cell_mapping=cell).create()
                    aggregate = aggregates[(n // 2) % per_family]
                    aggregate.add_host(host)

        def test_bench(self):
            self.make_cloud(ARGS.hosts, ARGS.classes)
            found = admission.host_classes(self.ctxt)
            gate = admission.PolicyAdmission(None)
            context = nova_context.RequestContext(
                'u', 'p', roles=['member'], request_id='req-bench')

            def request(tags):
                return gate._decide_anywhere(
                    context, 'move', inputs.server('uuid-1', 'p', tags),
                    inputs.host('src', 'kvm'), None)

            assert request([]) is None
            assert request(['pci']) is not None
            read_ms = median_ms(lambda: admission.host_classes(self.ctxt),
                                ARGS.repeat)
            objects_ms = median_ms(lambda: classes_from_objects(self.ctxt),
                                   ARGS.repeat)
            assert sorted(map(inputs.host_class, found)) == sorted(
                map(inputs.host_class, classes_from_objects(self.ctxt)))
            allowed_ms = median_ms(lambda: request([]), ARGS.repeat * 10)
            # The worst case: every refusal reads again (they are a second
            # apart or more).
            self.useFixture(__import__('fixtures').MonkeyPatch(
                'nova_xhv.api.admission.REFUSAL_FRESHNESS', 0.0))
            before = gate.classes_read
            refused_ms = median_ms(lambda: request(['pci']), ARGS.repeat)
            assert gate.classes_read - before == ARGS.repeat + 1
            print('%d compute nodes in %d classes (SQLite):' % (
                ARGS.hosts, len(found)))
            print('  read the host classes    %8.2f ms; as objects (before) '
                  '%.2f ms, ratio %.3f' % (read_ms, objects_ms,
                                           read_ms / objects_ms))
            print('  allowed request (cached) %8.3f ms (baseline)'
                  % allowed_ms)
            print('  refused request (re-read) %7.2f ms, ratio %.1f'
                  % (refused_ms, refused_ms / allowed_ms))

    return AdmissionBench


def main():
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--hosts', type=int, default=1000)
    parser.add_argument('--classes', type=int, default=10)
    parser.add_argument('--repeat', type=int, default=20)
    ARGS = parser.parse_args()
    suite = unittest.TestSuite([make_bench_case()('test_bench')])
    result = unittest.TextTestRunner(verbosity=0).run(suite)
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == '__main__':
    main()
