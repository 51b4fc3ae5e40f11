"""The demo's federation steps: RegionOne's ``aio-cloud`` compute, RegionTwo.

Run by demo.py only when RegionTwo is up (tools/aio/region_two.py).  Every
step is an ``openstack --os-cloud xhv-aio`` call against RegionOne; what
RegionTwo holds is read with the same admin entry and ``--os-region-name
RegionTwo``, and the disks' bytes from the files themselves.  One server
makes the whole round (TCG boots cost time): born on the cloud, reverted
from KVM and moved there, reverted from the cloud and moved back; then a
vSphere server moves to the cloud once, and both are deleted.
"""

import glob
import hashlib
import os
import time

import region_two
import services

SERVER = services.DEMO_PREFIX + 'cloud'
VSPHERE_SERVER = services.DEMO_PREFIX + 'cloud-vsphere'
CLOUD = region_two.CLOUD_HOST
# What RegionOne's hypervisor list shows for the cloud compute.
HYPERVISOR_TYPE = 'cloud'
REMOTE_HOME_UUID = 'xhv_home_uuid'
# The cloud backend's remote image cache (kept on purpose: one upload per
# home image); anything else it made must be gone after the deletes.
CACHE_TAG_PREFIX = 'xhv-image-'


def sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1024 * 1024), b''):
            digest.update(block)
    return digest.hexdigest()


