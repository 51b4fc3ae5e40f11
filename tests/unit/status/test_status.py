"""xhv-status: each check's verdicts, the output and the exit code.

Against real libvirtd and vcsim: tests/functional/status/test_status.py.
"""

import datetime
import json
import os
import socket
import stat
from unittest import mock

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography import x509
from cryptography.x509.oid import NameOID
from oslo_config import cfg
import pytest

from nova_xhv.cmd import status
from nova_xhv import guest_probe

SUCCESS, WARNING, FAILURE = (status.Code.SUCCESS, status.Code.WARNING,
                             status.Code.FAILURE)
SECRET = 'Sup3r-Secret-exchange-value-0123'


@pytest.fixture
def conf(tmp_path):
    c = cfg.ConfigOpts()
    status.register(c)
    c([], project='xhv-test', default_config_files=[])
    c.set_override('state_path', str(tmp_path / 'state'))
    c.set_override('exchange_secret', SECRET, group='xhv')
    c.set_override('exchange_use_tls', False, group='xhv')
    return c


# -- backend ---------------------------------------------------------------

def test_backend_loads(conf):
    result = status.check_backend(conf)
    assert result.code == SUCCESS
    assert 'nova_xhv.backends.libvirt.backend:LibvirtBackend' in \
        result.details


def test_unknown_backend_names_the_option(conf):
    conf.set_override('backend', 'bhyve', group='xhv')
    result = status.check_backend(conf)
    assert result.code == FAILURE
    assert '[xhv] backend = bhyve' in result.details
    assert 'libvirt' in result.details and 'Fix:' in result.details


def test_backend_without_its_client_library(conf):
    conf.set_override('backend', 'vmware', group='xhv')
    error = ImportError("No module named 'pyVmomi'", name='pyVmomi')
    with mock.patch('importlib.metadata.EntryPoint.load', side_effect=error):
        result = status.check_backend(conf)
    assert result.code == FAILURE
    assert "'pyVmomi'" in result.details
    assert 'pip install openstack-xhv[vmware]' in result.details


# -- hypervisor -----------------------------------------------------------

class FakeLibvirtError(Exception):
    pass


def fake_libvirt(**open_read_only):
    return mock.Mock(libvirtError=FakeLibvirtError,
                     openReadOnly=mock.Mock(**open_read_only))


def test_libvirt_not_answering(conf):
    conf.set_override('connection_uri', 'qemu+unix:///system?socket=/nope',
                      group='libvirt')
    fake = fake_libvirt(side_effect=FakeLibvirtError('no socket'))
    with mock.patch.object(status, '_libvirt', return_value=fake):
        result = status.check_hypervisor(conf)
    fake.openReadOnly.assert_called_once_with(
        'qemu+unix:///system?socket=/nope')
    assert result.code == FAILURE
    assert 'no socket' in result.details
    assert '[libvirt] connection_uri' in result.details


def test_libvirt_answers(conf):
    conn = mock.Mock()
    conn.getVersion.return_value = 7002022
    conn.getLibVersion.return_value = 9000000
    fake = fake_libvirt(return_value=conn)
    with mock.patch.object(status, '_libvirt', return_value=fake):
        result = status.check_hypervisor(conf)
    fake.openReadOnly.assert_called_once_with('qemu:///system')
    assert result.code == SUCCESS
    assert 'libvirt 9.0.0' in result.details and '7.2.22' in result.details


@pytest.mark.parametrize('error, option', [
    ('InvalidLogin', '[xhv_vmware] username and password'),
    ('cert', '[xhv_vmware] ca_file'),
])
def test_vmware_login_failures_name_the_option(conf, error, option):
    from nova_xhv.backends.vmware import errors

    conf.set_override('backend', 'vmware', group='xhv')
    for name, value in (('host', 'vc.example.org'), ('username', 'nova'),
                        ('password', 'pw-never-shown')):
        conf.set_override(name, value, group='xhv_vmware')
    detail = {'InvalidLogin': 'vSphere rejected the login: check '
                              '[xhv_vmware] username and password',
              'cert': 'TLS certificate verification failed: set '
                      '[xhv_vmware] ca_file to the CA'}[error]
    with mock.patch('nova_xhv.backends.vmware.session.VSphereSession.'
                    'connect', side_effect=errors.VSphereConnectionError(
                        endpoint='vc.example.org:443', detail=detail)):
        result = status.check_hypervisor(conf)
    assert result.code == FAILURE
    assert option in result.details
    assert 'pw-never-shown' not in result.details


