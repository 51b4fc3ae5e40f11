"""The all-in-one's Hyper-V and Xen services without the rest of the cloud.

``tools/aio/families.py`` starts the Hyper-V simulator, its Samba share
and the xapi simulator as all-in-one services (here on free ports, in a
scratch state folder); the compute configs it renders then pass
``xhv-status`` against them (NTLM over HTTPS, TLS verified against each
simulator's CA, the SMB share, the xapi pool), no password shows in any
of the services' command lines or environments, the files holding them
are private, and stopping the services leaves no process of their
process groups (smbd's per-client children included).  Needs root (smbd)
and Debian's samba; no libvirt, so no lock.
"""

import configparser
import json
import os
import socket
import ssl
import stat
import subprocess
import sys

import pytest
import XenAPI

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(TOP, 'tools', 'aio'))
import families  # noqa: E402  (tools/aio is no package)
import services  # noqa: E402

from tests.simulators.hyperv import samba  # noqa: E402

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason='smbd runs as root'),
    pytest.mark.skipif(not samba.available(),
                       reason='Debian\'s samba is not installed')]


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def zombie(pid):
    """Exited, not yet reaped (by init, for a service's orphans)."""
    try:
        with open('/proc/%d/status' % pid) as f:
            return 'State:\tZ' in f.read()
    except OSError:
        return True


def group_members(pgid):
    found = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid and not zombie(int(entry)):
                    found.append(int(entry))
            except OSError:
                continue
    return found


def read_proc(pid, name):
    try:
        with open('/proc/%d/%s' % (pid, name), 'rb') as f:
            return f.read()
    except OSError:
        return b''


def xapi_login(conf):
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(conf)
    opts = parser['xhv_xenapi']
    assert opts['url'].startswith('https://'), opts['url']
    context = ssl.create_default_context(cafile=opts['ca_file'])

    class Transport(XenAPI.xmlrpclib.SafeTransport):
        pass

    session = XenAPI.Session(opts['url'],
                             transport=Transport(context=context))
    session.xenapi.login_with_password(opts['username'], opts['password'],
                                       '2.21', 'xhv-aio-test')
    try:
        assert session.xenapi.host.get_all()
    finally:
        session.xenapi.session.logout()
    # The system CAs do not know the simulator's: TLS is really checked.
    with pytest.raises(ssl.SSLError):
        XenAPI.Session(opts['url']).xenapi.login_with_password(
            opts['username'], opts['password'], '2.21', 'xhv-aio-test')


def xapi_pool_uuid(cloud):
    context = ssl.create_default_context(
        cafile=os.path.join(cloud.lib, 'xapi', 'ca.pem'))

    class Transport(XenAPI.xmlrpclib.SafeTransport):
        pass

    session = XenAPI.Session('https://127.0.0.1:%d'
                             % families.PORTS['xapi-sim'],
                             transport=Transport(context=context))
    session.xenapi.login_with_password(
        families.XAPI_USER, cloud.secrets['xapi'], '2.21', 'xhv-aio-test')
    try:
        pools = session.xenapi.pool.get_all()
        return session.xenapi.pool.get_uuid(pools[0])
    finally:
        session.xenapi.session.logout()


@pytest.fixture
def cloud(tmp_path, monkeypatch):
    monkeypatch.setattr(families, 'PORTS', {name: free_port() for name in
                                            families.SERVICES})
    # xhv-status binds the exchange port it is given; 0: any free one.
    monkeypatch.setattr(families, 'EXCHANGE_PORTS',
                        {b: 0 for b in families.BACKENDS})
    cloud = services.Cloud(str(tmp_path / 'aio'), sys.prefix)
    try:
        yield cloud
    finally:
        for name in families.SERVICES:
            cloud.procs.stop(name)


def test_services_configs_secrets_and_stop(cloud):
    families.start(cloud, families.BACKENDS)
    pids = {name: cloud.procs.pid(name) for name in families.SERVICES}
    assert all(pids.values()), pids

    for backend in families.BACKENDS:
        conf = cloud.render('nova-compute-%s.conf' % backend,
                            cloud.conf('nova', 'nova-compute-%s.conf'
                                       % backend))
        assert stat.S_IMODE(os.stat(conf).st_mode) == 0o640
        run = subprocess.run(
            [sys.executable, '-m', 'nova_xhv.cmd.status', '--config-file',
             conf, '--json'], cwd=TOP, capture_output=True, text=True,
            timeout=300)
        found = {c['check']: (c['status'], c['details'])
                 for c in json.loads(run.stdout)['checks']}
        checks = {name: status for name, (status, _) in found.items()}
        assert checks.get('backend') == 'Success', (backend, found)
        assert 'Failure' not in checks.values(), (backend, found)
        if backend == 'hyperv':
            # Get-VMHost over NTLM/HTTPS and the SMB share, as init_host.
            assert checks.get('hypervisor') == 'Success', found
        else:
            # xhv-status has no xapi check: the SDK logs in with the
            # config's URL, account and CA.
            xapi_login(conf)

    passwords = [cloud.secrets[s].encode() for s in families.SECRETS]
    for name, pid in pids.items():
        members = group_members(pid)
        assert members, name
        for member in members:
            for what in ('cmdline', 'environ'):
                text = read_proc(member, what)
                assert not [p for p in passwords if p in text], \
                    (name, member, what)
    lib = cloud.lib
    # The pool keeps its uuid (the Xen node's identity) across restarts.
    pool = open(cloud.conf('xapi-pool-uuid')).read().strip()
    assert xapi_pool_uuid(cloud) == pool
    cloud.procs.stop('xapi-sim')
    families.start(cloud, ('xenapi',))
    assert xapi_pool_uuid(cloud) == pool
    pids['xapi-sim'] = cloud.procs.pid('xapi-sim')
    for private in (os.path.join(lib, 'hyperv', 'host', 'password'),
                    os.path.join(lib, 'xapi', 'settings.json'),
                    os.path.join(cloud.etc, 'secrets.json')):
        assert stat.S_IMODE(os.stat(private).st_mode) == 0o600, private

    for name, pid in pids.items():
        assert cloud.procs.stop(name), name
        assert not group_members(pid), (name, group_members(pid))
        assert cloud.procs.pid(name) is None
