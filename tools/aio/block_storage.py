"""Cinder of the all-in-one: cinder-api, -scheduler and -volume with XHV.

The one backend (``xhv-nfs``) is XHV's meta volume driver wrapping Cinder's
own NFS driver.  This machine has no NFS client (the kernel lacks it), so
the share's "export" is a local directory, bind-mounted before
cinder-volume starts at exactly the mount point the NFS driver computes for
the share (os-brick's own function): os-brick's ``RemoteFsClient.mount``
finds it in /proc/mounts and never runs ``mount.nfs``.  ``down`` unmounts
it after cinder-volume has stopped.
"""

import os
import sys
import time
import warnings

import services
from services import log
from services import run

HOST = services.CINDER_HOST
BACKEND = 'xhv-nfs'
VOLUME_TYPE = 'xhv-nfs'
API_PORT = 8776
API_URL = 'http://127.0.0.1:%d/v3' % API_PORT
SERVICES = ('cinder-api', 'cinder-scheduler', 'cinder-volume')
# cinder-volume keeps running (and reporting "up") when its driver fails
# to initialise: these lines mean it never will.
VOLUME_FATAL = (r'[^\n]*(Failed to initialize driver|ERROR cinder\.volume'
                r'\.manager|CRITICAL )[^\n]*')
FATAL = r'[^\n]*(ERROR cinder\.(service|cmd)|CRITICAL )[^\n]*'