def test_vmware_unknown_cluster_names_the_option(conf):
    from nova_xhv.backends.vmware import errors

    conf.set_override('backend', 'vmware', group='xhv')
    for name, value in (('host', 'vc'), ('username', 'u'), ('password', 'p'),
                        ('cluster_name', 'Nope')):
        conf.set_override(name, value, group='xhv_vmware')
    with mock.patch('nova_xhv.backends.vmware.session.VSphereSession.'
                    'connect'), \
            mock.patch('nova_xhv.backends.vmware.session.VSphereSession.'
                       'disconnect'), \
            mock.patch('nova_xhv.backends.vmware.inventory.discover',
                       side_effect=errors.VSphereConfigError(
                           detail="cluster 'Nope' not found on vc:443 "
                                  "(clusters there: C0): set cluster_name "
                                  "to one of them")):
        result = status.check_hypervisor(conf)
    assert result.code == FAILURE
    assert 'set [xhv_vmware] cluster_name to one of them' in result.details


# -- libvirt CPU ----------------------------------------------------------

def test_cpu_check_success(conf):
    with mock.patch.object(guest_probe, 'try_config', return_value=None):
        result = status.check_libvirt_cpu(conf)
    assert result.code == SUCCESS
    assert 'virt_type=kvm cpu_mode unset' in result.details


def test_cpu_check_names_the_setting_that_starts_a_guest(conf):
    conf.set_override('cpu_mode', 'host-passthrough', group='libvirt')
    works = guest_probe.Choice(guest_probe.CANDIDATES[1], 'why', 'probe')
    with mock.patch.object(guest_probe, 'try_config',
                           return_value='failed to set MSR 0x10a'), \
            mock.patch.object(guest_probe, 'choose',
                              return_value=works) as choose:
        result = status.check_libvirt_cpu(conf)
    assert choose.call_args.kwargs['environ'] == {}
    assert result.code == FAILURE
    assert 'cpu_mode=host-passthrough' in result.details
    assert 'failed to set MSR 0x10a' in result.details
    assert ('Fix: set in [libvirt]: virt_type = kvm, cpu_mode = host-model, '
            'cpu_models = <unset>, cpu_model_extra_flags = '
            '-arch-capabilities') in result.details


def test_cpu_check_when_nothing_starts(conf):
    with mock.patch.object(guest_probe, 'try_config', return_value='hang'), \
            mock.patch.object(guest_probe, 'choose',
                              side_effect=guest_probe.ProbeError('none')):
        result = status.check_libvirt_cpu(conf)
    assert result.code == FAILURE
    assert 'no candidate setting starts a guest' in result.details


def test_cpu_check_skips_other_backends(conf):
    conf.set_override('backend', 'vmware', group='xhv')
    with mock.patch.object(guest_probe, 'try_config') as tried:
        assert status.check_libvirt_cpu(conf).code == SUCCESS
    tried.assert_not_called()


# -- translation ----------------------------------------------------------

def fake_tools(tmp_path, formats):
    folder = tmp_path / 'bin'
    folder.mkdir()
    for tool in ('qemu-img', 'qemu-nbd'):
        path = folder / tool
        path.write_text('#!/bin/sh\necho "Supported formats: %s"\n'
                        % formats)
        path.chmod(0o755)
    return str(folder)


def test_translation_tools_present(conf):
    result = status.check_translation_tools(conf)
    assert result.code == SUCCESS, result.details


def test_translation_tools_missing_driver(conf, tmp_path, monkeypatch):
    monkeypatch.setenv('PATH', fake_tools(tmp_path, 'raw qcow2 vmdk vpc'))
    result = status.check_translation_tools(conf)
    assert result.code == FAILURE
    assert 'vhdx' in result.details and 'vpc' not in result.details.split(
        'Fix:')[0]