class CloudDemo:
    def __init__(self, demo):
        self.demo = demo
        self.cloud = demo.cloud
        self.r2 = region_two.RegionTwo(demo.cloud)
        self.kvm = demo.kvm
        self.sums = {}

    def remote(self, *args, parse=False):
        return self.demo.cli('--os-region-name', region_two.REGION, *args,
                             parse=parse)

    def fail(self, msg):
        from demo import StepFailed
        raise StepFailed(msg)

    # -- what RegionTwo holds ---------------------------------------------

    def remote_servers(self):
        """{home uuid: remote server (server show)} in RegionTwo."""
        found = {}
        for row in self.remote('server', 'list', '--all-projects',
                               parse=True):
            show = self.remote('server', 'show', row['ID'], parse=True)
            props = show.get('properties') or show.get('metadata') or {}
            if isinstance(props, str):  # older clients: "k='v', ..."
                props = dict(kv.split('=', 1) for kv in props.split(', '))
                props = {k: v.strip("'") for k, v in props.items()}
            found[props.get(REMOTE_HOME_UUID)] = show
        return found

    def remote_server(self, name):
        home = self.demo.cli('server', 'show', name, parse=True)
        remote = self.remote_servers().get(home['id'])
        if remote is None:
            self.fail('RegionTwo has no server for %s (%s)'
                      % (name, home['id']))
        return remote

    def remote_disk(self, name):
        """The remote server's root disk file under RegionTwo's path."""
        remote = self.remote_server(name)
        path = os.path.join(self.r2.instances, remote['id'], 'disk')
        if not os.path.isfile(path):
            self.fail('no disk file %s for the remote server of %s'
                      % (path, name))
        return path

    def kvm_disk(self, name):
        home = self.demo.cli('server', 'show', name, parse=True)
        folder = os.path.join(self.cloud.lib, 'nova-%s' % self.kvm,
                              'instances', home['id'])
        disks = sorted(glob.glob(os.path.join(folder, 'disk*')))
        if not disks:
            self.fail('no disk file in %s' % folder)
        return disks[0]

    # -- steps ------------------------------------------------------------

    def boot(self):
        """Born on aio-cloud: a stock libvirt server in RegionTwo."""
        server = self.demo.create_server(SERVER, CLOUD)
        remote = self.remote_server(SERVER)
        where = (remote.get('OS-EXT-SRV-ATTR:host'), remote['status'])
        print('%s: RegionTwo server %s (%s) on %s, %s' % (
            SERVER, remote['id'], remote['name'], where[0], where[1]))
        if where != (region_two.HOST, 'ACTIVE'):
            self.fail('the remote server of %s is %s on %s, not ACTIVE on '
                      '%s' % (SERVER, where[1], where[0], region_two.HOST))
        return server

    def marker(self, name, host):
        server = self.demo.wait_server(name, 'ACTIVE', host)
        text = self.demo.wait_marker(name, timeout=180)
        print('%s on %s: %s in console log show' % (
            name, server.get('OS-EXT-SRV-ATTR:host'), self.demo_marker()))
        return text

    @staticmethod
    def demo_marker():
        import demo
        return demo.MARKER

    def last_migration(self, name, status):
        rows = self.demo.cli('server', 'migration', 'list', '--server',
                             name, '--sort-column', 'Created At', parse=True)
        if not rows or rows[-1]['Status'] != status:
            self.fail('server migration list --server %s: last %s, not %s'
                      % (name, rows[-1]['Status'] if rows else None,
                         status))
        return rows[-1]

    def revert(self, name, dest, source, disk_of):
        """migrate --host dest, revert: back on source, same disk bytes."""
        path = disk_of(name)
        before = sha256(path)
        self.demo.migrate(name, dest)
        self.demo.cli('server', 'migrate', 'revert', name)
        self.demo.wait_server(name, 'ACTIVE', source)
        self.last_migration(name, 'reverted')
        after_path = disk_of(name)
        after = sha256(after_path)
        print('%s: %s sha256 before %s, after the revert %s (%s)'
              % (name, path, before, after, after_path))
        if (after_path, after) != (path, before):
            self.fail('%s: the source disk changed across the revert'
                      % name)
        return after

    def move(self, name, dest):
        self.demo.migrate(name, dest)
        self.demo.cli('server', 'migrate', 'confirm', name)
        server = self.demo.wait_server(name, 'ACTIVE', dest)
        self.last_migration(name, 'confirmed')
        return server

    def delete_all(self):
        """server delete: nothing of them left in RegionTwo."""
        made = [s['ID'] for s in self.demo.cli('server', 'list', parse=True)
                if s['Name'] in (SERVER, VSPHERE_SERVER)]
        for ident in made:
            self.demo.cli('server', 'delete', '--wait', ident)
        deadline = time.monotonic() + 120
        while True:
            left = [uuid for uuid in self.remote_servers() if uuid in made]
            if not left:
                break
            if time.monotonic() > deadline:
                self.fail('RegionTwo still holds servers of %s' % left)
            time.sleep(1)
        images = self.remote('image', 'list', '--long', parse=True)
        extra = [(i['Name'], i.get('Tags')) for i in images
                 if not any(str(t).startswith(CACHE_TAG_PREFIX)
                            for t in _tags(i))]
        print('RegionTwo images after the deletes: %s' % [
            (i['Name'], _tags(i)) for i in images])
        if extra:
            self.fail('RegionTwo holds images other than the cache: %s'
                      % extra)
        return made

    def steps(self, no_migration):
        from demo import StepFailed
        demo = self.demo
        step = demo.step
        booted = step('cloud: server create --nic none on %s (RegionTwo, '
                      'stock libvirt)' % CLOUD, self.boot)
        skip = booted is StepFailed and 'the boot on the cloud failed'
        step('cloud: console log show (RegionTwo): boot marker',
             lambda: self.marker(SERVER, CLOUD), skip=skip)
        skip = no_migration or skip
        steps = [
            ('cloud: server migrate --host %s + revert; remote disk '
             'byte-identical' % self.kvm,
             lambda: self.revert(SERVER, self.kvm, CLOUD,
                                 self.remote_disk)),
            ('cloud: server migrate --host %s + confirm' % self.kvm,
             lambda: self.move(SERVER, self.kvm)),
            ('cloud: console log show (KVM, from the cloud): boot marker',
             lambda: self.marker(SERVER, self.kvm)),
            ('cloud: server migrate --host %s + revert; KVM disk '
             'byte-identical' % CLOUD,
             lambda: self.revert(SERVER, CLOUD, self.kvm, self.kvm_disk)),
            ('cloud: server migrate --host %s + confirm' % CLOUD,
             lambda: self.move(SERVER, CLOUD)),
            ('cloud: console log show (RegionTwo, from KVM): boot marker',
             lambda: self.marker(SERVER, CLOUD)),
        ]
        for title, func in steps:
            result = step(title, func, skip=skip)
            skip = skip or (result is StepFailed and
                            'an earlier cloud step failed')
        born = step('cloud: server create --nic none on %s' % demo.vmware,
                    lambda: demo.create_server(VSPHERE_SERVER, demo.vmware))
        skip = no_migration or (born is StepFailed and
                                'the vSphere boot failed')
        moved = step('cloud: server migrate --host %s (from vSphere) + '
                     'confirm' % CLOUD,
                     lambda: self.move(VSPHERE_SERVER, CLOUD), skip=skip)
        skip = skip or (moved is StepFailed and 'the move failed')
        step('cloud: console log show (RegionTwo, from vSphere): boot '
             'marker', lambda: self.marker(VSPHERE_SERVER, CLOUD),
             skip=skip)
        step('cloud: server migration list', lambda: print(demo.cli(
            'server', 'migration', 'list', '--server', SERVER)))
        step('cloud: server delete; RegionTwo keeps no server, only its '
             'image cache', self.delete_all)


def _tags(image):
    tags = image.get('Tags') or image.get('tags') or []
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(',') if t.strip()]
    return tags


def steps(demo, no_migration):
    CloudDemo(demo).steps(no_migration)
