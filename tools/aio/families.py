"""The all-in-one's Hyper-V and Xen computes, on the test simulators.

A Hyper-V compute (``[xhv] backend = hyperv``) drives the WinRM simulator
(tests/simulators/hyperv: unmodified pywinrm over HTTPS with NTLM, TLS
verified against the simulator's own CA) and reads and writes disks on a
real Samba share of the simulated host's VM storage; a Xen compute
(``backend = xenapi``) drives the xapi simulator (tests/simulators/xenapi:
unmodified XenAPI.Session over HTTPS, same kind of CA).  The three run as
services of the all-in-one (``hyperv-sim``, ``smbd``, ``xapi-sim``:
started, stopped, listed and logged like the others) on fixed ports no
other service of the all-in-one uses.  Their passwords live in
``secrets.json`` and in files only root reads (the simulators' password
and settings files, Samba's passdb, the computes' configs), never in a
command line or an environment.

``demo_steps`` adds the demo's moves through both families (openstack CLI
only, servers with ``--nic none``).  ``XHV_AIO_COMPUTES`` (a comma list of
backends, default all) limits the computes ``up`` starts: the figures in
doc/source/aio.rst compare an ``up`` with and without these two.
"""

import json
import os
import shutil
import socket
import ssl
import sys
import urllib.error
import urllib.request
import uuid as uuidlib

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))

BACKENDS = ('hyperv', 'xenapi')
HOSTS = {'hyperv': 'aio-hyperv', 'xenapi': 'aio-xen'}
# Stopped after the computes, in this order.
SERVICES = ('hyperv-sim', 'smbd', 'xapi-sim')
# WinRM's HTTPS port; an unprivileged SMB port; xapi's HTTPS port moved
# off 443.  (Other aio ports: 3306 5000 5672 8774 8776 8778 8799 8800
# 8989 9292 9696.)
PORTS = {'hyperv-sim': 5986, 'smbd': 4445, 'xapi-sim': 8443}
# Each compute serves its disks to the others on its own exchange port.
EXCHANGE_PORTS = {'hyperv': 8801, 'xenapi': 8802}
SECRETS = ('hyperv', 'xapi')
HYPERV_USER = 'xhv'
HYPERV_VM_PATH = 'C:\\XHV\\Hyper-V'
XAPI_USER = 'root'


def log(msg):
    print('xhv-aio: %s' % msg, flush=True)


def selected(backends):
    """The backends ``up`` starts: XHV_AIO_COMPUTES, or all of them."""
    wanted = os.environ.get('XHV_AIO_COMPUTES', '').strip()
    if not wanted:
        return tuple(backends)
    names = [n.strip() for n in wanted.split(',') if n.strip()]
    unknown = sorted(set(names) - set(backends))
    if unknown:
        msg = ('XHV_AIO_COMPUTES: unknown backend(s) %s (known: %s)'
               % (', '.join(unknown), ', '.join(backends)))
        raise ValueError(msg)
    return tuple(b for b in backends if b in names)


def _dirs(cloud):
    return {'hyperv': os.path.join(cloud.lib, 'hyperv'),
            'xapi': os.path.join(cloud.lib, 'xapi')}


def config_values(cloud):
    """Template values of nova-compute-hyperv.conf / -xenapi.conf."""
    dirs = _dirs(cloud)
    return {
        'HYPERV_PORT': str(PORTS['hyperv-sim']),
        'HYPERV_USER': HYPERV_USER,
        'HYPERV_PW': cloud.secrets['hyperv'],
        'HYPERV_CA': os.path.join(dirs['hyperv'], 'ca.pem'),
        'HYPERV_VM_PATH': HYPERV_VM_PATH,
        'HYPERV_SHARE': 'xhv-vms',
        'SMB_PORT': str(PORTS['smbd']),
        'XAPI_URL': 'https://127.0.0.1:%d' % PORTS['xapi-sim'],
        'XAPI_USER': XAPI_USER,
        'XAPI_PW': cloud.secrets['xapi'],
        'XAPI_CA': os.path.join(dirs['xapi'], 'ca.pem'),
        'EXCHANGE_PORT_hyperv': str(EXCHANGE_PORTS['hyperv']),
        'EXCHANGE_PORT_xenapi': str(EXCHANGE_PORTS['xenapi']),
    }


