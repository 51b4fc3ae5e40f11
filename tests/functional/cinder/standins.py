"""Userspace stand-ins for the kernel steps this machine cannot do.

Everything else in the Cinder tests is real: Cinder's VolumeManager,
scheduler and volume API, the NFS driver, os-brick, qemu-img, sqlite.

1. NFS mount: os-brick's ``RemoteFsClient._do_mount`` (the one call that
   runs ``mount -t nfs``) bind-mounts a local directory standing for the
   export instead.  Mount points, /proc/mounts checks and file handling are
   the driver's own.
2. ``mount.nfs`` probe: NfsDriver.do_setup checks that the binary exists;
   a stub on PATH answers (it is never used to mount).
3. privsep: Cinder's and os-brick's privileged functions run in-process
   (the tests run as root) instead of through a privsep-helper daemon.
4. Glance: Cinder's real GlanceImageService over an in-memory glanceclient
   that keeps image bytes in files (no Glance server exists here).
"""

import os
import subprocess
import uuid

import fixtures
import os_brick.privileged

from cinder.image import glance
import cinder.privsep
from cinder.tests.unit.image import glance_stubs


class BindMountShares(fixtures.Fixture):
    """Stand-in 1 and 2: NFS exports are local directories, bind-mounted."""

    def __init__(self, root):
        super().__init__()
        self.root = root
        self.exports = {}
        self.mounted = []

    def export(self, share):
        path = os.path.join(self.root, 'exports', uuid.uuid4().hex[:8])
        os.makedirs(path)
        self.exports[share] = path
        return path

    def _setUp(self):
        fixture = self

        def do_mount(client, mount_type, share, mount_path,
                     mount_options=None, flags=None):
            source = fixture.exports.get(share)
            if source is None:
                message = 'no stand-in export for share %s' % share
                raise RuntimeError(message)
            subprocess.run(['mount', '--bind', source, mount_path],
                           check=True, capture_output=True)
            fixture.mounted.append(mount_path)

        self.useFixture(fixtures.MonkeyPatch(
            'os_brick.remotefs.remotefs.RemoteFsClient._do_mount', do_mount))
        bin_dir = os.path.join(self.root, 'bin')
        os.makedirs(bin_dir, exist_ok=True)
        stub = os.path.join(bin_dir, 'mount.nfs')
        with open(stub, 'w') as f:
            f.write('#!/bin/sh\necho "usage: mount.nfs remotetarget dir '
                    '(XHV test stand-in)" >&2\nexit 1\n')
        os.chmod(stub, 0o755)
        self.useFixture(fixtures.EnvironmentVariable(
            'PATH', bin_dir + os.pathsep + os.environ.get('PATH', '')))
        self.addCleanup(self._unmount_all)

    def _unmount_all(self):
        for path in reversed(self.mounted):
            subprocess.run(['umount', '-l', path], capture_output=True)
        self.mounted = []


class InProcessPrivsep(fixtures.Fixture):
    """Stand-in 3: privileged calls run in this (root) process."""

    def _setUp(self):
        for context in (cinder.privsep.sys_admin_pctxt,
                        os_brick.privileged.default):
            previous = context.client_mode
            context.set_client_mode(False)
            self.addCleanup(context.set_client_mode, previous)


class _StoredImages(glance_stubs.StubGlanceClient):
    """glanceclient stand-in whose images carry real bytes in files."""

    def __init__(self, data_dir):
        super().__init__()
        self.data_dir = data_dir
        self.http_client = type('HTTP', (), {'additional_headers': {}})()

    def schemas_get(self, schema_name):
        return _ImageSchema()

    def _path(self, image_id):
        return os.path.join(self.data_dir, 'image-%s' % image_id)

    def data(self, image_id):
        self.get(image_id)
        path = self._path(image_id)
        if not os.path.exists(path):
            return []

        def chunks():
            with open(path, 'rb') as f:
                for block in iter(lambda: f.read(1024 * 1024), b''):
                    yield block
        return chunks()

    def upload(self, image_id, data, **kwargs):
        image = self.get(image_id)
        size = 0
        with open(self._path(image_id), 'wb') as f:
            for block in iter(lambda: data.read(1024 * 1024), b''):
                f.write(block)
                size += len(block)
        image.size = size
        image.status = 'active'

    def update(self, image_id, remove_props=None, **metadata):
        image = self.get(image_id)
        for key in remove_props or ():
            image.__dict__['raw'].pop(key, None)
        for key, value in metadata.items():
            image.__dict__['raw'][key] = value
        return image

    def create(self, **metadata):
        metadata.setdefault('id', str(uuid.uuid4()))
        metadata.setdefault('status', 'queued')
        image = super().create(**metadata)
        for key, value in metadata.items():
            image.__dict__['raw'][key] = value
        return image


class _ImageSchema(glance_stubs.FakeSchema):
    # Glance v2's base image properties; everything else is custom.
    BASE = set(glance_stubs.IMAGE_ATTRIBUTES) | {
        'virtual_size', 'locations', 'direct_url', 'tags', 'os_hidden',
        'os_hash_algo', 'os_hash_value', 'stores', 'file', 'self', 'schema'}

    def is_base_property(self, key):
        return key in self.BASE


class FakeGlance(fixtures.Fixture):
    """Stand-in 4: Cinder's GlanceImageService over stored images."""

    def __init__(self, data_dir):
        super().__init__()
        self.data_dir = data_dir

    def _setUp(self):
        os.makedirs(self.data_dir, exist_ok=True)
        self.client = _StoredImages(self.data_dir)
        wrapper = glance.GlanceClientWrapper()
        wrapper.client = self.client
        service = _LocalGlanceImageService(client=wrapper)
        self.service = service
        self.useFixture(fixtures.MonkeyPatch(
            'cinder.image.glance.get_remote_image_service',
            lambda context, image_href: (service, image_href)))
        self.useFixture(fixtures.MonkeyPatch(
            'cinder.image.glance.get_default_image_service',
            lambda: service))

    def add_image(self, path, disk_format, container_format='bare',
                  properties=None, virtual_size=None):
        image_id = str(uuid.uuid4())
        meta = dict(properties or {})
        meta.update(id=image_id, name='xhv-%s' % disk_format,
                    disk_format=disk_format,
                    container_format=container_format,
                    status='queued', visibility='public', min_disk=0,
                    min_ram=0, owner=None, protected=False)
        self.client.create(**meta)
        with open(path, 'rb') as f:
            self.client.upload(image_id, f)
        if virtual_size is not None:
            self.client.update(image_id, virtual_size=virtual_size)
        return image_id

    def image_path(self, image_id):
        return self.client._path(image_id)

    def image(self, image_id):
        return dict(self.client.get(image_id).__dict__['raw'])


class _LocalGlanceImageService(glance.GlanceImageService):
    def get_location(self, context, image_id):
        # Images live in the stand-in only: no direct URL or locations.
        return None, []