class BlockStorage:
    def __init__(self, cloud):
        self.cloud = cloud
        self.procs = cloud.procs
        self.lib = os.path.join(cloud.lib, 'cinder')
        self.export = os.path.join(self.lib, 'nfs-export')
        # What an operator would write in nfs_shares for a real export.
        self.share = '127.0.0.1:%s' % self.export
        self.mount_base = os.path.realpath(os.path.join(self.lib, 'mnt'))

    def conf(self):
        return self.cloud.conf('cinder', 'cinder.conf')

    def write_configs(self):
        c = self.cloud
        c.render('cinder.conf', self.conf())
        c.render('nfs_shares', c.conf('cinder', 'nfs_shares'), mode=0o644,
                 extra={'NFS_SHARE': self.share})
        for name in ('api-paste.ini', 'resource_filters.json'):
            c.copy_venv_file('etc/cinder/' + name, c.conf('cinder', name))
        for d in (self.export, self.mount_base,
                  os.path.join(self.lib, 'locks')):
            os.makedirs(d, exist_ok=True)

    # -- the share ----------------------------------------------------------

    def mount_point(self):
        """Where Cinder's NFS driver mounts the share (os-brick computes)."""
        with warnings.catch_warnings():
            # os-brick pulls in eventlet, which warns it is deprecated.
            warnings.simplefilter('ignore')
            from os_brick.remotefs import remotefs
        client = remotefs.RemoteFsClient('nfs', None,
                                         nfs_mount_point_base=self.mount_base)
        return client.get_mount_point(self.share)

    def mounts(self):
        """Our mount points under the driver's mount base, as mounted now."""
        with open('/proc/mounts') as f:
            points = [line.split()[1] for line in f if line.strip()]
        return [p for p in points
                if p.startswith(self.mount_base + os.sep)]

    def mount_share(self):
        point = self.mount_point()
        if point in self.mounts():
            return point
        os.makedirs(point, exist_ok=True)
        log('bind-mounting %s at %s (the NFS share %s; no NFS client here)'
            % (self.export, point, self.share))
        run(['mount', '--bind', self.export, point])
        return point

    def unmount_share(self):
        unmounted = []
        for point in reversed(self.mounts()):
            proc = run(['umount', point], check=False)
            if proc.returncode:
                # Still busy (a helper holding a file): detach it anyway.
                run(['umount', '-l', point], check=False)
            unmounted.append(point)
        return unmounted

    # -- the KVM compute's side of the share --------------------------------

    def kvm_mount_base(self):
        """[libvirt] nfs_mount_point_base of the KVM compute."""
        return os.path.join(self.cloud.lib, 'nova-%s'
                            % services.HOSTS['libvirt'], 'mnt')

    def kvm_compute_env(self):
        """The KVM nova-compute's environment: our ``mount`` first on PATH.

        Also makes its mount base a shared bind mount (once), so that
        QEMU's private mount namespace sees the share mounted later.
        """
        if services.TOP not in sys.path:
            sys.path.insert(0, services.TOP)
        from tests.fixtures import cinder_services
        base = self.kvm_mount_base()
        os.makedirs(base, mode=0o755, exist_ok=True)
        if base not in self._all_mounts():
            log('%s: a shared bind mount (Nova mounts the share below it)'
                % base)
            cinder_services.make_shared_mount(base)
        wrapper_dir = os.path.join(self.cloud.state, 'bin')
        os.makedirs(wrapper_dir, exist_ok=True)
        wrapper = os.path.join(wrapper_dir, 'mount')
        with open(wrapper, 'w') as f:
            f.write('#!/bin/sh\nexec %s %s "$@"\n' % (
                os.path.join(self.cloud.bin, 'python'),
                os.path.join(services.TOP, 'tools', 'aio', 'mount_nfs.py')))
        os.chmod(wrapper, 0o755)
        return dict(os.environ, PATH='%s:%s' % (
            wrapper_dir, os.environ.get('PATH', '/usr/sbin:/usr/bin')))

    @staticmethod
    def _all_mounts():
        with open('/proc/mounts') as f:
            return [line.split()[1] for line in f if line.strip()]

    def unmount_kvm(self):
        """What Nova left mounted below its base, then the base itself."""
        base = self.kvm_mount_base()
        points = [p for p in self._all_mounts()
                  if p == base or p.startswith(base + os.sep)]
        for point in sorted(points, reverse=True):
            run(['umount', '-l', point], check=False)
        return points

    # -- services -----------------------------------------------------------

    def start(self):
        """DB sync, the share and the three services, without waiting."""
        c = self.cloud
        conf = self.conf()
        c.once('cinder-db-sync', [conf], lambda: c.manage(
            ['cinder-manage', '--config-file', conf, 'db', 'sync']))
        files = [conf, c.conf('cinder', 'nfs_shares')]
        c.wsgi('cinder-api', ['--pyargv', '--config-file ' + conf])
        self.procs.start('cinder-scheduler', [
            os.path.join(c.bin, 'cinder-scheduler'), '--config-file', conf],
            config_files=files)
        self.mount_share()
        self.procs.start('cinder-volume', [
            os.path.join(c.bin, 'cinder-volume'), '--config-file', conf],
            config_files=files, code=c.xhv_code())

    def wait(self, conn):
        """Until the volume service is up and its pool reached the scheduler.

        Then the volume type exists.
        """
        self.cloud.wait_wsgi('cinder-api', '/')
        storage = conn.block_storage
        backend_host = '%s@%s' % (HOST, BACKEND)
        for name, host in (('cinder-scheduler', HOST),
                           ('cinder-volume', backend_host)):
            self.procs.wait_for(name, lambda: any(
                s.binary == name and s.host == host and s.state == 'up'
                for s in storage.services()), 120, 'up in Cinder',
                fatal=VOLUME_FATAL if name == 'cinder-volume' else FATAL)
        self.procs.wait_for('cinder-volume', lambda: any(
            p.name.startswith(backend_host + '#')
            for p in storage.backend_pools()), 90,
            'reporting its pool to the scheduler', fatal=VOLUME_FATAL)
        if storage.find_type(VOLUME_TYPE) is None:
            log('volume type %s' % VOLUME_TYPE)
            storage.create_type(name=VOLUME_TYPE, extra_specs={
                'volume_backend_name': BACKEND})

    def stop(self):
        """Stop the services (volume first), then unmount the share."""
        stopped = [n for n in reversed(SERVICES) if self.procs.stop(n)]
        return stopped, self.unmount_kvm() + self.unmount_share()


def delete_volumes(conn, prefix, timeout=120):
    """Delete the volumes named ``prefix``*; wait until they are gone."""
    doomed = [v for v in conn.block_storage.volumes(all_projects=True)
              if (v.name or '').startswith(prefix)]
    for volume in doomed:
        log('deleting volume %s (%s)' % (volume.name, volume.id))
        try:
            if volume.status not in ('available', 'error'):
                conn.block_storage.reset_volume_status(
                    volume, status='error', attach_status=None,
                    migration_status=None)
            conn.block_storage.delete_volume(volume, force=False)
        except Exception as exc:  # noqa: B902 - keep going, report
            log('delete volume %s failed: %s' % (volume.id, exc))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ids = {v.id for v in conn.block_storage.volumes(all_projects=True)}
        if not ids & {v.id for v in doomed}:
            break
        time.sleep(1)
    return [v.id for v in doomed]
