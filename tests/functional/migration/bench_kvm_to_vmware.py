"""Benchmark body: one KVM -> vSphere (vcsim) cold migration through Nova.

Not collected by the normal test run (no ``test_`` file prefix); run it
with ``tools/bench/migration.py --direction kvm-to-vmware``, which sets
XHV_BENCH_RESULT (a JSON file this writes) and the disk geometry.  The
destination gets the disk as streamOptimized vmdk, written by XHV's vmdk
stream writer.
"""

import json
import os
import subprocess
import time

from nova import objects
from oslo_serialization import jsonutils
from oslo_utils import uuidutils
from pyVmomi import vim

from nova_xhv.backends.vmware import nfc
from nova_xhv.backends.vmware import vm as vmops
from nova_xhv.disk import DiskDescriptor
from nova_xhv import translate
from tests.fixtures import disks
from tests.functional.migration import base
from tests.functional.migration import bench_timing
from tests.functional.migration import bench_vmware_to_kvm as other

GiB = 1024 ** 3


def curl_into_lease(backend, instance, path):
    """Seconds ``curl -T`` takes to upload ``path`` into a new NFC lease.

    vcsim's own ceiling for this stream with a C client (no Python, no
    XHV code on the sending side); the VM is removed afterwards.
    """
    session, compute = backend._session, backend._compute
    spec = vmops.config_spec(
        instance.uuid, instance, 'LocalDS_0', instance.uuid,
        [(instance.uuid + '.vmdk', 8 * GiB)], 'lsiLogic', create_disks=True)
    lease = nfc._Lease(session, session.run(
        'ceiling', compute.root_pool.ImportVApp,
        vim.vm.VmImportSpec(configSpec=spec), compute.vm_folder), 'ceiling')
    info = lease.wait_ready()
    url = nfc._device_url(session, [d for d in info.deviceUrl
                                    if d.disk][0].url)
    started = time.monotonic()
    subprocess.run(('curl', '-sS', '--fail', '--cacert', session.ca_file,
                    '-H', 'Cookie: ' + session.cookie, '-H',
                    'Content-Type: ' + nfc.STREAM_VMDK, '-T', path, '-o',
                    '/dev/null', url), check=True)
    elapsed = time.monotonic() - started
    lease.abort('benchmark')
    vmops.destroy(session, compute, info.entity, instance)
    return elapsed


def upload_file(backend, instance, path):
    """Seconds the backend takes to import ``path`` (old path's upload)."""
    started = time.monotonic()
    staged = backend.stage_disks(None, instance, [DiskDescriptor(
        format='vmdk', subformat='streamOptimized', virtual_size=8 * GiB,
        path=path, bus='lsiLogic')])
    elapsed = time.monotonic() - started
    backend.discard_staged_disks(None, instance, staged)
    return elapsed


class BenchKVMToVMware(base.CrossHypervisorTestCase):

    wait_status = other.BenchVMwareToKVM.wait_status

    def test_bench(self):
        virtual = int(float(os.environ.get('XHV_BENCH_VIRTUAL_GIB', 8)) * GiB)
        allocated = int(float(os.environ.get('XHV_BENCH_ALLOCATED_GIB', 1))
                        * GiB)
        result = {'virtual_size': virtual, 'direction': 'kvm-to-vmware'}
        raw = os.path.join(self.workdir, 'bench.raw')
        result['allocated'] = other.make_sparse_disk(raw, virtual, allocated)
        image_file = os.path.join(self.workdir, 'bench.qcow2')
        translate.convert(raw, image_file, to_format='qcow2',
                          from_format='raw')
        os.unlink(raw)
        with open(image_file, 'rb') as data:
            image = self.glance.create(self.ctxt, {
                'name': 'bench', 'disk_format': 'qcow2',
                'container_format': 'bare', 'status': 'active',
                'size': os.path.getsize(image_file)}, data=data)
        os.unlink(image_file)
        self.start_vmware()
        self.start_kvm()
        flavor = self._create_flavor(memory_mb=256, vcpu=1,
                                     disk=virtual // GiB, ephemeral=0)
        server = self._create_server(image_uuid=image['id'],
                                     flavor_id=flavor, networks='none',
                                     host=base.KVM, expected_state='BUILD')
        server = self.wait_status(server, 'ACTIVE')
        self.wait_for_console_marker(server, disks.BOOT_MARKER)
        kvm_disk = self.kvm_disk(server)
        result['kvm_disk_bytes'] = os.stat(kvm_disk).st_blocks * 512

        # The baseline: one bare qemu-img convert of the same disk to
        # qcow2, on the same machine in the same run.
        baseline = os.path.join(self.workdir, 'baseline.qcow2')
        started = time.monotonic()
        subprocess.run(('qemu-img', 'convert', '-U', '-f', 'qcow2', '-O',
                        'qcow2', kvm_disk, baseline), check=True)
        result['bare_convert_s'] = time.monotonic() - started
        os.unlink(baseline)
        # For reference: what qemu-img takes to write it for vSphere.
        started = time.monotonic()
        subprocess.run(('qemu-img', 'convert', '-U', '-f', 'qcow2', '-O',
                        'vmdk', '-o', 'subformat=streamOptimized', kvm_disk,
                        baseline), check=True)
        result['bare_convert_vmdk_s'] = time.monotonic() - started
        os.unlink(baseline)

        vmw = self.computes[base.VMW].manager.driver
        seen = bench_timing.time_finish_migration(vmw)
        started = time.monotonic()
        self.api.post_server_action(server['id'],
                                    {'migrate': {'host': base.VMW}})
        server = self.wait_status(server, 'VERIFY_RESIZE', interval=0.05)
        result['whole_move_s'] = time.monotonic() - started
        result['ratio'] = result['whole_move_s'] / result['bare_convert_s']
        result['source_stages_s'] = (seen['disk_info'] or {}).get(
            'timings', {})
        result['finish_s'] = seen['finish_s']
        vmdk = self.guest_disk_file(server)
        result['stored_vmdk_bytes'] = os.path.getsize(vmdk)
        self.assertTrue(base.same_guest_data(vmdk, 'vmdk', kvm_disk,
                                             'qcow2'))
        # In the same run, the upload alone: vcsim's ceiling with curl, and
        # the backend's own upload of the same finished file.
        copy = os.path.join(self.workdir, 'ceiling.vmdk')
        subprocess.run(('cp', vmdk, copy), check=True)
        stub = objects.Instance(
            uuid=uuidutils.generate_uuid(), display_name='ceiling',
            flavor=objects.Flavor(vcpus=1, memory_mb=128, root_gb=8,
                                  ephemeral_gb=0, swap=0))
        result['vcsim_curl_upload_s'] = curl_into_lease(vmw.backend, stub,
                                                        copy)
        stub.uuid = uuidutils.generate_uuid()
        result['file_upload_s'] = upload_file(vmw.backend, stub, copy)
        os.unlink(copy)
        self._confirm_resize(server)
        self._delete_server(server)
        print(jsonutils.dumps(result, indent=2))
        out = os.environ.get('XHV_BENCH_RESULT')
        if out:
            with open(out, 'w') as f:
                json.dump(result, f, indent=2)