def test_translation_tools_missing(conf, tmp_path, monkeypatch):
    monkeypatch.setenv('PATH', str(tmp_path))
    result = status.check_translation_tools(conf)
    assert result.code == FAILURE
    assert 'qemu-img and qemu-nbd not found' in result.details


# -- staging --------------------------------------------------------------

def test_staging_writable_reports_free_space(conf):
    result = status.check_staging(conf)
    assert result.code == SUCCESS
    assert 'GiB free' in result.details
    assert '[xhv] migration_state_dir' in result.details


def test_staging_not_a_folder(conf, tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('x')
    conf.set_override('migration_state_dir', str(blocker / 'sub'),
                      group='xhv')
    result = status.check_staging(conf)
    assert result.code == FAILURE
    assert 'set [xhv] migration_state_dir' in result.details


def test_staging_not_writable(conf, tmp_path):
    with mock.patch('tempfile.mkstemp',
                    side_effect=PermissionError(13, 'Permission denied')):
        result = status.check_staging(conf)
    assert result.code == FAILURE
    assert 'is not writable (Permission denied)' in result.details


def test_staging_low_space_warns(conf):
    usage = mock.Mock(free=100 * 1024 ** 2)
    with mock.patch('shutil.disk_usage', return_value=usage):
        result = status.check_staging(conf)
    assert result.code == WARNING
    assert '0.1 GiB free' in result.details


def test_vmware_staging_dir_checked_too(conf):
    conf.set_override('backend', 'vmware', group='xhv')
    assert '[xhv_vmware] staging_dir' in status.check_staging(conf).details


# -- migration ------------------------------------------------------------

def test_exchange_secret(conf):
    result = status.check_exchange_secret(conf)
    assert result.code == SUCCESS and SECRET not in result.details
    conf.set_override('exchange_secret', 'short', group='xhv')
    assert status.check_exchange_secret(conf).code == WARNING
    conf.set_override('exchange_secret', None, group='xhv')
    result = status.check_exchange_secret(conf)
    assert result.code == FAILURE
    assert 'set [xhv] exchange_secret' in result.details


def test_exchange_port_free_taken_and_ours(conf):
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    port = listener.getsockname()[1]
    conf.set_override('exchange_bind_host', '127.0.0.1', group='xhv')
    conf.set_override('exchange_port', port, group='xhv')
    try:
        listener.listen()
        result = status.check_exchange_port(conf)
        assert result.code == FAILURE
        assert 'pid %d' % os.getpid() in result.details
        assert 'set [xhv] exchange_port' in result.details
        with mock.patch.object(status, 'port_owner',
                               return_value='/usr/bin/nova-compute (pid 7)'):
            assert status.check_exchange_port(conf).code == SUCCESS
    finally:
        listener.close()
    assert status.check_exchange_port(conf).code == SUCCESS
    conf.set_override('exchange_port', 0, group='xhv')
    assert status.check_exchange_port(conf).code == SUCCESS


def make_cert(folder, days_valid, days_from_now=-1, name='cert'):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'xhv')])
    start = now + datetime.timedelta(days=days_from_now)
    cert = (x509.CertificateBuilder().subject_name(subject)
            .issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=days_valid))
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / (name + '.pem'), folder / (name + '.key')
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def tls(conf, cert, key):
    conf.set_override('exchange_use_tls', True, group='xhv')
    conf.set_override('exchange_cert_file', cert, group='xhv')
    conf.set_override('exchange_key_file', key, group='xhv')


def test_tls_off_warns(conf):
    result = status.check_exchange_tls(conf)
    assert result.code == WARNING and 'unencrypted' in result.details


def test_tls_good(conf, tmp_path):
    tls(conf, *make_cert(tmp_path, 365))
    result = status.check_exchange_tls(conf)
    assert result.code == SUCCESS, result.details


def test_tls_files_unset(conf):
    conf.set_override('exchange_use_tls', True, group='xhv')
    result = status.check_exchange_tls(conf)
    assert result.code == FAILURE
    assert '[xhv] exchange_cert_file and [xhv] exchange_key_file' in (
        result.details)


