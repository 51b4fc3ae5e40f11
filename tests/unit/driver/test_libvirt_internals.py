"""The stock LibvirtDriver internals the KVM backend relies on.

nova_xhv/backends/libvirt/backend.py reaches into Nova's libvirt driver in a
few places.  If a Nova release changes any of them, these tests fail loudly,
naming what moved, before an import silently downloads from Glance or a
disk export misses a disk.
"""

import inspect
import json
import os
import subprocess
from unittest import mock

import fixtures
from nova.virt.libvirt import config as vconfig
from nova.virt.libvirt import driver as libvirt_driver
from nova.virt.libvirt import guest as libvirt_guest
from nova.virt.libvirt import imagebackend
from nova.virt.libvirt import utils as libvirt_utils
from oslo_config import fixture as config_fixture
import testtools

from nova_xhv.backends.libvirt import backend as libvirt_backend
import nova_xhv.conf


def parameter_names(function):
    return list(inspect.signature(function).parameters)


class TestStockInternals(testtools.TestCase):

    def test_create_image_is_the_only_disk_creation_step_of_spawn(self):
        # StockLibvirtDriver overrides _create_image(context, instance,
        # disk_mapping, ...) and returns (created_instance_dir,
        # created_disks) = (False, False).
        self.assertEqual(
            ['self', 'context', 'instance', 'disk_mapping', 'injection_info',
             'suffix', 'disk_images', 'block_device_info',
             'fallback_from_host', 'ignore_bdi_for_swap'],
            parameter_names(libvirt_driver.LibvirtDriver._create_image))
        spawn = inspect.getsource(libvirt_driver.LibvirtDriver.spawn)
        self.assertRegex(spawn, r"created_instance_dir, created_disks = "
                                r"self._create_image\(\s+context, instance, "
                                r"disk_info\['mapping'\]")
        self.assertIn('cleanup_instance_dir=created_instance_dir', spawn)
        self.assertIn('cleanup_instance_disks=created_disks', spawn)
        # Nothing else in spawn fetches or creates disks.
        for fetcher in ('image_backend', 'fetch_image', '_create_and_inject',
                        '_try_fetch_image_cache', 'cache('):
            self.assertNotIn(fetcher, spawn)

    def test_root_disk_is_made_only_by_create_and_inject_local_root(self):
        # An import lets the stock _create_image make the ephemeral and
        # swap disks it lacks, with _create_and_inject_local_root (the
        # Glance download of the root) switched off.
        self.assertEqual(
            ['self', 'context', 'instance', 'disk_mapping',
             'booted_from_volume', 'suffix', 'disk_images', 'injection_info',
             'fallback_from_host'],
            parameter_names(
                libvirt_driver.LibvirtDriver._create_and_inject_local_root))
        create = inspect.getsource(libvirt_driver.LibvirtDriver._create_image)
        self.assertIn('created_disks = self._create_and_inject_local_root(',
                      create)
        for other_root_step in ("image('disk'", 'fetch_image',
                                '_try_fetch_image_cache'):
            self.assertNotIn(other_root_step, create)
        for local_disk in ("'disk.local'", "'disk.swap'", 'get_eph_disk('):
            self.assertIn(local_disk, create)

    def test_uefi_loader_fix_hooks_what_nova_still_has(self):
        # StockLibvirtDriver._configure_guest_by_virt_type runs the stock
        # method, then clears os_loader_secure when os_firmware_secure says
        # the same (libvirt >= 8.6 refuses both with autoselection).
        self.assertEqual(
            ['self', 'guest', 'instance', 'image_meta', 'flavor',
             'old_guest'],
            parameter_names(
                libvirt_driver.LibvirtDriver._configure_guest_by_virt_type))
        source = inspect.getsource(
            libvirt_driver.LibvirtDriver._configure_guest_by_virt_type)
        self.assertIn('guest.os_firmware_secure = guest.os_loader_secure',
                      source)
        guest = vconfig.LibvirtConfigGuest()
        for name in ('os_firmware', 'os_loader', 'os_loader_secure',
                     'os_firmware_secure'):
            self.assertTrue(hasattr(guest, name), name)

    def test_uefi_loader_fix_drops_only_the_loader_attribute(self):
        guest = vconfig.LibvirtConfigGuest()
        guest.virt_type = 'kvm'
        guest.os_type = 'hvm'
        guest.os_firmware = 'efi'
        guest.os_loader_secure = False
        guest.os_firmware_secure = False
        driver = libvirt_backend.StockLibvirtDriver.__new__(
            libvirt_backend.StockLibvirtDriver)
        driver._host = mock.Mock()
        driver._host.has_min_version.return_value = True
        with mock.patch.object(libvirt_driver.LibvirtDriver,
                               '_configure_guest_by_virt_type') as stock:
            driver._configure_guest_by_virt_type(guest, 'inst', 'meta',
                                                 'flavor')
        stock.assert_called_once_with(guest, 'inst', 'meta', 'flavor')
        self.assertIsNone(guest.os_loader_secure)
        self.assertFalse(guest.os_firmware_secure)
        xml = guest.to_xml()
        self.assertIn("<os firmware=\"efi\">", xml)
        self.assertIn('secure-boot', xml)
        self.assertNotIn('secure="', xml)
        # An older libvirt needs <loader secure>: left as Nova made it.
        guest.os_loader_secure = False
        driver._host.has_min_version.return_value = False
        with mock.patch.object(libvirt_driver.LibvirtDriver,
                               '_configure_guest_by_virt_type'):
            driver._configure_guest_by_virt_type(guest, 'inst', 'meta',
                                                 'flavor')
        self.assertFalse(guest.os_loader_secure)
        self.assertIsNotNone(guest.os_loader_secure)

    def test_spawn_keywords_used_by_spawn_from_disks(self):
        self.assertEqual(
            ['self', 'context', 'instance', 'image_meta', 'injected_files',
             'admin_password', 'allocations', 'network_info',
             'block_device_info', 'power_on', 'accel_info'],
            parameter_names(libvirt_driver.LibvirtDriver.spawn))

    def test_guest_disks_are_read_from_the_host(self):
        stock = libvirt_driver.LibvirtDriver(mock.Mock())
        self.assertEqual(['instance'], parameter_names(stock._host.get_guest))
        self.assertEqual(['self'], parameter_names(
            libvirt_guest.Guest.get_all_disks))
        disk = vconfig.LibvirtConfigGuestDisk()
        for attribute in ('source_type', 'source_device', 'source_path',
                          'target_dev', 'target_bus', 'driver_format'):
            self.assertTrue(hasattr(disk, attribute), attribute)

    def test_instance_path_layout(self):
        conf = self.useFixture(config_fixture.Config(nova_xhv.conf.CONF))
        conf.config(instances_path='/srv/instances')
        instance = mock.Mock(uuid='0f0e')
        self.assertEqual('/srv/instances/0f0e',
                         libvirt_utils.get_instance_path(instance))

    def test_stock_image_backends_read_our_disk_info(self):
        # A qcow2 staged by the backend is described by disk.info, so the
        # raw/flat image backend (images_type = raw) does not take it for
        # raw (see the security note in LibvirtDriver.finish_migration).
        conf = self.useFixture(config_fixture.Config(nova_xhv.conf.CONF))
        work = self.useFixture(fixtures.TempDir()).path
        conf.config(lock_path=work, group='oslo_concurrency')
        path = os.path.join(work, 'disk')
        subprocess.run(('qemu-img', 'create', '-q', '-f', 'qcow2', path,
                        '1M'), check=True)
        libvirt_backend._write_disk_info(work, [path])
        with open(os.path.join(work, 'disk.info')) as info:
            self.assertEqual({path: 'qcow2'}, json.load(info))
        flat = imagebackend.Flat(path=path)
        self.assertEqual('qcow2', flat.driver_format)
        self.assertEqual(os.path.join(work, 'disk.info'),
                         flat.disk_info_path)
