"""Benchmark body: one vSphere (vcsim) -> KVM cold migration through Nova.

Not collected by the normal test run (no ``test_`` file prefix); run it
with tools/bench/migration.py, which sets XHV_BENCH_RESULT (a JSON file
this writes) and the disk geometry.
"""

import json
import os
import subprocess
import time

from oslo_serialization import jsonutils

from nova_xhv import translate
from tests.fixtures import disks
from tests.functional.migration import base
from tests.functional.migration import bench_timing
from tests.functional import nova_base

GiB = 1024 ** 3
MiB = 1024 ** 2


def make_sparse_disk(path, virtual_size, allocated, extent=16 * MiB):
    """A raw disk with ``allocated`` bytes of random data spread evenly."""
    count = max(1, allocated // extent)
    step = virtual_size // count
    with open(path, 'wb') as f:
        f.truncate(virtual_size)
        f.seek(0)
        f.write(disks.boot_sector())
        for n in range(count):
            f.seek(max(n * step, MiB))
            f.write(os.urandom(extent))
    return count * extent


class BenchVMwareToKVM(base.CrossHypervisorTestCase):

    def wait_status(self, server, status, timeout=1800, interval=0.5):
        # The harness's own waits give up after a few seconds.
        def reached():
            found = self.api.get_server(server['id'])
            if found['status'] == 'ERROR':
                raise AssertionError('server in ERROR: %s'
                                     % found.get('fault'))
            return found if found['status'] == status else None
        return nova_base.wait_for(reached, timeout, interval,
                                  what='status %s' % status)

    def test_bench(self):
        virtual = int(float(os.environ.get('XHV_BENCH_VIRTUAL_GIB', 8)) * GiB)
        allocated = int(float(os.environ.get('XHV_BENCH_ALLOCATED_GIB', 1))
                        * GiB)
        result = {'virtual_size': virtual}
        raw = os.path.join(self.workdir, 'bench.raw')
        result['allocated'] = make_sparse_disk(raw, virtual, allocated)
        vmdk = os.path.join(self.workdir, 'bench.vmdk')
        started = time.monotonic()
        translate.convert(raw, vmdk, to_format='vmdk', from_format='raw',
                          subformat='streamOptimized')
        result['prepare_image_s'] = time.monotonic() - started
        os.unlink(raw)
        with open(vmdk, 'rb') as data:
            image = self.glance.create(self.ctxt, {
                'name': 'bench', 'disk_format': 'vmdk',
                'container_format': 'bare', 'status': 'active',
                'size': os.path.getsize(vmdk),
                'properties': {'vmware_disktype': 'streamOptimized'}},
                data=data)
        self.start_vmware()
        self.start_kvm()
        flavor = self._create_flavor(memory_mb=256, vcpu=1,
                                     disk=virtual // GiB, ephemeral=0)
        server = self._create_server(image_uuid=image['id'],
                                     flavor_id=flavor, networks='none',
                                     host=base.VMW, expected_state='BUILD')
        server = self.wait_status(server, 'ACTIVE')
        stored = self.guest_disk_file(server)
        result['stored_vmdk_bytes'] = os.path.getsize(stored)

        # The baseline: one bare qemu-img convert of the disk as vSphere
        # stores it, to KVM's format, on the same machine in the same run.
        baseline = os.path.join(self.workdir, 'baseline.qcow2')
        started = time.monotonic()
        subprocess.run(('qemu-img', 'convert', '-f', 'vmdk', '-O', 'qcow2',
                        stored, baseline), check=True)
        result['bare_convert_s'] = time.monotonic() - started
        os.unlink(baseline)
        # For reference: qemu-img at its best here, writing with O_DIRECT
        # as XHV's conversions do (the goal is against the plain one).
        started = time.monotonic()
        subprocess.run(('qemu-img', 'convert', '-t', 'none', '-f', 'vmdk',
                        '-O', 'qcow2', stored, baseline), check=True)
        result['bare_convert_direct_s'] = time.monotonic() - started
        os.unlink(baseline)

        kvm = self.computes[base.KVM].manager.driver
        seen = bench_timing.time_finish_migration(kvm)
        started = time.monotonic()
        self.api.post_server_action(server['id'],
                                    {'migrate': {'host': base.KVM}})
        server = self.wait_status(server, 'VERIFY_RESIZE', interval=0.05)
        result['whole_move_s'] = time.monotonic() - started
        self.wait_for_console_marker(server, disks.BOOT_MARKER)
        result['source_stages_s'] = seen['disk_info']['timings']
        result['finish_s'] = seen['finish_s']
        result['ratio'] = result['whole_move_s'] / result['bare_convert_s']
        self.assertTrue(base.same_guest_data(self.kvm_disk(server), 'qcow2',
                                             stored, 'vmdk'))
        self._confirm_resize(server)
        self._delete_server(server)
        print(jsonutils.dumps(result, indent=2))
        out = os.environ.get('XHV_BENCH_RESULT')
        if out:
            with open(out, 'w') as f:
                json.dump(result, f, indent=2)
