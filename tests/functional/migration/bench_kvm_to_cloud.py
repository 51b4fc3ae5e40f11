"""Benchmark body: one KVM -> cloud cold migration through Nova.

Not collected by the normal test run (no ``test_`` file prefix); run it
with ``tools/bench/migration.py --direction kvm-to-cloud`` (under
``flock /tmp/xhv-kvm.lock``: it boots a libvirt domain), which sets
XHV_BENCH_RESULT (a JSON file this writes) and the disk geometry.

The destination is the second, real cloud of tests/fixtures/remote_cloud.py
(its Glance under uWSGI on this machine).  The baseline, measured in the
same run on the same disk: one bare ``qemu-img convert`` of the KVM disk to
qcow2 plus one bare upload of that qcow2 file into the remote Glance
(openstacksdk ``create_image``, as the federation project, waiting until
active) -- what a person moving the disk by hand would run.
"""

import json
import os
import subprocess
import time

import openstack.config
import openstack.connection
from oslo_serialization import jsonutils

from nova_xhv import translate

from tests.fixtures import disks
from tests.fixtures import remote_cloud
from tests.functional.migration import base
from tests.functional.migration import bench_timing
from tests.functional.migration import bench_vmware_to_kvm as other
from tests.functional.migration import test_cloud_moves as cloud_moves

GiB = 1024 ** 3


def setUpModule():
    cloud = remote_cloud.RemoteCloud()
    cloud_moves._REMOTE.append(cloud)
    cloud.start()


def tearDownModule():
    cloud_moves.tearDownModule()


def bare_upload(path):
    """Seconds one upload of ``path`` into the remote Glance takes."""
    cloud = cloud_moves._REMOTE[0]
    config = openstack.config.OpenStackConfig(
        config_files=[cloud.clouds_yaml], load_envvars=False)
    conn = openstack.connection.Connection(
        config=config.get_one(cloud=remote_cloud.ENTRY))
    try:
        started = time.monotonic()
        image = conn.image.create_image(
            'xhv-bench-baseline', filename=path, disk_format='qcow2',
            container_format='bare', visibility='private', wait=True,
            timeout=1800, allow_duplicates=True)
        elapsed = time.monotonic() - started
        conn.image.delete_image(image, ignore_missing=True)
    finally:
        conn.close()
    return elapsed


class BenchKVMToCloud(cloud_moves.CloudMoveCase):

    wait_status = other.BenchVMwareToKVM.wait_status

    def test_bench(self):
        virtual = int(float(os.environ.get('XHV_BENCH_VIRTUAL_GIB', 8)) * GiB)
        allocated = int(float(os.environ.get('XHV_BENCH_ALLOCATED_GIB', 1))
                        * GiB)
        image_format = os.environ.get('XHV_BENCH_CLOUD_IMAGE_FORMAT',
                                      'qcow2')
        result = {'virtual_size': virtual, 'direction': 'kvm-to-cloud',
                  'cloud_image_format': image_format}
        raw = os.path.join(self.workdir, 'bench.raw')
        result['allocated'] = other.make_sparse_disk(raw, virtual, allocated)
        image_file = os.path.join(self.workdir, 'bench.qcow2')
        translate.convert(raw, image_file, to_format='qcow2',
                          from_format='raw')
        os.unlink(raw)
        with open(image_file, 'rb') as data:
            image_id = self.glance.create(self.ctxt, {
                'name': 'bench', 'disk_format': 'qcow2',
                'container_format': 'bare', 'status': 'active',
                'size': os.path.getsize(image_file)}, data=data)['id']
        os.unlink(image_file)
        self.start_kvm()
        cloud_moves._start_cloud(self, image_format=image_format)
        flavor = self._create_flavor(memory_mb=256, vcpu=1,
                                     disk=virtual // GiB, ephemeral=0)
        server = self._create_server(image_uuid=image_id, flavor_id=flavor,
                                     networks='none', host=base.KVM,
                                     expected_state='BUILD')
        server = self.wait_status(server, 'ACTIVE')
        self.wait_for_console_marker(server, disks.BOOT_MARKER)
        kvm_disk = self.kvm_disk(server)
        result['kvm_disk_bytes'] = os.stat(kvm_disk).st_blocks * 512

        # The baseline, same disk, same run: a bare convert to qcow2 and a
        # bare upload of its result into the remote Glance.
        baseline = os.path.join(self.workdir, 'baseline.qcow2')
        started = time.monotonic()
        subprocess.run(('qemu-img', 'convert', '-U', '-f', 'qcow2', '-O',
                        'qcow2', kvm_disk, baseline), check=True)
        result['bare_convert_s'] = time.monotonic() - started
        result['uploaded_bytes'] = os.path.getsize(baseline)
        result['bare_upload_s'] = bare_upload(baseline)
        os.unlink(baseline)
        result['baseline_s'] = (result['bare_convert_s']
                                + result['bare_upload_s'])

        cloud = self.computes[cloud_moves.CLOUD].manager.driver
        seen = bench_timing.time_finish_migration(cloud)
        started = time.monotonic()
        self.api.post_server_action(
            server['id'], {'migrate': {'host': cloud_moves.CLOUD}})
        server = self.wait_status(server, 'VERIFY_RESIZE', interval=0.05)
        result['whole_move_s'] = time.monotonic() - started
        result['ratio'] = result['whole_move_s'] / result['baseline_s']
        result['finish_s'] = seen['finish_s']
        result['source_stages_s'] = (seen['disk_info'] or {}).get(
            'timings', {})
        copy, fmt = cloud_moves._cloud_disk(self, server)
        self.assertTrue(base.same_guest_data(copy, fmt, kvm_disk, 'qcow2'))
        self._confirm_resize(server)
        self._delete_server(server)
        self.assertEqual([], self._remote_leftovers())
        print(jsonutils.dumps(result, indent=2))
        out = os.environ.get('XHV_BENCH_RESULT')
        if out:
            with open(out, 'w') as f:
                json.dump(result, f, indent=2)
