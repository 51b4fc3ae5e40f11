"""The smoke test's checks of RegionTwo (tools/aio/region_two.py).

``tools/xhv-aio demo --with-region-two`` runs the federation steps of
tools/aio/cloud_demo.py; these read back what they left: RegionOne's cloud
compute listed as a hypervisor, each revert's source disk byte-identical
(the sums the demo printed), the migrations Nova recorded, nothing of the
deleted servers left in RegionTwo but the backend's image cache, the
application credential only in a private file, and after ``down`` no
RegionTwo service, port or ``xhv-r2-`` domain.
"""

import json
import os
import re
import socket
import subprocess
import sys

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(TOP, 'tools', 'aio'))
import cloud_demo  # noqa: E402  (tools/aio is no package)
import region_two  # noqa: E402

OPENSTACK = os.path.join(os.environ.get('XHV_VENV', '/opt/xhv/venv'), 'bin',
                         'openstack')
PORTS = tuple(region_two.PORTS.values()) + (region_two.EXCHANGE_PORT,)
# The demo's steps, each of which must have run and passed.
STEPS = (
    'cloud: server create --nic none on aio-cloud (RegionTwo, stock '
    'libvirt)',
    'cloud: console log show (RegionTwo): boot marker',
    'cloud: server migrate --host aio-kvm + revert; remote disk '
    'byte-identical',
    'cloud: server migrate --host aio-kvm + confirm',
    'cloud: console log show (KVM, from the cloud): boot marker',
    'cloud: server migrate --host aio-cloud + revert; KVM disk '
    'byte-identical',
    'cloud: server migrate --host aio-cloud + confirm',
    'cloud: console log show (RegionTwo, from KVM): boot marker',
    'cloud: server create --nic none on aio-vmware',
    'cloud: server migrate --host aio-cloud (from vSphere) + confirm',
    'cloud: console log show (RegionTwo, from vSphere): boot marker',
    'cloud: server migration list',
    'cloud: server delete; RegionTwo keeps no server, only its image '
    'cache')


def cli(*args, region=None):
    argv = [OPENSTACK, '--os-cloud', 'xhv-aio']
    if region:
        argv += ['--os-region-name', region]
    proc = subprocess.run(argv + list(args) + ['-f', 'json'],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, (args, proc.stderr)
    return json.loads(proc.stdout)


def check_steps(rows):
    for title in STEPS:
        assert title in rows, 'step %r missing: %s' % (title, sorted(rows))
        assert rows[title][1] == 'ok', (title, rows[title])


def check_output(output):
    """What the demo printed: sums equal, migrations recorded."""
    sums = re.findall(r'xhv-demo-cloud: (\S+) sha256 before (\w+), after '
                      r'the revert (\w+) \((\S+)\)', output)
    assert len(sums) == 2, sums
    remote, kvm = sums
    assert '/region-two/nova-r2-kvm/instances/' in remote[0], remote
    assert '/nova-aio-kvm/instances/' in kvm[0], kvm
    for path, before, after, after_path in sums:
        assert len(before) == 64 and before == after, (path, before, after)
        assert path == after_path
    table = output.split('xhv-aio: cloud: server migration list\n', 1)[1]
    table = table.split('xhv-aio: ', 1)[0]
    statuses = re.findall(r'\|\s*(reverted|confirmed)\s*\|', table)
    # KVM revert + confirm, cloud revert + confirm: four moves recorded.
    assert sorted(statuses) == ['confirmed', 'confirmed', 'reverted',
                                'reverted'], table
    assert re.search(r'RegionTwo server \S+ \(xhv-[0-9a-f-]{36}\) on '
                     r'r2-kvm, ACTIVE', output), output[-3000:]


def check_region_two_after_demo(state):
    """RegionTwo after the demo: its compute up, nothing of ours left."""
    hypervisors = cli('hypervisor', 'list', '--long',
                      region=region_two.REGION)
    assert [(h['Hypervisor Type'], h['State']) for h in hypervisors] == [
        ('QEMU', 'up')], hypervisors
    services = cli('compute', 'service', 'list', region=region_two.REGION)
    assert ('nova-compute', region_two.HOST, 'up') in {
        (s['Binary'], s['Host'], s['State']) for s in services}, services
    with open(os.path.join(state, 'etc', 'region-two', 'nova-compute',
                           'nova-compute.conf')) as f:
        assert 'compute_driver = libvirt.LibvirtDriver' in f.read()
    assert not cli('server', 'list', '--all-projects',
                   region=region_two.REGION)
    for image in cli('image', 'list', '--long', region=region_two.REGION):
        tags = image.get('Tags') or []
        assert any(t.startswith(cloud_demo.CACHE_TAG_PREFIX)
                   for t in tags), image
    # The application credential: only in a file only root reads.
    path = os.path.join(state, 'etc', 'region-two', 'clouds.yaml')
    assert os.stat(path).st_mode & 0o777 == 0o600
    with open(path) as f:
        secret = re.search(r'application_credential_secret: (\S+)',
                           f.read()).group(1)
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        for what in ('cmdline', 'environ'):
            try:
                with open('/proc/%s/%s' % (pid, what), 'rb') as f:
                    data = f.read()
            except OSError:
                continue
            assert secret.encode() not in data, (pid, what)
    log = os.path.join(state, 'log', region_two.CLOUD_COMPUTE + '.log')
    with open(log, 'rb') as f:
        assert secret.encode() not in f.read(), log


def port_busy(port):
    with socket.socket() as s:
        return s.connect_ex(('127.0.0.1', port)) == 0


def check_gone():
    """After down: no RegionTwo port answers, no xhv-r2- domain."""
    assert not [p for p in PORTS if port_busy(p)], PORTS
    assert not region_two.domains(), region_two.domains()
