"""In-process Cinder around XHV: real API, scheduler and volume managers.

Two backends wrap Cinder's real NFS driver: ``nfsraw`` stores raw volumes,
``nfsqcow2`` stores qcow2 volumes (``nfs_qcow2_volumes``).  Their exports
are local directories (see standins.py for every stand-in).
"""

# Cinder's test base applies Cinder's eventlet monkey patching first.
from tests.unit.cinder import cinder_test  # noqa: I202

import logging
import os
import subprocess
import time
from unittest import mock

import fixtures
from oslo_config import cfg

from cinder import context
from cinder import objects
from cinder.tests.unit import fake_constants as fake
from cinder.volume import api as volume_api
from cinder.volume import driver as base_driver
from cinder.volume.drivers import nfs
from cinder.volume.drivers import remotefs
from cinder.volume import manager as volume_manager
from cinder.volume import volume_types

from cinder_xhv import opts as xhv_opts
from tests.fixtures import disks
from tests.functional.cinder import standins

CONF = cfg.CONF
HOST = 'xhvtest'
BACKENDS = {
    'nfsraw': {'share': '127.0.0.1:/xhv/raw', 'qcow2': False},
    'nfsqcow2': {'share': '127.0.0.1:/xhv/qcow2', 'qcow2': True},
}
GiB = 1024 ** 3


def wait_for(predicate, what, timeout=60.0, interval=0.05):
    """Poll ``predicate`` until it returns a true value or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            message = 'timed out after %.0fs waiting for %s' % (
                timeout, what)
            raise AssertionError(message)
        time.sleep(interval)


def qemu_img_info(path, fmt=None):
    """Independent oracle: qemu-img itself, not the translation engine."""
    import json
    cmd = ['qemu-img', 'info', '--output=json']
    if fmt:
        cmd += ['-f', fmt]
    out = subprocess.run(cmd + [path], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out)


def qemu_img_convert_to_raw(src, fmt, dst):
    subprocess.run(['qemu-img', 'convert', '-f', fmt, '-O', 'raw', src, dst],
                   check=True, capture_output=True)


class XHVCinderTestCase(cinder_test.TestCase):
    """Cinder's services in-process, XHV wrapping NFS twice."""

    def setUp(self):
        super().setUp()
        self.root = self.useFixture(fixtures.TempDir()).path
        # Warnings and errors of every service, to check refusal reasons.
        self.logs = self.useFixture(fixtures.FakeLogger(
            level=logging.WARNING, nuke_handlers=False))
        self.shares = self.useFixture(standins.BindMountShares(self.root))
        self.useFixture(standins.InProcessPrivsep())
        self.glance = self.useFixture(
            standins.FakeGlance(os.path.join(self.root, 'glance')))
        self.flags(host=HOST,
                   image_conversion_dir=os.path.join(self.root, 'convert'),
                   # os-brick's connector properties use my_ip.
                   my_ip='127.0.0.1')
        self.mount_base = os.path.join(self.root, 'mnt')
        for backend, spec in BACKENDS.items():
            self._configure_backend(backend, spec)
        self.volume_services = {
            backend: self.start_service('volume', host='%s@%s' % (HOST,
                                                                  backend),
                                        service_name=backend)
            for backend in BACKENDS}
        with mock.patch('eventlet.sleep'):
            self.scheduler = self.start_service('scheduler')
        self.ctxt = context.RequestContext(fake.USER_ID, fake.PROJECT_ID,
                                           is_admin=False,
                                           roles=['member', 'reader'])
        self.admin = context.get_admin_context()
        self.volume_api = volume_api.API()
        self.types = {}
        for backend in BACKENDS:
            vtype = volume_types.create(
                self.admin, 'xhv-%s' % backend,
                {'volume_backend_name': backend})
            self.types[backend] = objects.VolumeType.get_by_id(
                self.admin, vtype['id'])
        host_manager = self.scheduler.manager.driver.host_manager
        wait_for(lambda: all('%s@%s' % (HOST, b) in
                             host_manager.service_states for b in BACKENDS),
                 'both backends to report capabilities to the scheduler')

    def _configure_backend(self, backend, spec):
        opts = (volume_manager.volume_backend_opts + base_driver.volume_opts +
                nfs.nfs_opts + remotefs.nas_opts + xhv_opts.xhv_volume_opts)
        CONF.register_opts(opts, group=backend)
        export = self.shares.export(spec['share'])
        os.chmod(export, 0o777)
        shares_file = os.path.join(self.root, '%s-shares' % backend)
        with open(shares_file, 'w') as f:
            f.write(spec['share'] + '\n')
        values = {
            'volume_driver': 'cinder_xhv.driver.XHVVolumeDriver',
            'xhv_inner_volume_driver': 'nfs',
            'volume_backend_name': backend,
            'nfs_shares_config': shares_file,
            'nfs_mount_point_base': self.mount_base,
            'nfs_sparsed_volumes': True,
            'nfs_qcow2_volumes': spec['qcow2'],
            'nfs_snapshot_support': True,
            'nas_secure_file_operations': 'false',
            'nas_secure_file_permissions': 'false',
        }
        for name, value in values.items():
            self.override_config(name, value, group=backend)

    # -- helpers -----------------------------------------------------------

    def driver(self, backend):
        return self.volume_services[backend].manager.driver

    def get_volume(self, volume_id, ctxt=None):
        return objects.Volume.get_by_id(ctxt or self.admin, volume_id)

    def wait_volume(self, volume_id, status='available', timeout=60.0):
        def settled():
            vol = self.get_volume(volume_id)
            if vol.status == status and not (
                    vol.migration_status or '').endswith('ing'):
                return vol
            if vol.status == 'error' and status != 'error':
                message = 'volume %s went to error' % volume_id
                raise AssertionError(message)
            return None
        return wait_for(settled, 'volume %s to be %s' % (volume_id, status),
                        timeout=timeout)

    def create_volume(self, backend='nfsraw', size=1, **kwargs):
        volume = self.volume_api.create(self.ctxt, size, 'xhv-test', None,
                                        volume_type=self.types[backend],
                                        **kwargs)
        return volume

    def create_available(self, backend='nfsraw', size=1, **kwargs):
        volume = self.create_volume(backend, size, **kwargs)
        return self.wait_volume(volume.id)

    def volume_file(self, volume):
        volume = self.get_volume(volume.id)
        return self.driver(volume_backend(volume)).inner_driver.local_path(
            volume)

    def wait_logged(self, text):
        return wait_for(lambda: text in self.logs.output,
                        'the logs to mention %r' % text)

    def admin_metadata(self, volume):
        return dict(self.get_volume(volume.id).admin_metadata)


