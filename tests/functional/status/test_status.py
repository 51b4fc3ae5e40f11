"""xhv-status against real libvirtd and vcsim, run as the command.

Each case writes a nova.conf and runs ``python -m nova_xhv.cmd.status
--config-file ... --json``: Success on a good configuration, a Failure
naming the option for each mistake an operator makes.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.fixtures.hyperv import hyperv_sim  # noqa: F401  (fixture)
from tests.unit.status import test_status as unit_status

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))
SECRET = 'f00dfeedf00dfeedf00dfeedf00dfeed'


@pytest.fixture(scope='module')
def exchange_cert(tmp_path_factory):
    """(ca, cert, key) of the exchange endpoint: self-signed, one year."""
    folder = tmp_path_factory.mktemp('exchange-tls')
    cert, key = unit_status.make_cert(folder, 365)
    return cert, cert, key


def write_conf(path, sections):
    lines = []
    for section, options in sections.items():
        lines.append('[%s]' % section)
        lines.extend('%s = %s' % (k, v) for k, v in options.items()
                     if v is not None)
    path.write_text('\n'.join(lines) + '\n')


def run_status(tmp_path, sections):
    config = tmp_path / 'nova.conf'
    write_conf(config, sections)
    run = subprocess.run(
        [sys.executable, '-m', 'nova_xhv.cmd.status', '--config-file',
         str(config), '--json'], cwd=TOP, capture_output=True, text=True,
        timeout=600)
    data = json.loads(run.stdout)
    results = {c['check']: (c['status'], c['details'])
               for c in data['checks']}
    return run.returncode, results, run.stdout + run.stderr


def base_sections(tmp_path, exchange_cert, **xhv):
    ca, cert, key = exchange_cert
    sections = {
        'DEFAULT': {'state_path': str(tmp_path / 'state')},
        'xhv': {'backend': 'libvirt', 'exchange_secret': SECRET,
                'exchange_bind_host': '127.0.0.1', 'exchange_port': 0,
                'exchange_cert_file': cert, 'exchange_key_file': key,
                'exchange_ca_file': ca},
        'libvirt': {},
    }
    sections['xhv'].update(xhv)
    return sections


def libvirt_options(config):
    return {k: ','.join(v) if isinstance(v, list) else v
            for k, v in config.nova_options().items()}


def test_libvirt_compute_good_config(tmp_path, exchange_cert, host_cpu):
    sections = base_sections(tmp_path, exchange_cert)
    sections['libvirt'] = libvirt_options(host_cpu)
    code, results, output = run_status(tmp_path, sections)
    assert {name: r[0] for name, r in results.items()} == {
        'backend': 'Success', 'hypervisor': 'Success',
        'libvirt CPU': 'Success', 'translation tools': 'Success',
        'staging folder': 'Success', 'exchange secret': 'Success',
        'exchange port': 'Success', 'exchange TLS': 'Success'}, output
    assert code == 0
    assert SECRET not in output


def test_cpu_mode_that_cannot_start_a_guest(tmp_path, exchange_cert,
                                            lacking_cpu):
    sections = base_sections(tmp_path, exchange_cert)
    sections['libvirt'] = libvirt_options(lacking_cpu)
    code, results, output = run_status(tmp_path, sections)
    verdict, details = results['libvirt CPU']
    assert verdict == 'Failure', output
    assert 'does not start with [libvirt] virt_type=%s cpu_mode=custom' % (
        lacking_cpu.virt_type) in details
    assert lacking_cpu.cpu_models[0] in details
    # The fix names the settings that start a guest here.
    assert 'Fix: set in [libvirt]: virt_type = ' in details
    assert code == 2


def test_missing_exchange_secret(tmp_path, exchange_cert, host_cpu):
    sections = base_sections(tmp_path, exchange_cert, exchange_secret=None)
    sections['libvirt'] = libvirt_options(host_cpu)
    code, results, output = run_status(tmp_path, sections)
    verdict, details = results['exchange secret']
    assert verdict == 'Failure', output
    assert 'set [xhv] exchange_secret' in details
    assert code == 2


def vmware_sections(tmp_path, exchange_cert, vcsim, **vmware):
    sections = base_sections(tmp_path, exchange_cert, backend='vmware')
    sections['xhv_vmware'] = {
        'host': vcsim.host, 'port': vcsim.port, 'username': vcsim.username,
        'password': vcsim.password, 'ca_file': vcsim.ca_file,
        'cluster_name': vcsim.cluster,
        'staging_dir': str(tmp_path / 'staging')}
    sections['xhv_vmware'].update(vmware)
    return sections


def test_vsphere_good_config(tmp_path, exchange_cert, vcsim):
    code, results, output = run_status(
        tmp_path, vmware_sections(tmp_path, exchange_cert, vcsim))
    verdict, details = results['hypervisor']
    assert verdict == 'Success', output
    assert 'cluster %s found' % vcsim.cluster in details
    assert vcsim.datastore in details
    assert results['libvirt CPU'][0] == 'Success'  # not a libvirt compute
    assert code == 0, output
    assert vcsim.password not in output


@pytest.mark.parametrize('change, option', [
    ({'password': 'Wr0ng-passw0rd-xhv'},
     '[xhv_vmware] username and password'),
    ({'cluster_name': 'NoSuchCluster'}, 'set [xhv_vmware] cluster_name'),
    ({'ca_file': None}, 'set [xhv_vmware] ca_file'),
])
def test_vsphere_mistakes_name_the_option(tmp_path, exchange_cert, vcsim,
                                          change, option):
    code, results, output = run_status(
        tmp_path, vmware_sections(tmp_path, exchange_cert, vcsim, **change))
    verdict, details = results['hypervisor']
    assert verdict == 'Failure', output
    assert option in details
    assert code == 2
    for secret in (vcsim.password, 'Wr0ng-passw0rd-xhv', SECRET):
        assert secret not in output


def hyperv_sections(tmp_path, exchange_cert, sim, **hyperv):
    sections = base_sections(tmp_path, exchange_cert, backend='hyperv')
    info = sim.info
    sections['xhv_hyperv'] = {
        'host': info.host, 'port': info.port, 'username': info.username,
        'password': info.password, 'ca_file': info.ca_file,
        'vm_path': info.storage_path, 'smb_share': info.share,
        'smb_port': info.smb_port,
        'vswitch_mappings': 'physnet1:%s' % info.switches[0]}
    sections['xhv_hyperv'].update(hyperv)
    return sections


def test_hyperv_good_config(tmp_path, exchange_cert, hyperv_sim):  # noqa
    code, results, output = run_status(
        tmp_path, hyperv_sections(tmp_path, exchange_cert, hyperv_sim))
    verdict, details = results['hypervisor']
    assert verdict == 'Success', output
    assert 'Hyper-V host XHV-HV01 answers' in details
    assert code == 0, output
    assert hyperv_sim.info.password not in output


@pytest.mark.parametrize('change, message', [
    ({'password': 'Wr0ng-passw0rd-xhv'}, 'rejected the credentials'),
    ({'vswitch_mappings': 'physnet1:NoSuchSwitch'},
     "'NoSuchSwitch' named in [xhv_hyperv] vswitch_mappings"),
])
def test_hyperv_mistakes_are_named(tmp_path, exchange_cert,
                                   hyperv_sim, change, message):  # noqa
    code, results, output = run_status(
        tmp_path, hyperv_sections(tmp_path, exchange_cert, hyperv_sim,
                                  **change))
    verdict, details = results['hypervisor']
    assert verdict == 'Failure', output
    assert message in details
    assert code == 2
    for secret in (hyperv_sim.info.password, 'Wr0ng-passw0rd-xhv', SECRET):
        assert secret not in output
