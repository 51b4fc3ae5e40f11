"""CI smoke test: ``tools/xhv-aio demo`` end to end, then ``down``.

Runs the real all-in-one cloud (MariaDB, RabbitMQ, Keystone, Glance,
Placement, neutron-server with OVN + XHV's ML2 driver on Open vSwitch/OVN
in userspace, Nova with a KVM compute, a vSphere compute on vcsim, a
Hyper-V compute on the WinRM simulator and its Samba share and a Xen
compute on the xapi simulator, Cinder with XHV's volume driver around the
NFS driver, and RegionTwo with a stock libvirt compute behind RegionOne's
XHV cloud compute: region_two_checks.py) in its own state directory,
checks the demo's step table and what the ``openstack`` CLI sees -- down
to the bytes of the vmdk image Cinder made from a volume, and the DHCP
lease a moved Linux guest prints for its port -- and tears it all down,
asserting that no process, mount, libvirt domain, network namespace or
OVS bridge device of it (simulators and smbd included) is left.  Needs
root and the services' ports (5000, 8774, 8776, 8778, 9292, 9696, 3306,
5672, 8989, 5986, 4445, 8443; RegionTwo 9392, 8878, 9796, 8874, 8803)
free.
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from tests.fixtures import disks

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(TOP, 'tools', 'aio'))
import demo as aio_demo  # noqa: E402  (tools/aio is no package)
import families as aio_families  # noqa: E402
import network as aio_network  # noqa: E402
import network_demo as aio_network_demo  # noqa: E402
from tests.functional.aio import region_two_checks  # noqa: E402
AIO = os.path.join(TOP, 'tools', 'xhv-aio')
STATE = os.environ.get('XHV_AIO_TEST_DIR', '/var/lib/xhv-aio-test')
PORTS = (5000, 8774, 8776, 8778, 9292, 9696, 3306, 5672, 8989) + tuple(
    aio_families.PORTS.values())
OPENSTACK = os.path.join(os.environ.get('XHV_VENV', '/opt/xhv/venv'), 'bin',
                         'openstack')
# Steps that need the cross-hypervisor migration; the demo marks them
# SKIPPED only when nova_xhv.migration is not installed at all.
QEMU_FORMAT = {'vmdk': 'vmdk', 'qcow2': 'qcow2', 'raw': 'raw', 'vhd': 'vpc',
               'vhdx': 'vhdx'}
MIGRATION_STEPS = ('server migrate --host', 'server migrate confirm',
                   'console log show (after move)', 'revert demo',
                   'volume follows: server migrate',
                   'policy: admin server migrate',
                   'network: server migrate',
                   "network: console log show (KVM): the port's MAC",
                   'hyperv: server migrate', 'hyperv: console log show',
                   'xen: server migrate', 'xen: console log show',
                   'cloud: server migrate', 'cloud: console log show (KVM',
                   'cloud: console log show (RegionTwo, from')
# Domains of Nova-harness tests (tests/functional/nova_base.py) and of the
# guest probe (nova_xhv.guest_probe.DOMAIN_PREFIX).
HARNESS_DOMAIN = re.compile(r'xhv-[0-9a-f]{8}-[0-9a-f]{8}$')
PROBE_DOMAIN = 'xhv-probe-'
# The network daemons of tools/aio/network.py, by their command names.
NETWORK_COMMANDS = ('ovsdb-server', 'ovs-vswitchd', 'ovn-northd',
                    'ovn-controller')

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason='the all-in-one cloud needs root')


def aio(*args, timeout=1500):
    env = dict(os.environ, XHV_AIO_DIR=STATE)
    return subprocess.run([AIO] + list(args), env=env, capture_output=True,
                          text=True, timeout=timeout)


def port_busy(port):
    with socket.socket() as s:
        return s.connect_ex(('127.0.0.1', port)) == 0


def domains():
    proc = subprocess.run(['virsh', '-c', 'qemu:///system', 'list', '--all',
                           '--uuid'], capture_output=True, text=True)
    return set(proc.stdout.split())


def domains_left(before):
    """{uuid: name} of domains made since ``before`` that may be the cloud's.

    libvirtd is shared: CI runs the Nova-harness tests beside this one
    (tools/run-tests), their domains named HARNESS_DOMAIN, never the
    cloud's (``xhv-aio-%08x``).  The guest probe's throwaway domains, the
    cloud's or a harness test's, are gone within a probe's time: waited
    for.
    """
    def left():
        found = {}
        for name in subprocess.run(
                ['virsh', '-c', 'qemu:///system', 'list', '--all', '--name'],
                capture_output=True, text=True).stdout.split():
            uuid = subprocess.run(
                ['virsh', '-c', 'qemu:///system', 'domuuid', name],
                capture_output=True, text=True).stdout.strip()
            if uuid and uuid not in before and not HARNESS_DOMAIN.match(
                    name):
                found[uuid] = name
        return found

    deadline = time.monotonic() + 300
    found = left()
    while (time.monotonic() < deadline and found and
           all(n.startswith(PROBE_DOMAIN) for n in found.values())):
        time.sleep(1)
        found = left()
    return found


def cli(*args):
    proc = subprocess.run([OPENSTACK, '--os-cloud', 'xhv-aio'] + list(args) +
                          ['-f', 'json'], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, (args, proc.stderr)
    return json.loads(proc.stdout)


def qemu_img(*args):
    proc = subprocess.run(['qemu-img'] + list(args), capture_output=True,
                          text=True, timeout=60)
    return proc


def our_processes():
    """PIDs whose command line names the test cloud's state folder."""
    found = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % entry, 'rb') as f:
                argv = f.read().decode(errors='replace')
        except OSError:
            continue
        # Every service, and the privsep helpers Nova and Cinder spawn,
        # gets a config file or folder from there.
        if STATE in argv:
            found.append((int(entry), argv.replace('\0', ' ')[:200]))
    return found


