"""The KVM backend's disk exchange on real files (qemu-img, no libvirtd).

tests/functional/libvirt runs the same code against real libvirtd/KVM.
"""

import json
import os
import stat
import subprocess
from unittest import mock

import fixtures
from nova.compute import power_state
from nova import objects
from oslo_config import fixture as config_fixture
import testtools

from nova_xhv.backends.libvirt import backend as libvirt_backend
import nova_xhv.conf
from nova_xhv import disk as xhv_disk
from tests.fixtures import disks

GiB = 1024 ** 3
UUID = '6d3a7f0e-5b1c-4c55-9d3e-0a1b2c3d4e5f'


def qemu_img(*args):
    return subprocess.run(('qemu-img',) + args, check=True,
                          capture_output=True, text=True).stdout


class LibvirtBackendTestCase(testtools.TestCase):

    def setUp(self):
        super().setUp()
        objects.register_all()
        self.conf = self.useFixture(config_fixture.Config(nova_xhv.conf.CONF))
        self.work = self.useFixture(fixtures.TempDir()).path
        self.instances_path = os.path.join(self.work, 'instances')
        os.mkdir(self.instances_path)
        self.conf.config(instances_path=self.instances_path)
        self.backend = libvirt_backend.LibvirtBackend(mock.Mock())
        self.instance = mock.Mock(uuid=UUID, kernel_id='', ramdisk_id='')
        self.instance.flavor.root_gb = 1
        self.instance_dir = os.path.join(self.instances_path, UUID)

    def qcow2(self, name='boot.qcow2', bootable=True):
        raw = os.path.join(self.work, name + '.raw')
        if bootable:
            disks.make_bootable_disk(raw)
        else:
            disks.make_raw_disk(raw, 4 * disks.MiB)
        path = os.path.join(self.work, name)
        qemu_img('convert', '-f', 'raw', '-O', 'qcow2', raw, path)
        return path

    def descriptor(self, path, fmt='qcow2', boot_index=0, handle=None):
        info = json.loads(qemu_img('info', '--output=json', '-f', fmt, path))
        return xhv_disk.DiskDescriptor(
            format=fmt, virtual_size=info['virtual-size'], path=path,
            boot_index=boot_index, handle=handle, bus='virtio')

    def assert_refused(self, disks_in, *fragments):
        error = self.assertRaises(libvirt_backend.DiskExchangeError,
                                  self.backend.stage_disks, None,
                                  self.instance, disks_in)
        for fragment in fragments:
            self.assertIn(fragment, str(error))
        self.assertFalse(os.path.exists(self.instance_dir))
        return error


