"""The demo: every step is an ``openstack --os-cloud xhv-aio`` call.

Boot the tiny disk (tests/fixtures/disks.py) as a vmdk image on the vSphere
compute, move it to KVM, confirm, read the boot marker from the KVM console;
then the same move reverted.  Then Cinder with XHV's volume driver: a volume
made from the vmdk image, uploaded back as the streamOptimized vmdk vSphere
imports, and that image booted on vSphere; then a volume holding 64 MiB
of data uploaded as each disk format Glance takes.  Prints a table of each
step's time.  Last, a server on vSphere with a raw data volume (a
known pattern in its file) moves to KVM and its volume follows; and the
XHV policy: audit, a member refused (403 with the rule), an admin's move.
The network steps (network_demo.py): a server with a port moves vSphere ->
KVM and its guest leases the port's IP for the port's MAC.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time

import cloud_demo
import families
import network_demo
import region_two
import services
from services import log

MARKER = 'XHV-BOOT-OK'
PREFIX = services.DEMO_PREFIX
IMAGE = PREFIX + 'boot'
FLAVOR = 'xhv-tiny'
VOLUME = PREFIX + 'volume'
VOLUME_IMAGE = PREFIX + 'from-volume'
# A volume holding real data (tests/fixtures/disks.make_data_disk), uploaded
# in every format: bodies of many 1 MiB chunks, which the tiny boot disk's
# upload never sends.
DATA_IMAGE = PREFIX + 'data'
DATA_VOLUME = PREFIX + 'data-volume'
DATA_SIZE = 64 * 1024 * 1024
UPLOAD_FORMATS = ('vmdk', 'qcow2', 'raw', 'vhd', 'vhdx')
# A server on vSphere with a raw data volume on the NFS share moves to KVM;
# the volume follows (detached, attached again with KVM's connector).  Its
# file holds tests/fixtures/disks.make_raw_disk's pattern of this seed.
FOLLOW_SERVER = PREFIX + 'follow'
FOLLOW_VOLUME = PREFIX + 'follow-volume'
FOLLOW_SEED = 20
# The XHV policy (tools/aio/templates/xhv-policy.yaml): a server placed on
# vSphere, then tagged pci, breaks rule pci-on-kvm (xhv-policy audit finds
# it); a member's move of it is refused by pci-admin-only, an admin's not.
PCI_SERVER = PREFIX + 'pci'


def uploaded_image(disk_format):
    """Name of the image the demo uploads from DATA_VOLUME as a format."""
    return '%sdata-%s' % (PREFIX, disk_format)


class StepFailed(RuntimeError):
    pass


class Demo:
    def __init__(self, cloud):
        self.cloud = cloud
        self.osc = os.path.join(cloud.bin, 'openstack')
        self.rows = []
        self.record = os.path.join(cloud.state, 'demo-servers')
        self.kvm = services.HOSTS['libvirt']
        # Log lines start with this timestamp format (oslo.log).
        self.started = time.strftime('%Y-%m-%d %H:%M:%S')
        self.vmware = services.HOSTS['vmware']
        # RegionOne's cloud compute (tools/aio/region_two.py) when up.
        self.region_two = region_two.is_up(cloud)
        self.extra_hypervisor_types = (
            (cloud_demo.HYPERVISOR_TYPE,) if self.region_two else ())

    def cli(self, *args, parse=False):
        argv = [self.osc, '--os-cloud', 'xhv-aio'] + list(args)
        if parse:
            argv += ['-f', 'json']
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode:
            msg = ('openstack %s: %s' % (
                ' '.join(args), (proc.stderr or proc.stdout).strip()[-2000:]))
            raise StepFailed(msg)
        return json.loads(proc.stdout) if parse else proc.stdout

    def step(self, title, func, skip=None):
        if skip:
            self.rows.append((title, '-', 'SKIPPED: ' + skip))
            log('%s: skipped (%s)' % (title, skip))
            return None
        log(title)
        start = time.monotonic()
        try:
            result = func()
        except StepFailed as exc:
            self.rows.append((title, '%.1f' % (time.monotonic() - start),
                              'FAILED'))
            log('FAILED: %s' % exc)
            self.show_errors()
            return StepFailed
        self.rows.append((title, '%.1f' % (time.monotonic() - start), 'ok'))
        return result

    # -- helpers ----------------------------------------------------------

    def show_errors(self, lines=12):
        """The last ERROR lines Nova's services logged during the demo."""
        procs = self.cloud.procs
        for name in procs.names():
            if not name.startswith('nova'):
                continue
            errors = [line for line in procs.log_tail(name, 400).splitlines()
                      if ' ERROR ' in line and line[:19] >= self.started]
            if errors:
                print('---- %s: last errors (%s)'
                      % (name, procs.log_path(name)))
                print('\n'.join(errors[-lines:]))

    def wait_server(self, name, status, host=None, timeout=300):
        deadline = time.monotonic() + timeout
        server = {}
        while time.monotonic() < deadline:
            server = self.cli('server', 'show', name, parse=True)
            if server['status'] == 'ERROR':
                msg = ('%s went to ERROR: %s' % (
                    name, server.get('fault')))
                raise StepFailed(msg)
            if server['status'] == status and (
                    host is None or
                    server.get('OS-EXT-SRV-ATTR:host') == host):
                return server
            time.sleep(1)
        msg = ('%s not %s on %s within %d s (now %s on %s)' % (
            name, status, host, timeout, server.get('status'),
            server.get('OS-EXT-SRV-ATTR:host')))
        raise StepFailed(msg)

    def wait_marker(self, name, timeout=60):
        deadline = time.monotonic() + timeout
        text = ''
        while time.monotonic() < deadline:
            text = self.cli('console', 'log', 'show', name)
            if MARKER in text:
                return text
            time.sleep(1)
        msg = ('no %s on the console of %s within %d s: %r' % (
            MARKER, name, timeout, text[-300:]))
        raise StepFailed(msg)

    def create_server(self, name, host, image=IMAGE):
        server = self.cli('server', 'create', '--image', image, '--flavor',
                          FLAVOR, '--nic', 'none', '--availability-zone',
                          'nova:' + host, '--wait', name, parse=True)
        with open(self.record, 'a') as f:
            f.write(server['id'] + '\n')
        self.wait_server(name, 'ACTIVE', host)
        return server

    def migrate(self, name, dest):
        self.cli('server', 'migrate', '--host', dest, '--wait', name)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            server = self.cli('server', 'show', name, parse=True)
            if (server['status'] == 'VERIFY_RESIZE' and
                    server.get('OS-EXT-SRV-ATTR:host') == dest):
                return server
            migrations = self.cli('server', 'migration', 'list', '--server',
                                  name, '--sort-column', 'Created At',
                                  parse=True)
            if migrations and migrations[-1]['Status'] in ('error',
                                                           'failed'):
                msg = ('the migration of %s ended in %s; %s is %s on %s; '
                       'see the nova-compute logs (tools/xhv-aio logs)'
                       % (name, migrations[-1]['Status'], name,
                          server['status'],
                          server.get('OS-EXT-SRV-ATTR:host')))
                raise StepFailed(msg)
            time.sleep(1)
        msg = '%s did not reach VERIFY_RESIZE on %s' % (name, dest)
        raise StepFailed(msg)

    # -- steps ------------------------------------------------------------

    def prepare(self):
        """Image and flavor, and no servers left from an earlier demo."""
        for server in self.cli('server', 'list', '--all-projects',
                               parse=True):
            if server['Name'].startswith(PREFIX):
                self.cli('server', 'delete', '--wait', server['ID'])
        flavors = {f['Name'] for f in self.cli('flavor', 'list', '--all',
                                               parse=True)}
        if FLAVOR not in flavors:
            self.cli('flavor', 'create', '--ram', '64', '--disk', '1',
                     '--vcpus', '1', FLAVOR)

    def wait_volume(self, name, status, timeout=180):
        deadline = time.monotonic() + timeout
        volume = {}
        while time.monotonic() < deadline:
            volume = self.cli('volume', 'show', name, parse=True)
            if volume['status'].startswith('error'):
                msg = ('volume %s went to %s; see tools/xhv-aio logs '
                       'cinder-volume' % (name, volume['status']))
                raise StepFailed(msg)
            if volume['status'] == status:
                return volume
            time.sleep(1)
        msg = ('volume %s not %s within %d s (now %s)'
               % (name, status, timeout, volume.get('status')))
        raise StepFailed(msg)

    def wait_image(self, name, timeout=180):
        deadline = time.monotonic() + timeout
        image = {}
        while time.monotonic() < deadline:
            image = self.cli('image', 'show', name, parse=True)
            if image['status'] == 'active':
                return image
            if image['status'] in ('killed', 'deleted'):
                msg = 'image %s went to %s' % (name, image['status'])
                raise StepFailed(msg)
            time.sleep(1)
        msg = ('image %s not active within %d s (now %s)'
               % (name, timeout, image.get('status')))
        raise StepFailed(msg)

    def volume_services(self):
        services_up = self.cli('volume', 'service', 'list', parse=True)
        print(self.cli('volume', 'service', 'list'))
        if not any(s['Binary'] == 'cinder-volume' and s['State'] == 'up'
                   for s in services_up):
            msg = 'no cinder-volume is up: %s' % services_up
            raise StepFailed(msg)

    def volume_from_image(self):
        """copy_image_to_volume: XHV inspects the vmdk, writes raw data."""
        for volume in self.cli('volume', 'list', '--name', VOLUME,
                               parse=True):
            self.cli('volume', 'delete', volume['ID'])
            self.wait_gone('volume', volume['ID'])
        self.cli('volume', 'create', '--image', IMAGE, '--size', '1',
                 VOLUME)
        volume = self.wait_volume(VOLUME, 'available')
        print('volume %s: %s, %s GiB, properties %s' % (
            VOLUME, volume['status'], volume['size'],
            volume.get('properties')))
        return volume

    def image_from_volume(self):
        """copy_volume_to_image: a streamOptimized vmdk for vSphere."""
        for image in self.cli('image', 'list', '--name', VOLUME_IMAGE,
                              parse=True):
            self.cli('image', 'delete', image['ID'])
        self.cli('image', 'create', '--volume', VOLUME, '--disk-format',
                 'vmdk', '--container-format', 'bare', VOLUME_IMAGE)
        image = self.wait_image(VOLUME_IMAGE)
        self.wait_volume(VOLUME, 'available')
        props = image.get('properties') or {}
        print('image %s: %s, %s bytes, vmware_disktype=%s '
              'vmware_adaptertype=%s' % (
                  VOLUME_IMAGE, image['disk_format'], image['size'],
                  props.get('vmware_disktype'),
                  props.get('vmware_adaptertype')))
        return image

    def volume_messages(self, name):
        """The user messages Cinder recorded for a volume, one per line."""
        volume = self.cli('volume', 'show', name, parse=True)
        messages = self.cli('--os-volume-api-version', '3.3', 'volume',
                            'message', 'list', parse=True)
        return ['%s %s' % (m.get('Created At', ''), m['User Message'])
                for m in messages if m.get('Resource UUID') == volume['id']]

    def data_image_create(self):
        """A qcow2 image of a 1 GiB disk holding 64 MiB of random data."""
        sys.path.insert(0, services.TOP)
        from tests.fixtures import disks
        for image in self.cli('image', 'list', '--name', DATA_IMAGE,
                              parse=True):
            self.cli('image', 'delete', image['ID'])
        with tempfile.TemporaryDirectory(prefix='xhv-aio-') as tmp:
            raw = os.path.join(tmp, 'data.raw')
            qcow2 = os.path.join(tmp, 'data.qcow2')
            disks.make_data_disk(raw, 1024 ** 3, DATA_SIZE)
            subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O',
                            'qcow2', raw, qcow2], check=True)
            self.cli('image', 'create', '--disk-format', 'qcow2',
                     '--container-format', 'bare', '--file', qcow2,
                     DATA_IMAGE)
        return self.wait_image(DATA_IMAGE)

    def data_volume_create(self):
        for volume in self.cli('volume', 'list', '--name', DATA_VOLUME,
                               parse=True):
            self.cli('volume', 'delete', volume['ID'])
            self.wait_gone('volume', volume['ID'])
        self.cli('volume', 'create', '--image', DATA_IMAGE, '--size', '1',
                 DATA_VOLUME)
        return self.wait_volume(DATA_VOLUME, 'available')

    def upload_as(self, disk_format):
        """image create --volume in ``disk_format``; its messages if not."""
        name = uploaded_image(disk_format)
        for image in self.cli('image', 'list', '--name', name, parse=True):
            self.cli('image', 'delete', image['ID'])
        self.cli('image', 'create', '--volume', DATA_VOLUME, '--disk-format',
                 disk_format, '--container-format', 'bare', name)
        try:
            self.wait_volume(DATA_VOLUME, 'available', timeout=300)
            image = self.wait_image(name, timeout=60)
        except StepFailed as exc:
            msg = '%s; volume messages: %s' % (
                exc, self.volume_messages(DATA_VOLUME) or 'none')
            raise StepFailed(msg) from exc
        print('image %s: %s, %s bytes' % (name, image['disk_format'],
                                          image['size']))
        return image

    def wait_gone(self, kind, ident, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listed = self.cli(kind, 'list', parse=True)
            if not any(item['ID'] == ident for item in listed):
                return
            time.sleep(1)
        msg = '%s %s still listed after %d s' % (kind, ident, timeout)
        raise StepFailed(msg)

    def image_create(self):
        sys.path.insert(0, services.TOP)
        from tests.fixtures import disks
        for image in self.cli('image', 'list', '--name', IMAGE, parse=True):
            self.cli('image', 'delete', image['ID'])
        with tempfile.TemporaryDirectory(prefix='xhv-aio-') as tmp:
            raw = os.path.join(tmp, 'boot.raw')
            vmdk = os.path.join(tmp, 'boot.vmdk')
            disks.make_bootable_disk(raw)
            subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'vmdk',
                            '-o', 'subformat=streamOptimized', raw, vmdk],
                           check=True)
            return self.cli('image', 'create', '--disk-format', 'vmdk',
                            '--container-format', 'bare', '--file', vmdk,
                            '--property', 'vmware_disktype=streamOptimized',
                            IMAGE, parse=True)

    def run(self):
        # What the services run, not this tree: the venv's copy of XHV.
        installed = subprocess.run(
            [os.path.join(self.cloud.bin, 'python'), '-c',
             'import nova_xhv.migration'], cwd='/', capture_output=True)
        no_migration = (None if installed.returncode == 0 else
                        'nova_xhv.migration is not installed in the venv')
        vm1, kvm1, rev = PREFIX + 'vmware', PREFIX + 'kvm', PREFIX + 'revert'
        self.step('hypervisor list --long', lambda: print(self.cli(
            'hypervisor', 'list', '--long')))
        self.step('prepare (flavor, old demo servers)', self.prepare)
        if self.step('image create (tiny bootable disk as vmdk)',
                     self.image_create) is StepFailed:
            return self.finish()
        self.step('server create --nic none on %s' % self.kvm,
                  lambda: self.create_server(kvm1, self.kvm))
        self.step('console log show (KVM): boot marker',
                  lambda: self.wait_marker(kvm1))
        self.step('server delete (KVM)',
                  lambda: self.cli('server', 'delete', '--wait', kvm1))
        booted = self.step('server create --nic none on %s' % self.vmware,
                           lambda: self.create_server(vm1, self.vmware))
        skip = no_migration or (booted is StepFailed and
                                'the vSphere boot failed')
        moved = self.step('server migrate --host %s' % self.kvm,
                          lambda: self.migrate(vm1, self.kvm), skip=skip)
        skip = skip or (moved is StepFailed and 'the migrate failed')
        self.step('server migrate confirm', lambda: (
            self.cli('server', 'migrate', 'confirm', vm1),
            self.wait_server(vm1, 'ACTIVE', self.kvm)), skip=skip)
        self.step('console log show (after move): boot marker',
                  lambda: self.wait_marker(vm1), skip=skip)
        self.step('revert demo: server create on %s' % self.vmware,
                  lambda: self.create_server(rev, self.vmware), skip=skip)
        self.step('revert demo: server migrate --host %s' % self.kvm,
                  lambda: self.migrate(rev, self.kvm), skip=skip)
        self.step('revert demo: server migrate revert', lambda: (
            self.cli('server', 'migrate', 'revert', rev),
            self.wait_server(rev, 'ACTIVE', self.vmware)), skip=skip)
        network_demo.NetworkDemo(self).steps(no_migration)
        families.demo_steps(self, no_migration)
        self.volume_steps()
        self.follow_steps(no_migration)
        self.policy_steps(no_migration)
        if self.region_two:
            cloud_demo.steps(self, no_migration)
        return self.finish()

    # -- the XHV policy ----------------------------------------------------

    def policy_audit(self, expect_broken):
        """xhv-policy audit: exactly these servers break the policy."""
        proc = subprocess.run(
            [os.path.join(self.cloud.bin, 'xhv-policy'), '--config-file',
             self.cloud.conf('nova', 'nova.conf'), 'audit', '--json'],
            capture_output=True, text=True)
        try:
            rows = json.loads(proc.stdout)
        except ValueError:
            rows = None
        if rows is None or proc.returncode not in (0, 1):
            msg = 'xhv-policy audit: exit %d: %s' % (
                proc.returncode, (proc.stderr or proc.stdout)[-1500:])
            raise StepFailed(msg)
        broken = sorted((r['name'], r['host'], ' '.join(r['deny']))
                        for r in rows if r['deny'])
        for row in broken:
            print('audit: %s on %s: %s' % row)
        names = [b[0] for b in broken]
        wanted_rc = 1 if expect_broken else 0
        if names != sorted(expect_broken) or proc.returncode != wanted_rc:
            msg = ('xhv-policy audit (exit %d) found %s, expected %s'
                   % (proc.returncode, broken, expect_broken))
            raise StepFailed(msg)
        return broken

    def policy_seed(self):
        """Placed on vSphere, then tagged pci: before the rule applied."""
        self.create_server(PCI_SERVER, self.vmware)
        self.cli('server', 'set', '--tag', 'pci', PCI_SERVER)
        return self.policy_audit([PCI_SERVER])

    def policy_member_refused(self):
        """A member's server migrate: 403 naming pci-admin-only."""
        import stack
        import xhv_policy
        env = dict(os.environ, **xhv_policy.member_credentials(
            self.cloud, stack.connect()))
        proc = subprocess.run(
            [self.osc, '--os-cloud', 'xhv-aio', 'server', 'migrate',
             '--host', self.kvm, PCI_SERVER], capture_output=True,
            text=True, env=env)
        answer = (proc.stderr + proc.stdout).strip()
        print('member: openstack server migrate --host %s %s: %s'
              % (self.kvm, PCI_SERVER, answer[-400:]))
        if (proc.returncode == 0 or not re.search(r'\b403\b', answer) or
                'pci-admin-only' not in answer):
            msg = 'expected a 403 naming pci-admin-only, got: %s' % answer
            raise StepFailed(msg)
        return self.wait_server(PCI_SERVER, 'ACTIVE', self.vmware)

    def policy_admin_moves(self):
        self.migrate(PCI_SERVER, self.kvm)
        self.cli('server', 'migrate', 'confirm', PCI_SERVER)
        self.wait_server(PCI_SERVER, 'ACTIVE', self.kvm)
        return self.policy_audit([])

    def policy_steps(self, no_migration):
        seeded = self.step('policy: server create on %s, server set --tag '
                           'pci; xhv-policy audit finds it' % self.vmware,
                           self.policy_seed)
        skip = seeded is StepFailed and 'no seeded server'
        refused = self.step('policy: member server migrate -> 403 '
                            'pci-admin-only', self.policy_member_refused,
                            skip=skip)
        skip = no_migration or skip or (refused is StepFailed and
                                        'the member was not refused')
        self.step('policy: admin server migrate --host %s, confirm; '
                  'audit clean' % self.kvm, self.policy_admin_moves,
                  skip=skip)

    # -- a data volume follows its server vSphere -> KVM -------------------

    def follow_volume_file(self, volume_id):
        import block_storage
        return os.path.join(block_storage.BlockStorage(self.cloud).export,
                            'volume-%s' % volume_id)

    def follow_volume_create(self):
        """A raw 1 GiB volume; a known pattern written into its NFS file."""
        sys.path.insert(0, services.TOP)
        from tests.fixtures import disks
        for volume in self.cli('volume', 'list', '--name', FOLLOW_VOLUME,
                               parse=True):
            self.cli('volume', 'delete', volume['ID'])
            self.wait_gone('volume', volume['ID'])
        self.cli('volume', 'create', '--size', '1', FOLLOW_VOLUME)
        volume = self.wait_volume(FOLLOW_VOLUME, 'available')
        path = self.follow_volume_file(volume['id'])
        disks.make_raw_disk(path, 1024 ** 3, seed=FOLLOW_SEED)
        os.chmod(path, 0o666)  # as a guest's data: any user may write
        self.follow_sum = disks.sha256_file(path)
        print('%s: %s sha256 %s' % (FOLLOW_VOLUME, path, self.follow_sum))
        return volume

    def follow_attach(self):
        self.cli('server', 'add', 'volume', FOLLOW_SERVER, FOLLOW_VOLUME)
        self.wait_volume(FOLLOW_VOLUME, 'in-use')
        return self.follow_check(self.vmware)

    def follow_check(self, host):
        """server show lists the volume; volume show: attached on host."""
        server = self.cli('server', 'show', FOLLOW_SERVER, parse=True)
        volume = self.cli('volume', 'show', FOLLOW_VOLUME, parse=True)
        if volume['id'] not in str(server.get('volumes_attached')):
            msg = ('server show %s does not list %s: %s' % (
                FOLLOW_SERVER, volume['id'], server.get('volumes_attached')))
            raise StepFailed(msg)
        where = [(a.get('server_id'), a.get('host_name'))
                 for a in volume.get('attachments') or []]
        if where != [(server['id'], host)]:
            msg = ('volume show %s: attachments %s, not one to %s on %s'
                   % (FOLLOW_VOLUME, where, server['id'], host))
            raise StepFailed(msg)
        print('%s attached to %s on %s' % (FOLLOW_VOLUME, FOLLOW_SERVER,
                                           host))
        return volume

    def follow_confirm(self):
        sys.path.insert(0, services.TOP)
        from tests.fixtures import disks
        self.cli('server', 'migrate', 'confirm', FOLLOW_SERVER)
        self.wait_server(FOLLOW_SERVER, 'ACTIVE', self.kvm)
        self.wait_volume(FOLLOW_VOLUME, 'in-use')
        volume = self.follow_check(self.kvm)
        after = disks.sha256_file(self.follow_volume_file(volume['id']))
        print('%s sha256 before %s, after %s' % (FOLLOW_VOLUME,
                                                 self.follow_sum, after))
        if after != self.follow_sum:
            msg = '%s changed during the move' % FOLLOW_VOLUME
            raise StepFailed(msg)
        return volume

    def follow_steps(self, no_migration):
        made = self.step('volume follows: volume create --size 1 (raw, '
                         'pattern written into its file)',
                         self.follow_volume_create)
        skip = made is StepFailed and 'no volume'
        booted = self.step('volume follows: server create on %s'
                           % self.vmware, lambda: self.create_server(
                               FOLLOW_SERVER, self.vmware), skip=skip)
        skip = skip or (booted is StepFailed and 'the vSphere boot failed')
        added = self.step('volume follows: server add volume (vSphere)',
                          self.follow_attach, skip=skip)
        skip = no_migration or skip or (added is StepFailed and
                                        'the attach failed')
        moved = self.step('volume follows: server migrate --host %s'
                          % self.kvm, lambda: self.migrate(
                              FOLLOW_SERVER, self.kvm), skip=skip)
        skip = skip or (moved is StepFailed and 'the migrate failed')
        self.step('volume follows: server migrate confirm; attached on '
                  'KVM, same bytes', self.follow_confirm, skip=skip)

    def volume_steps(self):
        """Cinder with XHV's volume driver around the NFS driver."""
        self.step('volume service list: cinder-volume up',
                  self.volume_services)
        made = self.step('volume create --image (vmdk image -> volume)',
                         self.volume_from_image)
        skip = made is StepFailed and 'no volume'
        uploaded = self.step('image create --volume --disk-format vmdk',
                             self.image_from_volume, skip=skip)
        skip = skip or (uploaded is StepFailed and 'no image')
        self.step('server create on %s from the volume-made image'
                  % self.vmware, lambda: self.create_server(
                      VOLUME_IMAGE, self.vmware, image=VOLUME_IMAGE),
                  skip=skip)
        self.data_steps()

    def data_steps(self):
        """64 MiB of data: image -> volume -> an image in each format."""
        made = self.step('image create (1 GiB qcow2, 64 MiB of data)',
                         self.data_image_create)
        skip = made is StepFailed and 'no data image'
        made = self.step('volume create --image (64 MiB of data)',
                         self.data_volume_create, skip=skip)
        skip = skip or (made is StepFailed and 'no data volume')
        for disk_format in UPLOAD_FORMATS:
            self.step('image create --volume (64 MiB) --disk-format %s'
                      % disk_format,
                      lambda f=disk_format: self.upload_as(f), skip=skip)

    def final_state(self):
        """Each server with its compute host and hypervisor type."""
        types = {h['Hypervisor Hostname']: h['Hypervisor Type']
                 for h in self.cli('hypervisor', 'list', '--long',
                                   parse=True)}
        rows = [('server', 'status', 'compute host', 'hypervisor type')]
        for server in self.cli('server', 'list', parse=True):
            show = self.cli('server', 'show', server['ID'], parse=True)
            rows.append((show['name'], show['status'],
                         show.get('OS-EXT-SRV-ATTR:host') or '-',
                         types.get(show.get(
                             'OS-EXT-SRV-ATTR:hypervisor_hostname'), '-')))
        widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
        lines = []
        for row in rows:
            cells = [str(v).ljust(w) for v, w in zip(row, widths)]
            lines.append('  '.join(cells).rstrip())
        return '\n'.join(lines)

    def finish(self):
        try:
            final = self.final_state()
        except StepFailed as exc:
            final = str(exc)
        width = max(len(r[0]) for r in self.rows)
        print('\n%-*s  %8s  %s' % (width, 'step', 'seconds', 'result'))
        print('-' * (width + 30))
        for title, secs, result in self.rows:
            print('%-*s  %8s  %s' % (width, title, secs, result))
        print('\nFinal state:\n' + final)
        failed = [r for r in self.rows if r[2] == 'FAILED']
        return 1 if failed else 0