def our_mounts():
    with open('/proc/mounts') as f:
        return [line.split()[1] for line in f
                if len(line.split()) > 1 and
                line.split()[1].startswith(STATE)]


def check_block_storage():
    """What XHV's volume driver did, seen through the CLI and the bytes."""
    services = cli('volume', 'service', 'list')
    states = {(s['Binary'], s['Host']): s['State'] for s in services}
    assert states.get(('cinder-volume', 'aio-cinder@xhv-nfs')) == 'up', states
    assert states.get(('cinder-scheduler', 'aio-cinder')) == 'up', states

    volume = cli('volume', 'show', 'xhv-demo-volume')
    assert volume['status'] == 'available', volume
    assert volume['type'] == 'xhv-nfs', volume
    # XHV recorded the format it stored the image's guest data in.
    assert volume['properties'].get('xhv_format') == 'raw', volume

    base = cli('image', 'show', 'xhv-demo-boot')
    image = cli('image', 'show', 'xhv-demo-from-volume')
    assert image['status'] == 'active', image
    assert image['disk_format'] == 'vmdk', image
    props = image['properties']
    assert props.get('vmware_disktype') == 'streamOptimized', props
    assert props.get('vmware_adaptertype') == 'lsiLogic', props
    # The bytes in Glance's file store: a streamOptimized vmdk (stock
    # Cinder uploads monolithicSparse) holding the boot disk's guest data.
    images = os.path.join(STATE, 'lib', 'glance', 'images')
    path = os.path.join(images, image['id'])
    info = qemu_img('info', '--output', 'json', path)
    assert info.returncode == 0, info.stderr
    info = json.loads(info.stdout)
    assert info['format'] == 'vmdk', info
    assert info['format-specific']['data']['create-type'] == \
        'streamOptimized', info
    assert info['virtual-size'] == 1024 ** 3, info
    same = qemu_img('compare', '-f', 'vmdk', '-F', 'vmdk',
                    os.path.join(images, base['id']), path)
    assert same.returncode == 0, same.stdout + same.stderr