class TestStage(LibvirtBackendTestCase):

    def test_places_disks_where_the_stock_driver_expects_them(self):
        boot = self.qcow2()
        local = self.qcow2('local.qcow2', bootable=False)
        boot_sum = disks.sha256_file(boot)
        staged = self.backend.stage_disks(None, self.instance, [
            self.descriptor(boot),
            self.descriptor(local, boot_index=None, handle='disk.local')])

        root = os.path.join(self.instance_dir, 'disk')
        local_target = os.path.join(self.instance_dir, 'disk.local')
        self.assertEqual([root, local_target], [d.path for d in staged])
        self.assertEqual(['disk', 'disk.local'], [d.handle for d in staged])
        self.assertFalse(os.path.exists(boot))  # moved, not copied
        self.assertEqual(0o755, stat.S_IMODE(
            os.stat(self.instance_dir).st_mode))
        for path in (root, local_target):
            self.assertEqual(0o644, stat.S_IMODE(os.stat(path).st_mode))
        with open(os.path.join(self.instance_dir, 'disk.info')) as info:
            self.assertEqual({root: 'qcow2', local_target: 'qcow2'},
                             json.load(info))
        # The root grows to the flavor's root_gb, as the stock spawn does.
        info = json.loads(qemu_img('info', '--output=json', '-f', 'qcow2',
                                   root))
        self.assertEqual(GiB, info['virtual-size'])
        self.assertEqual(GiB, staged[0].virtual_size)
        self.assertNotIn('backing-filename', info)
        self.assertNotEqual(boot_sum, disks.sha256_file(root))
        converted = os.path.join(self.work, 'check.raw')
        qemu_img('convert', '-f', 'qcow2', '-O', 'raw', root, converted)
        with open(converted, 'rb') as f:
            self.assertEqual(disks.boot_sector(), f.read(512))

        self.backend.discard_staged_disks(None, self.instance, staged)
        self.assertFalse(os.path.exists(self.instance_dir))
        # Idempotent.
        self.backend.discard_staged_disks(None, self.instance, staged)

    def test_disks_from_another_family_take_the_flavor_names_by_size(self):
        # vSphere keeps no disk.eph0/disk.swap names: a non-boot disk from
        # there takes the name of the mapped disk of its size, in order.
        self.useFixture(fixtures.MockPatch(
            'nova_xhv.backends.libvirt.backend.expected_local_disks',
            return_value=[('disk.eph0', 4 * disks.MiB),
                          ('disk.eph1', 8 * disks.MiB),
                          ('disk.swap', 4 * disks.MiB)]))
        first = self.descriptor(self.qcow2('a', bootable=False),
                                boot_index=None, handle='[ds1] vm/vm_1.vmdk')
        second = self.descriptor(self.qcow2('b', bootable=False),
                                 boot_index=None)
        boot = self.descriptor(self.qcow2())
        self.backend.check_stageable(None, self.instance,
                                     [boot, first, second])
        staged = self.backend.stage_disks(None, self.instance,
                                          [boot, first, second])
        self.assertEqual(['disk', 'disk.eph0', 'disk.swap'],
                         [d.handle for d in staged])
        self.backend.discard_staged_disks(None, self.instance, staged)
        self.assertFalse(os.path.exists(self.instance_dir))

    def test_a_disk_of_no_mapped_size_is_refused_before_staging(self):
        self.useFixture(fixtures.MockPatch(
            'nova_xhv.backends.libvirt.backend.expected_local_disks',
            return_value=[('disk.eph0', GiB), ('disk.swap', 64 * disks.MiB)]))
        odd = self.descriptor(self.qcow2('odd', bootable=False),
                              boot_index=None)
        boot = self.descriptor(self.qcow2())
        error = self.assertRaises(
            libvirt_backend.DiskExchangeError,
            self.backend.check_stageable, None, self.instance, [boot, odd])
        self.assertIn('4194304 bytes', str(error))
        self.assertIn('disk.eph0 1073741824 bytes, disk.swap 67108864 bytes',
                      str(error))
        self.assert_refused([boot, odd], 'matches none')
        self.assertTrue(os.path.exists(boot.path))  # nothing was moved

    def test_refuses_a_qcow2_with_a_backing_file(self):
        base = self.qcow2()
        overlay = os.path.join(self.work, 'overlay.qcow2')
        qemu_img('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2',
                 overlay)
        self.assert_refused([self.descriptor(overlay)],
                            'not a self-contained qcow2')
        self.assertTrue(os.path.exists(overlay))

    def test_refuses_other_formats(self):
        raw = os.path.join(self.work, 'boot.raw')
        disks.make_bootable_disk(raw)
        self.assert_refused([self.descriptor(raw, fmt='raw')], 'is raw',
                            'translate it first')

    def test_refuses_content_that_is_not_what_it_claims(self):
        raw = os.path.join(self.work, 'boot.raw')
        disks.make_bootable_disk(raw)
        claim = self.descriptor(raw, fmt='raw')
        claim.format = 'qcow2'
        self.assert_refused([claim], 'claims qcow2 but its content is')

    def test_refuses_remote_disks(self):
        remote = xhv_disk.DiskDescriptor(format='qcow2', virtual_size=GiB,
                                         url='https://example.test/d.qcow2')
        self.assert_refused([remote], 'must be a local file')

    def test_refuses_disks_without_a_place(self):
        self.useFixture(fixtures.MockPatch(
            'nova_xhv.backends.libvirt.backend.expected_local_disks',
            return_value=[]))
        self.assert_refused([self.descriptor(self.qcow2(), boot_index=None)],
                            'matches none of the ephemeral and swap disks',
                            '(none)')
        self.assert_refused(
            [self.descriptor(self.qcow2('a'), boot_index=None,
                             handle='disk.local')], 'exactly one boot disk')

    def test_refuses_to_overwrite(self):
        os.makedirs(self.instance_dir)
        existing = os.path.join(self.instance_dir, 'disk')
        with open(existing, 'wb') as f:
            f.write(b'tenant data')
        error = self.assertRaises(
            libvirt_backend.DiskExchangeError, self.backend.stage_disks,
            None, self.instance, [self.descriptor(self.qcow2())])
        self.assertIn('already exists', str(error))
        with open(existing, 'rb') as f:
            self.assertEqual(b'tenant data', f.read())

    def test_needs_file_based_instance_disks(self):
        self.conf.config(images_type='lvm', group='libvirt')
        self.assert_refused([self.descriptor(self.qcow2())],
                            '[libvirt] images_type = lvm')


