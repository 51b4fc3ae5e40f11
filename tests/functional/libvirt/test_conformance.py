"""The KVM backend on its test bed: real libvirtd, in Nova's harness.

Runs every test of tests/functional/backends/conformance.py; guests boot
the tiny bootable disk (KVM or TCG).  Instances are records made like the
template server booted in setUp (flavor with a 1 GiB ephemeral disk, so
a second disk has a place on KVM).
"""

import copy
import inspect
import os
import pathlib
import shutil
import tempfile

from nova import context as nova_context
from nova import objects
import pytest

from tests.fixtures import disks
from tests.functional.backends import conformance
from tests.functional.libvirt import test_disk_exchange
from tests.functional.libvirt import test_lifecycle
from tests.functional import nova_base

GiB = 1024 ** 3


class KVMBed(conformance.TestBed):

    def __init__(self, case, template):
        self.case = case
        self.template = template
        self.backend = case.computes['host1'].manager.driver.backend
        self.context = case.cell_ctxt

    def new_instance(self):
        return test_disk_exchange.TestDiskExchange._new_instance_like(
            self.case, self.template)

    def extra_disk(self, folder, name):
        # KVM keeps a non-boot disk only in a slot of the flavor (its
        # 1 GiB ephemeral disk).
        raw = os.path.join(folder, name + '.raw')
        with open(raw, 'wb') as f:
            f.truncate(GiB)
        target = os.path.join(folder, name + '.qcow2')
        conformance.translate.convert(raw, target, to_format='qcow2',
                                      from_format='raw')
        os.unlink(raw)
        return conformance.xhv_disk.DiskDescriptor(
            format='qcow2', virtual_size=GiB, path=target, bus='sata',
            boot_index=None)

    def image_meta(self, instance):
        return objects.ImageMeta.from_instance(instance)

    def leftovers(self, instance):
        found = []
        folder = self.case.instance_dir(instance.uuid)
        if os.path.isdir(folder):
            found += sorted(os.listdir(folder))
        if self.case.hypervisor_guest_exists({'id': instance.uuid}):
            found.append('domain')
        return found


class TestKVMConformance(nova_base.LibvirtFunctionalTestCase):

    def setUp(self):
        super().setUp()
        self.cell_ctxt = copy.copy(self.ctxt)
        nova_context.set_target_cell(self.cell_ctxt,
                                     self.cell_mappings['cell1'])
        # mkfs.vfat (Nova's default for an ephemeral disk) is not on
        # every test machine; ext4 is (as in test_local_disks).
        self.flags(default_ephemeral_format='ext4')
        self.start_compute('host1')
        image_id = test_lifecycle.upload_bootable_image(self, 'qcow2')
        flavor = self._create_flavor(memory_mb=256, vcpu=1, disk=1,
                                     ephemeral=1)
        server = self._create_server(image_uuid=image_id, flavor_id=flavor,
                                     networks='none')
        self.wait_for_console_marker(server, disks.BOOT_MARKER)
        template = objects.Instance.get_by_uuid(
            self.cell_ctxt, server['id'],
            expected_attrs=['flavor', 'system_metadata'])
        self.bed = KVMBed(self, template)
        self.tmp_path = pathlib.Path(tempfile.mkdtemp(
            prefix='xhv-conformance-'))
        self.addCleanup(shutil.rmtree, str(self.tmp_path), True)


def _add_conformance_tests():
    for name in dir(conformance.BackendConformance):
        if not name.startswith('test_'):
            continue

        def test(self, _name=name):
            check = getattr(conformance.BackendConformance(), _name)
            given = {'bed': self.bed, 'tmp_path': self.tmp_path}
            try:
                check(**{arg: given[arg] for arg in
                         inspect.signature(check).parameters})
            except pytest.skip.Exception as skipped:
                # pytest.skip inside this unittest-style case.
                self.skipTest(str(skipped))

        test.__name__ = name
        setattr(TestKVMConformance, name, test)


_add_conformance_tests()