def check_uploads(tmp):
    """Every format the demo uploaded: downloaded, its format and data.

    The demo made DATA_VOLUME from a qcow2 image of a 1 GiB disk holding
    64 MiB of random data and uploaded it as each of UPLOAD_FORMATS; each
    image, fetched with ``openstack image save``, must be that format and
    hold the same guest data as the source image.
    """
    base = cli('image', 'show', aio_demo.DATA_IMAGE)
    source = os.path.join(STATE, 'lib', 'glance', 'images', base['id'])
    extents = disks.data_extents(1024 ** 3, aio_demo.DATA_SIZE)
    assert sum(len(data) for _, data in extents) >= 64 * 1024 ** 2
    for disk_format in aio_demo.UPLOAD_FORMATS:
        image = cli('image', 'show', aio_demo.uploaded_image(disk_format))
        assert image['status'] == 'active', image
        assert image['disk_format'] == disk_format, image
        path = os.path.join(tmp, 'upload.' + disk_format)
        saved = subprocess.run([OPENSTACK, '--os-cloud', 'xhv-aio', 'image',
                                'save', '--file', path, image['id']],
                               capture_output=True, text=True, timeout=300)
        assert saved.returncode == 0, saved.stderr
        info = qemu_img('info', '--output', 'json', path)
        assert info.returncode == 0, info.stderr
        info = json.loads(info.stdout)
        assert info['format'] == QEMU_FORMAT[disk_format], info
        if disk_format == 'vmdk':
            assert info['format-specific']['data']['create-type'] == \
                'streamOptimized', info
        same = qemu_img('compare', '-f', QEMU_FORMAT[disk_format], '-F',
                        'qcow2', path, source)
        assert same.returncode == 0, (disk_format, same.stdout + same.stderr)
        if disk_format == 'raw':
            # Independently of qemu-img: the pattern's bytes where written.
            assert disks.check_extents(path, extents)
        os.unlink(path)


def check_volume_followed(tmp):
    """The data volume moved with its server: attached on KVM, same bytes.

    The demo wrote disks.make_raw_disk's pattern (seed FOLLOW_SEED) into
    the volume's file before attaching it on vSphere; after the move and
    the confirm the file must still be exactly that disk.
    """
    server = cli('server', 'show', aio_demo.FOLLOW_SERVER)
    assert server['status'] == 'ACTIVE', server
    assert server['OS-EXT-SRV-ATTR:host'] == 'aio-kvm', server
    volume = cli('volume', 'show', aio_demo.FOLLOW_VOLUME)
    assert volume['id'] in str(server['volumes_attached']), server
    assert volume['status'] == 'in-use', volume
    assert [(a['server_id'], a['host_name'])
            for a in volume['attachments']] == [(server['id'],
                                                 'aio-kvm')], volume
    path = os.path.join(STATE, 'lib', 'cinder', 'nfs-export',
                        'volume-%s' % volume['id'])
    expected = os.path.join(tmp, 'follow.raw')
    extents = disks.make_raw_disk(expected, 1024 ** 3,
                                  seed=aio_demo.FOLLOW_SEED)
    assert disks.check_extents(path, extents)
    assert disks.sha256_file(path) == disks.sha256_file(expected)
    # libvirt's domain on the KVM compute opens that file through Nova's
    # mount of the share.
    xml = subprocess.run(['virsh', '-c', 'qemu:///system', 'dumpxml',
                          server['id']], capture_output=True, text=True)
    assert xml.returncode == 0, xml.stderr
    assert '/volume-%s' % volume['id'] in xml.stdout, xml.stdout


def check_policy(output):
    """The XHV policy through the CLI: audit, 403 with the rule, a move."""
    # The demo's audit of the seeded server (placed on vSphere, then
    # tagged pci) named rule pci-on-kvm; the member got a 403 naming
    # pci-admin-only from nova-api's admission filter.
    assert re.search(r'audit: xhv-demo-pci on aio-vmware: .*pci-on-kvm',
                     output), output
    assert re.search(r'member: openstack server migrate .*\b403\b.*'
                     r'refused by XHV policy rule pci-admin-only', output), \
        output
    server = cli('server', 'show', aio_demo.PCI_SERVER)
    assert 'pci' in server['tags'], server
    assert server['status'] == 'ACTIVE', server
    assert server['OS-EXT-SRV-ATTR:host'] == 'aio-kvm', server
    # The member's request never reached a compute: the only migration of
    # the server is the admin's, confirmed.
    migrations = cli('server', 'migration', 'list', '--server',
                     aio_demo.PCI_SERVER)
    assert [m['Status'] for m in migrations] == ['confirmed'], migrations
    audit = subprocess.run(
        [os.path.join(os.path.dirname(OPENSTACK), 'xhv-policy'),
         '--config-file', os.path.join(STATE, 'etc', 'nova', 'nova.conf'),
         'audit', '--json'], capture_output=True, text=True, timeout=120)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert not [r for r in json.loads(audit.stdout) if r['deny']], \
        audit.stdout