class TestExport(LibvirtBackendTestCase):

    def test_refuses_a_running_guest(self):
        self.useFixture(fixtures.MockPatchObject(
            self.backend.stock_driver, 'get_info',
            return_value=mock.Mock(state=power_state.RUNNING)))
        error = self.assertRaises(libvirt_backend.DiskExchangeError,
                                  self.backend.export_disks, None,
                                  self.instance)
        self.assertIn('not powered off', str(error))
        self.assertIn('stop it first', str(error))

    def test_release_removes_only_export_copies(self):
        export_dir = os.path.join(self.instance_dir,
                                  libvirt_backend.EXPORT_DIR)
        os.makedirs(export_dir)
        copy = os.path.join(export_dir, 'disk.qcow2')
        live = os.path.join(self.instance_dir, 'disk')
        for path in (copy, live):
            with open(path, 'wb') as f:
                f.write(b'x')
        self.backend.release_exported_disks(None, self.instance, [
            xhv_disk.DiskDescriptor(format='qcow2', virtual_size=1,
                                    path=copy),
            xhv_disk.DiskDescriptor(format='qcow2', virtual_size=1,
                                    path=live)])
        self.assertFalse(os.path.exists(export_dir))
        self.assertTrue(os.path.exists(live))


class TestSpawnFromDisks(LibvirtBackendTestCase):

    def test_stock_spawn_runs_with_disk_creation_switched_off(self):
        staged = self.backend.stage_disks(None, self.instance,
                                          [self.descriptor(self.qcow2())])
        stock = self.backend.stock_driver
        seen = {}

        def spawn(context, instance, image_meta, **kwargs):
            seen['kwargs'] = kwargs
            seen['image_meta'] = image_meta
            # What the stock spawn's disk step does for this instance.
            seen['created'] = stock._create_image(
                context, instance, {'disk': {}, 'root': {}})

        image_meta = objects.ImageMeta.from_dict(
            {'disk_format': 'qcow2', 'properties': {}})
        with mock.patch.object(stock, 'spawn', side_effect=spawn), \
                mock.patch('nova.virt.libvirt.driver.LibvirtDriver.'
                           '_create_image') as stock_create_image:
            self.backend.spawn_from_disks(
                None, self.instance, staged, [], image_meta,
                hardware={'disk_bus': 'sata', 'nic_model': 'e1000'})
        stock_create_image.assert_not_called()
        self.assertEqual((False, False), seen['created'])
        self.assertEqual([], seen['kwargs']['injected_files'])
        self.assertTrue(seen['kwargs']['power_on'])
        self.assertEqual('sata', seen['image_meta'].properties.hw_disk_bus)
        self.assertEqual('e1000', seen['image_meta'].properties.hw_vif_model)
        self.assertNotIn('hw_disk_bus', image_meta.properties)
        # Outside the import the stock behaviour is back.
        with mock.patch('nova.virt.libvirt.driver.LibvirtDriver.'
                        '_create_image', return_value=(True, True)) as real:
            self.assertEqual((True, True), stock._create_image(
                None, self.instance, {'disk': {}}))
        real.assert_called_once()

    def test_local_disks_the_import_lacks_are_created_blank(self):
        # A server born on vSphere has no disk.eph0/disk.swap: the stock
        # step creates them as at boot, never the root.
        staged = self.backend.stage_disks(None, self.instance,
                                          [self.descriptor(self.qcow2())])
        root_sum = disks.sha256_file(staged[0].path)
        stock = self.backend.stock_driver
        stock.mark_staged(UUID, True)
        self.addCleanup(stock.mark_staged, UUID, False)
        mapping = {'disk': {}, 'disk.eph0': {}, 'disk.swap': {},
                   'disk.config': {}}
        made = []

        def stock_create_image(context, instance, disk_mapping, **kwargs):
            # The root step is switched off inside the stock method.
            self.assertFalse(stock._create_and_inject_local_root(
                context, instance, disk_mapping, False, '', None, None,
                None))
            for name in ('disk.eph0', 'disk.swap'):
                path = os.path.join(self.instance_dir, name)
                with open(path, 'wb') as f:
                    f.write(b'blank')
                made.append(path)
            return True, True

        with mock.patch('nova.virt.libvirt.driver.LibvirtDriver.'
                        '_create_image',
                        side_effect=stock_create_image) as real:
            self.assertEqual((False, False), stock._create_image(
                None, self.instance, mapping, block_device_info={}))
        real.assert_called_once()
        self.assertEqual({}, real.call_args.kwargs['block_device_info'])
        self.assertEqual(root_sum, disks.sha256_file(staged[0].path))
        # Nothing missing: the stock step does not run at all.
        with mock.patch('nova.virt.libvirt.driver.LibvirtDriver.'
                        '_create_image') as real:
            self.assertEqual((False, False), stock._create_image(
                None, self.instance, mapping))
        real.assert_not_called()
        # Discard removes what the import made, including those.
        self.backend.discard_staged_disks(None, self.instance, staged)
        for path in made:
            self.assertFalse(os.path.exists(path))
        self.assertFalse(os.path.exists(self.instance_dir))

    def test_the_root_disk_must_have_been_imported(self):
        os.makedirs(self.instance_dir)
        stock = self.backend.stock_driver
        stock.mark_staged(UUID, True)
        self.addCleanup(stock.mark_staged, UUID, False)
        with mock.patch('nova.virt.libvirt.driver.LibvirtDriver.'
                        '_create_image') as real:
            error = self.assertRaises(
                libvirt_backend.DiskExchangeError, stock._create_image,
                None, self.instance, {'disk': {}, 'disk.swap': {}})
        real.assert_not_called()
        self.assertIn('root disk was not imported', str(error))

    def test_missing_staged_disk(self):
        gone = xhv_disk.DiskDescriptor(format='qcow2', virtual_size=GiB,
                                       path=os.path.join(self.work, 'gone'))
        error = self.assertRaises(
            libvirt_backend.DiskExchangeError,
            self.backend.spawn_from_disks, None, self.instance, [gone], [],
            None)
        self.assertIn('missing', str(error))