def _private_file(path, text):
    fd = os.open(path + '.tmp', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as f:
        f.write(text)
    os.replace(path + '.tmp', path)


def _answers_tls(port, ca):
    """True once an HTTPS server verified by ``ca`` answers on ``port``."""
    context = ssl.create_default_context(cafile=ca)
    try:
        with urllib.request.urlopen('https://127.0.0.1:%d/' % port,
                                    timeout=5, context=context):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer: it listens and its TLS verified


def _fresh_workdir(workdir):
    """An empty private folder with a new CA and server certificate."""
    sys.path.insert(0, TOP)
    from tests.fixtures import vcsim as vcsim_fixture
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir, mode=0o700)
    return vcsim_fixture.make_ca_and_server_cert(workdir)


def start(cloud, backends):
    """Start the simulators the selected ``backends`` need; wait for them."""
    if 'hyperv' in backends:
        _start_hyperv(cloud)
    if 'xenapi' in backends:
        _start_xapi(cloud)


def _start_hyperv(cloud):
    sys.path.insert(0, TOP)
    from tests.simulators.hyperv import samba
    workdir = _dirs(cloud)['hyperv']
    ca = os.path.join(workdir, 'ca.pem')
    procs = cloud.procs
    if not samba.available():
        msg = ('the Hyper-V compute needs Debian\'s samba '
               '(tools/install-deps installs it)')
        raise RuntimeError(msg)
    if procs.pid('hyperv-sim') is None or procs.pid('smbd') is None:
        # The simulated host and its share start together, from scratch.
        procs.stop('hyperv-sim')
        procs.stop('smbd')
        ca, cert, key = _fresh_workdir(workdir)
        host, storage, smb = (os.path.join(workdir, d) for d in
                              ('host', 'storage', 'samba'))
        os.mkdir(host, 0o700)
        os.mkdir(storage, 0o755)
        os.mkdir(smb, 0o700)
        secret = os.path.join(host, 'password')
        _private_file(secret, cloud.secrets['hyperv'])
        smbd = samba.Samba(smb, storage, HYPERV_USER,
                           cloud.secrets['hyperv'])
        procs.start('smbd', smbd.prepare(PORTS['smbd']))
        procs.start('hyperv-sim', [
            os.path.join(cloud.bin, 'python'), '-m',
            'tests.simulators.hyperv.server', '--folder', host,
            '--storage-dir', storage, '--storage-path', HYPERV_VM_PATH,
            '--username', HYPERV_USER, '--password-file', secret,
            '--tls-cert', cert, '--tls-key', key,
            '--port', str(PORTS['hyperv-sim'])], cwd=TOP)
    procs.wait_for('smbd', lambda: _listens(PORTS['smbd']), 30, 'listening')
    procs.wait_for('hyperv-sim', lambda: _answers_tls(
        PORTS['hyperv-sim'], ca), 60, 'answering over HTTPS')


def _start_xapi(cloud):
    workdir = _dirs(cloud)['xapi']
    ca = os.path.join(workdir, 'ca.pem')
    procs = cloud.procs
    if procs.pid('xapi-sim') is None:
        ca, cert, key = _fresh_workdir(workdir)
        settings = os.path.join(workdir, 'settings.json')
        _private_file(settings, json.dumps({
            'state_dir': os.path.join(workdir, 'state'),
            'username': XAPI_USER, 'password': cloud.secrets['xapi'],
            'cert': cert, 'key': key, 'port': PORTS['xapi-sim'],
            'pool_uuid': _pool_uuid(cloud)}))
        procs.start('xapi-sim', [
            os.path.join(cloud.bin, 'python'), '-m',
            'tests.simulators.xenapi.server', '--settings-file', settings],
            cwd=TOP)
    procs.wait_for('xapi-sim', lambda: _answers_tls(PORTS['xapi-sim'], ca),
                   60, 'answering over HTTPS')