def namespaces():
    proc = subprocess.run(['ip', 'netns', 'list'], capture_output=True,
                          text=True)
    return set(line.split()[0] for line in proc.stdout.splitlines()
               if line.strip())


def device_exists(name):
    return subprocess.run(['ip', 'link', 'show', name],
                          capture_output=True).returncode == 0


def network_processes():
    """Our OVS/OVN daemons: their command lines name the state folder."""
    return [(pid, argv) for pid, argv in our_processes()
            if os.path.basename(argv.split(' ', 1)[0]) in NETWORK_COMMANDS]


def check_network(output):
    """The moved guest leased its port's IP for its port's MAC.

    The demo printed the port (id, MAC, IP, binding) on vSphere before the
    move and on KVM after it; the CLI must show the same port now, and the
    guest's console (``console log show``) a NIC with that MAC and the
    DHCP lease of that IP, which only OVN could have answered.
    """
    lines = {m.group(1): m.groups()[1:] for m in
             aio_network_demo.PORT_LINE.finditer(output)}
    assert set(lines) == {'before', 'after'}, output
    port_id, mac, ip, host, vif_type = lines['before']
    assert (host, vif_type) == ('aio-vmware', 'dvs'), lines
    assert lines['after'] == (port_id, mac, ip, 'aio-kvm', 'ovs'), lines
    server = cli('server', 'show', aio_network_demo.SERVER)
    assert (server['status'], server['OS-EXT-SRV-ATTR:host']) == (
        'ACTIVE', 'aio-kvm'), server
    ports = cli('port', 'list', '--server', server['id'])
    assert [p['ID'] for p in ports] == [port_id], ports
    port = cli('port', 'show', port_id)
    assert port['mac_address'] == mac, port
    assert [f['ip_address'] for f in port['fixed_ips']] == [ip], port
    assert (port['binding_host_id'], port['binding_vif_type']) == (
        'aio-kvm', 'ovs'), port
    console = subprocess.run([OPENSTACK, '--os-cloud', 'xhv-aio', 'console',
                              'log', 'show', server['id']],
                             capture_output=True, text=True, timeout=60)
    assert console.returncode == 0, console.stderr
    guest = aio_network_demo._linux_guest()
    assert mac in guest.nics(console.stdout), console.stdout[-2000:]
    assert guest.leases(console.stdout) == {mac: ip}, console.stdout[-2000:]


FAMILY_STEPS = (
    'hypervisor list: four families',
    'hyperv: server create --nic none on aio-vmware',
    'hyperv: server migrate --host aio-hyperv + confirm',
    'hyperv: server migrate --host aio-kvm + confirm',
    'hyperv: console log show (KVM, vmdk->vhdx->qcow2): boot marker',
    'xen: server create --nic none on aio-kvm',
    'xen: server migrate --host aio-xen + revert',
    'xen: server migrate --host aio-xen + confirm',
    'xen: server migrate --host aio-kvm + confirm',
    'xen: console log show (KVM, qcow2->vhd->qcow2): boot marker')