class TestExpectedLocalDisks(testtools.TestCase):

    def setUp(self):
        super().setUp()
        objects.register_all()

    def expected(self, bdms, ephemeral_gb=0, swap=0):
        instance = mock.Mock(uuid=UUID)
        instance.flavor.ephemeral_gb = ephemeral_gb
        instance.flavor.swap = swap
        with mock.patch.object(objects.BlockDeviceMappingList,
                               'get_by_instance_uuid',
                               return_value=bdms) as query:
            found = libvirt_backend.expected_local_disks('ctx', instance)
        query.assert_called_once_with('ctx', UUID)
        return found

    @staticmethod
    def bdm(source, destination, size=None, guest_format=None):
        return objects.BlockDeviceMapping(
            source_type=source, destination_type=destination,
            volume_size=size, guest_format=guest_format)

    def test_from_the_mappings_nova_made_at_boot(self):
        bdms = [self.bdm('image', 'local'),
                self.bdm('blank', 'local', 1),
                self.bdm('blank', 'local', 2),
                self.bdm('blank', 'local', 64, 'swap'),
                self.bdm('volume', 'volume', 10)]
        self.assertEqual(
            [('disk.eph0', GiB), ('disk.eph1', 2 * GiB),
             ('disk.swap', 64 * 1024 ** 2)],
            self.expected(bdms, ephemeral_gb=1, swap=32))

    def test_from_the_flavor_without_mappings(self):
        self.assertEqual([('disk.local', 3 * GiB),
                          ('disk.swap', 512 * 1024 ** 2)],
                         self.expected([], ephemeral_gb=3, swap=512))
        self.assertEqual([], self.expected([self.bdm('image', 'local')]))