def test_tls_expired_soon_and_future(conf, tmp_path):
    tls(conf, *make_cert(tmp_path, 1, days_from_now=-10, name='old'))
    result = status.check_exchange_tls(conf)
    assert result.code == FAILURE and 'expired' in result.details
    tls(conf, *make_cert(tmp_path, 10, name='soon'))
    assert status.check_exchange_tls(conf).code == WARNING
    tls(conf, *make_cert(tmp_path, 100, days_from_now=5, name='future'))
    result = status.check_exchange_tls(conf)
    assert result.code == FAILURE and 'valid only from' in result.details


def test_tls_key_of_another_cert(conf, tmp_path):
    cert, _ = make_cert(tmp_path, 365, name='a')
    _, other_key = make_cert(tmp_path, 365, name='b')
    tls(conf, cert, other_key)
    result = status.check_exchange_tls(conf)
    assert result.code == FAILURE
    assert 'does not go with exchange_cert_file' in result.details


def test_tls_unreadable_and_not_pem(conf, tmp_path):
    cert, key = make_cert(tmp_path, 365)
    tls(conf, cert, str(tmp_path / 'missing.key'))
    result = status.check_exchange_tls(conf)
    assert result.code == FAILURE and 'not readable' in result.details
    (tmp_path / 'junk.pem').write_text('junk')
    tls(conf, str(tmp_path / 'junk.pem'), key)
    result = status.check_exchange_tls(conf)
    assert result.code == FAILURE and 'not a PEM certificate' in (
        result.details)
    assert stat.S_ISREG(os.stat(cert).st_mode)


def test_tls_insecure_warns(conf, tmp_path):
    tls(conf, *make_cert(tmp_path, 365))
    conf.set_override('exchange_insecure', True, group='xhv')
    assert status.check_exchange_tls(conf).code == WARNING


# -- the command ----------------------------------------------------------

def fixed(code, details):
    return lambda conf: status.Result(code, details)


def test_exit_code_is_the_worst_result(conf, capsys):
    checks = (('a', fixed(SUCCESS, 'fine')), ('b', fixed(WARNING, 'hm')))
    assert status.Checks(conf, checks).check() == WARNING
    checks += (('c', fixed(FAILURE, 'bad. Fix: this.')),)
    assert status.Checks(conf, checks).check() == FAILURE
    lines = capsys.readouterr().out.splitlines()
    assert lines[-3:] == ['Success  a  fine', 'Warning  b  hm',
                          'Failure  c  bad. Fix: this.']


def test_a_crashing_check_is_a_failure_not_a_traceback(conf, capsys):
    def crash(conf):
        raise RuntimeError('oops')

    assert status.Checks(conf, (('x', crash),)).check() == FAILURE
    assert 'the check itself failed: RuntimeError: oops' in (
        capsys.readouterr().out)


def test_json_output(conf, capsys):
    checks = (('a', fixed(SUCCESS, 'fine')), ('b', fixed(FAILURE, 'bad')))
    assert status.Checks(conf, checks).check(as_json=True) == FAILURE
    data = json.loads(capsys.readouterr().out)
    assert data['checks'] == [
        {'check': 'a', 'result': 0, 'status': 'Success', 'details': 'fine'},
        {'check': 'b', 'result': 2, 'status': 'Failure', 'details': 'bad'}]


def test_main_reads_config_file_and_never_prints_secrets(tmp_path, capsys):
    config = tmp_path / 'nova.conf'
    config.write_text(
        '[DEFAULT]\nstate_path = %s\n[xhv]\nbackend = vmware\n'
        'exchange_secret = %s\nexchange_port = 0\n'
        '[xhv_vmware]\nhost = 127.0.0.1\nport = 1\nusername = u\n'
        'password = vc-Pa55word-never\n' % (tmp_path, SECRET))
    code = status.main(['--config-file', str(config), '--json'])
    out = capsys.readouterr().out
    data = json.loads(out)
    results = {c['check']: c['status'] for c in data['checks']}
    assert results['hypervisor'] == 'Failure'
    assert results['exchange secret'] == 'Success'
    assert code == FAILURE
    assert SECRET not in out and 'vc-Pa55word-never' not in out
    # nova-status style also works.
    assert status.main(['upgrade', 'check', '--config-file', str(config)]
                       ) == FAILURE