def check_families(rows):
    """The moves through Hyper-V and Xen, seen through the CLI and hosts."""
    for title in FAMILY_STEPS:
        assert rows.get(title, ('', ''))[1] == 'ok', (title, rows)
    hyperv = cli('server', 'show', aio_families.HYPERV_SERVER)
    xen = cli('server', 'show', aio_families.XEN_SERVER)
    for server in (hyperv, xen):
        assert server['status'] == 'ACTIVE', server
        assert server['OS-EXT-SRV-ATTR:host'] == 'aio-kvm', server
    # Where each migration went, oldest first (Nova's records).
    for server, wanted in ((hyperv, [('aio-vmware', 'aio-hyperv',
                                      'confirmed'),
                                     ('aio-hyperv', 'aio-kvm',
                                      'confirmed')]),
                           (xen, [('aio-kvm', 'aio-xen', 'reverted'),
                                  ('aio-kvm', 'aio-xen', 'confirmed'),
                                  ('aio-xen', 'aio-kvm', 'confirmed')])):
        migrations = cli('server', 'migration', 'list', '--server',
                         server['id'], '--sort-column', 'Id')
        assert [(m['Source Compute'], m['Dest Compute'], m['Status'])
                for m in migrations] == wanted, migrations
    # The servers left both simulated hosts without a trace: no VM, no
    # disk file on the Hyper-V host's share or in the Xen SR.
    lib = os.path.join(STATE, 'lib')
    with open(os.path.join(lib, 'hyperv', 'host', 'state.json')) as f:
        assert json.load(f)['vms'] == []
    for folder in (os.path.join(lib, 'hyperv', 'storage'),
                   os.path.join(lib, 'xapi', 'state')):
        left = [os.path.join(d, n) for d, _, names in os.walk(folder)
                for n in names if n.endswith(('.vhdx', '.vhd', '.raw'))]
        assert not left, left


def process_groups(names):
    """Every live process in the process groups of these services."""
    status = aio('status').stdout
    pgids = set()
    for line in status.splitlines():
        fields = line.split()
        if fields and fields[0] in names and fields[1].isdigit():
            pgids.add(int(fields[1]))
    return members(pgids), pgids


def zombie(pid):
    """Exited, not yet reaped (by init, for a service's orphans)."""
    try:
        with open('/proc/%d/status' % pid) as f:
            return 'State:\tZ' in f.read()
    except OSError:
        return True


def members(pgids):
    found = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) in pgids and not zombie(int(entry)):
                found.append(int(entry))
        except OSError:
            continue
    return found


def step_table(output):
    """{step title: (seconds, result)} parsed from the demo's table."""
    rows = {}
    table = output.split('\nstep ', 1)[-1]
    for line in table.splitlines()[2:]:
        match = re.match(r'^(.+?)\s{2,}(\S+)\s{2}(ok|FAILED|SKIPPED: .*)$',
                         line)
        if not match:
            break
        rows[match.group(1).strip()] = (match.group(2), match.group(3))
    return rows