def volume_backend(volume):
    return volume.host.split('@')[1].split('#')[0]


MiB = 1024 ** 2
# qemu-img spelling of each Glance disk_format, and the options that make
# the image hypervisors expect (independent of the translation engine).
QEMU_OUTPUT = {
    'raw': ('raw', []),
    'qcow2': ('qcow2', []),
    'vmdk': ('vmdk', ['-o', 'subformat=streamOptimized']),
    'vhd': ('vpc', ['-o', 'subformat=dynamic,force_size=on']),
    'vhdx': ('vhdx', []),
}


def make_guest_image(directory, disk_format, seed=3, size=8 * MiB):
    """A patterned raw disk and its ``disk_format`` rendering by qemu-img.

    Returns (raw_path, image_path, extents).
    """
    raw = os.path.join(directory, 'guest-%d.raw' % seed)
    if not os.path.exists(raw):
        disks.make_raw_disk(raw, size, seed=seed, count=8, bootable=True)
    extents = disks.pattern_extents(size, seed=seed, count=8)
    if disk_format == 'raw':
        return raw, raw, extents
    qemu_fmt, options = QEMU_OUTPUT[disk_format]
    image = os.path.join(directory, 'guest-%d.%s' % (seed, disk_format))
    if not os.path.exists(image):
        subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', qemu_fmt] +
                       options + [raw, image], check=True,
                       capture_output=True)
    return raw, image, extents


def same_guest_data(path_a, fmt_a, path_b, fmt_b):
    """qemu-img compare (non-strict: a larger image's tail must be zero)."""
    result = subprocess.run(['qemu-img', 'compare', '-f', fmt_a, '-F', fmt_b,
                             path_a, path_b], capture_output=True, text=True)
    if result.returncode not in (0, 1):
        message = 'qemu-img compare failed: %s' % result.stderr
        raise AssertionError(message)
    return result.returncode == 0