def _pool_uuid(cloud):
    """The simulated pool's uuid, the same for every start of this cloud.

    It is the Xen compute's node identity: a new pool at each start would
    leave Nova a second, stale Xen node (and the compute's compute_id).
    """
    path = os.path.join(cloud.etc, 'xapi-pool-uuid')
    try:
        with open(path) as f:
            return str(uuidlib.UUID(f.read().strip()))
    except (FileNotFoundError, ValueError):
        pass
    value = str(uuidlib.uuid4())
    with open(path, 'w') as f:
        f.write(value + '\n')
    return value


def _listens(port):
    with socket.socket() as s:
        return s.connect_ex(('127.0.0.1', port)) == 0


# -- the demo's steps -----------------------------------------------------

HYPERV_SERVER = 'xhv-demo-hyperv'
XEN_SERVER = 'xhv-demo-xen'
# What `hypervisor list --long` shows per family.
HYPERVISOR_TYPES = ('QEMU', 'VMware vCenter Server', 'hyperv', 'xen')


def hypervisor_types(demo):
    """hypervisor list --long: one node of each of the four families."""
    rows = demo.cli('hypervisor', 'list', '--long', parse=True)
    print(demo.cli('hypervisor', 'list', '--long'))
    found = sorted((r['Hypervisor Type'], r['State']) for r in rows)
    wanted = sorted((t, 'up') for t in HYPERVISOR_TYPES + tuple(
        getattr(demo, 'extra_hypervisor_types', ())))
    if found != wanted:
        from demo import StepFailed
        msg = 'hypervisor list: %s, expected %s' % (found, wanted)
        raise StepFailed(msg)
    return found


def _move(demo, name, dest):
    """server migrate --host dest; server migrate confirm."""
    demo.migrate(name, dest)
    demo.cli('server', 'migrate', 'confirm', name)
    return demo.wait_server(name, 'ACTIVE', dest)


def _revert(demo, name, dest, source):
    """server migrate --host dest; server migrate revert: on source."""
    demo.migrate(name, dest)
    demo.cli('server', 'migrate', 'revert', name)
    return demo.wait_server(name, 'ACTIVE', source)


def demo_steps(demo, no_migration):
    """vSphere -> Hyper-V -> KVM; KVM -> Xen (revert, then confirm) -> KVM.

    The boot disk goes vmdk -> vhdx -> qcow2 on the first server and
    qcow2 -> vhd -> qcow2 on the second; the boot marker on KVM's console
    after each proves the disk still boots.
    """
    from demo import StepFailed
    kvm, vmware = demo.kvm, demo.vmware
    hyperv, xen = HOSTS['hyperv'], HOSTS['xenapi']
    demo.step('hypervisor list: four families', lambda: hypervisor_types(
        demo))
    steps = [
        (HYPERV_SERVER, vmware, [
            ('hyperv: server migrate --host %s + confirm' % hyperv,
             lambda: _move(demo, HYPERV_SERVER, hyperv)),
            ('hyperv: server migrate --host %s + confirm' % kvm,
             lambda: _move(demo, HYPERV_SERVER, kvm)),
            ('hyperv: console log show (KVM, vmdk->vhdx->qcow2): boot '
             'marker', lambda: demo.wait_marker(HYPERV_SERVER))]),
        (XEN_SERVER, kvm, [
            ('xen: server migrate --host %s + revert' % xen,
             lambda: _revert(demo, XEN_SERVER, xen, kvm)),
            ('xen: server migrate --host %s + confirm' % xen,
             lambda: _move(demo, XEN_SERVER, xen)),
            ('xen: server migrate --host %s + confirm' % kvm,
             lambda: _move(demo, XEN_SERVER, kvm)),
            ('xen: console log show (KVM, qcow2->vhd->qcow2): boot marker',
             lambda: demo.wait_marker(XEN_SERVER))]),
    ]
    for name, born_on, moves in steps:
        family = name.rsplit('-', 1)[1]
        booted = demo.step('%s: server create --nic none on %s'
                           % (family, born_on),
                           lambda n=name, h=born_on: demo.create_server(n, h))
        skip = no_migration or (booted is StepFailed and
                                'the boot failed')
        for title, func in moves:
            result = demo.step(title, func, skip=skip)
            skip = skip or (result is StepFailed and
                            'an earlier move failed')