@pytest.mark.timeout(2400)
def test_demo_end_to_end_then_down():
    busy = [p for p in PORTS if port_busy(p)]
    assert not busy, ('ports %s are in use: another cloud runs here (stop it '
                      'with tools/xhv-aio down)' % busy)
    before = domains()
    netns_before = namespaces()
    start = time.monotonic()
    # RegionTwo too: the cloud backend's remote (tools/aio/region_two.py).
    demo = aio('demo', '--with-region-two', timeout=2100)
    elapsed = time.monotonic() - start
    try:
        output = demo.stdout + demo.stderr
        logs = ''
        if demo.returncode:
            logs = aio('logs', '-n', '25').stdout
        print(output)
        print('xhv-aio demo took %.0f s' % elapsed)
        rows = step_table(demo.stdout)
        assert rows, 'no step table in the output:\n%s\n%s' % (output, logs)
        for title, (secs, result) in rows.items():
            if result.startswith('SKIPPED') and title.startswith(
                    MIGRATION_STEPS):
                assert 'not installed' in result, (title, result, logs)
                continue
            assert result == 'ok', '%s: %s\n%s\n%s' % (title, result,
                                                       output, logs)
        for needed in ('image create', 'server create --nic none on aio-kvm',
                       'console log show (KVM): boot marker',
                       'server create --nic none on aio-vmware',
                       'volume service list', 'volume create --image',
                       'image create --volume',
                       'server create on aio-vmware from the volume-made',
                       'volume create --image (64 MiB of data)',
                       'volume follows: server add volume',
                       'volume follows: server migrate confirm',
                       'policy: server create on aio-vmware',
                       'policy: member server migrate -> 403',
                       'network: network create',
                       'network: server create --network on aio-vmware'):
            assert any(t.startswith(needed) for t in rows), needed
        assert demo.returncode == 0, output + logs
        final = demo.stdout.split('Final state:', 1)[1]
        if rows['server migrate confirm'][1] == 'ok':
            # Born on vSphere, confirmed on KVM; the reverted one is back.
            assert re.search(r'xhv-demo-vmware\s+ACTIVE\s+aio-kvm\s+QEMU',
                             final), final
            assert re.search(r'xhv-demo-revert\s+ACTIVE\s+aio-vmware\s+'
                             r'VMware', final), final

        hypervisors = subprocess.run(
            [os.path.join(os.environ.get('XHV_VENV', '/opt/xhv/venv'),
                          'bin', 'openstack'), '--os-cloud', 'xhv-aio',
             'hypervisor', 'list', '--long', '-f', 'value', '-c',
             'Hypervisor Type', '-c', 'State'],
            capture_output=True, text=True, timeout=60)
        assert hypervisors.returncode == 0, hypervisors.stderr
        kinds = sorted(hypervisors.stdout.splitlines())
        assert kinds == ['QEMU up', 'VMware vCenter Server up', 'cloud up',
                         'hyperv up', 'xen up'], kinds
        region_two_checks.check_steps(rows)
        region_two_checks.check_output(demo.stdout)
        region_two_checks.check_region_two_after_demo(STATE)
        if not any(r[1].startswith('SKIPPED') for r in rows.values()):
            check_families(rows)
        try:
            check_block_storage()
            with tempfile.TemporaryDirectory(prefix='xhv-smoke-') as tmp:
                start = time.monotonic()
                check_uploads(tmp)
                print('downloading and checking the %d uploads took %.0f s'
                      % (len(aio_demo.UPLOAD_FORMATS),
                         time.monotonic() - start))
                if rows['volume follows: server migrate confirm; '
                        'attached on KVM, same bytes'][1] == 'ok':
                    start = time.monotonic()
                    check_volume_followed(tmp)
                    print('checking the volume that followed took %.0f s'
                          % (time.monotonic() - start))
        except AssertionError as exc:
            tails = aio('logs', 'cinder-api', 'cinder-scheduler',
                        'cinder-volume', '-n', '25').stdout
            raise AssertionError('%s\n%s' % (exc, tails)) from exc
        if rows['policy: admin server migrate --host aio-kvm, confirm; '
                'audit clean'][1] == 'ok':
            check_policy(demo.stdout)
        if rows["network: console log show (KVM): the port's MAC and its "
                'DHCP lease'][1] == 'ok':
            check_network(demo.stdout)
        assert network_processes(), 'no OVS/OVN daemon of the cloud runs'
        status = aio('status')
        assert status.returncode == 0, status.stdout
        for name in ('nova-compute-vmware', 'cinder-api', 'cinder-scheduler',
                     'cinder-volume', 'nova-compute-hyperv',
                     'nova-compute-xenapi') + aio_families.SERVICES:
            assert name in status.stdout, status.stdout
        assert our_mounts(), 'the xhv-nfs share is not bind-mounted'
    finally:
        # smbd forks a child per client, under its own name: what the
        # simulators' and smbd's process groups hold must go with down.
        simulated, pgids = process_groups(aio_families.SERVICES)
        down = aio('down', timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    after = aio('status')
    assert 'nothing running' in after.stdout, after.stdout
    assert not [p for p in PORTS if port_busy(p)]
    region_two_checks.check_gone()
    assert not domains_left(before), 'domains left: %s' % domains_left(
        before)
    assert not our_mounts(), 'mounts left: %s' % our_mounts()
    assert not network_processes(), network_processes()
    assert not our_processes(), 'processes left: %s' % our_processes()
    assert namespaces() <= netns_before, namespaces() - netns_before
    for device in (aio_network.BRIDGE, aio_network.EXT_BRIDGE):
        assert not device_exists(device), '%s left' % device
    assert len(pgids) == len(aio_families.SERVICES), pgids
    assert simulated and not members(pgids), 'left: %s' % members(pgids)
