"""The Hyper-V backend against the simulator: what the conformance suite
does not cover (start-up errors, injection, ports, faults, sessions)."""

import os
import socket

from nova.compute import power_state
from nova.network import model as network_model
from nova import objects
import pytest
import winrm

from nova_xhv.backends import base
from nova_xhv.backends.hyperv import backend as hyperv_backend
from nova_xhv.backends.hyperv import network
from nova_xhv.backends.hyperv import remote
from tests.fixtures import disks
from tests.fixtures import hyperv as hyperv_fixture
from tests.fixtures import vcsim as vcsim_fixture
from tests.functional.hyperv.conftest import make_instance
from tests.functional.hyperv.conftest import PHYSNET

pytestmark = pytest.mark.timeout(180)
IMAGE_META = objects.ImageMeta.from_dict({'properties': {}})


def _boot_disk(backend, tmp_path, name='boot'):
    from tests.functional.backends import conformance
    folder = str(tmp_path / ('in-%s' % name))
    os.makedirs(folder, exist_ok=True)
    return conformance.TestBed.native_disk(
        type('Bed', (), {'backend': backend})(), folder, name,
        size=4 * disks.MiB)


def _spawn(backend, tmp_path, instance, network_info=(), power_on=True,
           disk=None):
    # stage_disks uploads a copy: one local disk can serve many guests.
    disk = disk or _boot_disk(backend, tmp_path, instance.uuid)
    staged = backend.stage_disks(None, instance, [disk])
    try:
        backend.spawn_from_disks(None, instance, staged, list(network_info),
                                 IMAGE_META, power_on=power_on)
    except Exception:
        backend.discard_staged_disks(None, instance, staged)
        raise
    return staged


@pytest.fixture
def own_sim(request):
    """A simulator of this test's own (HTTP, Basic, other names)."""
    sims = []

    def start(**kwargs):
        sim = hyperv_fixture.HyperVSimulator(**kwargs)
        sims.append(sim)
        sim.start()
        return sim

    yield start
    for sim in sims:
        sim.stop()


# -- start-up errors ------------------------------------------------------

def test_wrong_password_is_a_clear_error(make_backend):
    with pytest.raises(remote.HyperVConnectionError,
                       match='rejected the credentials of user xhv'):
        make_backend(password='not-the-password')


def test_tls_mismatch_is_a_clear_error(make_backend, tmp_path):
    other_ca, _, _ = vcsim_fixture.make_ca_and_server_cert(str(tmp_path))
    with pytest.raises(remote.HyperVConnectionError,
                       match='TLS verification of https://.* failed.*'
                             'ca_file'):
        make_backend(ca_file=other_ca)
    # And the system trust store does not know the host's CA either.
    with pytest.raises(remote.HyperVConnectionError,
                       match='TLS verification'):
        make_backend(ca_file=None)


def test_unreachable_host_is_a_clear_error(make_backend):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        closed = s.getsockname()[1]
    with pytest.raises(remote.HyperVConnectionError, match='unreachable'):
        make_backend(port=closed)


def test_unknown_vswitch_is_a_clear_error(make_backend):
    with pytest.raises(hyperv_backend.HyperVConfigError,
                       match="'no-such-switch'.*do not exist.*xhv-external"):
        make_backend(vswitch_mappings=['%s:no-such-switch' % PHYSNET])
    with pytest.raises(hyperv_backend.HyperVConfigError,
                       match='physical_network:vSwitch'):
        make_backend(vswitch_mappings=['no-colon'])


def test_basic_over_http_is_refused(make_backend):
    with pytest.raises(hyperv_backend.HyperVConfigError,
                       match='basic sends the password in clear'):
        make_backend(transport='basic', use_https=False)


def test_basic_over_https(make_backend, own_sim):
    sim = own_sim(basic=True)
    backend = make_backend(sim=sim, transport='basic')
    assert backend.list_instance_uuids() == []
    assert {s['user'] for s in sim.scripts()} == {'xhv'}


def test_ntlm_over_http_encrypts_every_message(make_backend, own_sim,
                                               tmp_path):
    sim = own_sim(tls=False)
    backend = make_backend(sim=sim)
    instance = make_instance()
    _spawn(backend, tmp_path, instance)
    assert backend.get_info(instance).state == power_state.RUNNING
    # The host refuses what is not encrypted over HTTP (as WinRM's
    # AllowUnencrypted=false does): the backend's calls were encrypted.
    plain = winrm.Session('http://%s:%d/wsman' % (sim.info.host,
                                                  sim.info.port),
                          auth=(sim.info.username, sim.info.password),
                          transport='ntlm', message_encryption='never')
    with pytest.raises(winrm.exceptions.InvalidCredentialsError):
        plain.run_ps('Get-VMHost')


# -- injection ------------------------------------------------------------

def _payloads(canary):
    kill = 'Remove-VM -Name %s -Force' % canary
    return [
        "it's",
        "'; %s; '" % kill,
        '$(%s)' % kill,
        '`$(%s)`' % kill,
        "a\n%s\n'" % kill,
        "a\r\n'; %s #" % kill,
        '\u2019; %s; \u2018' % kill,
        '\u201a\u201b; %s; \u2018' % kill,
        '"; %s; "' % kill,
        "x'+\"$(%s)\"+'" % kill,
        "@'\n%s\n'@" % kill,
        "''; %s; ''" % kill,
        '${env:PATH}; & { %s }' % kill,
    ]


def test_values_cannot_inject_powershell(make_backend, own_sim, tmp_path,
                                         conf):
    sim = own_sim(storage_path="C:\\XHV\\it's $(Remove-VM -Name *) `; x")
    backend = make_backend(sim=sim)
    canary = make_instance(name='canary')
    disk = _boot_disk(backend, tmp_path)
    _spawn(backend, tmp_path, canary, disk=disk)
    vif = _vif('fa:16:3e:00:00:01', segmentation_id=None)
    for n, payload in enumerate(_payloads(canary.uuid)):
        instance = make_instance(name=payload)
        _spawn(backend, tmp_path, instance, [vif], power_on=False,
               disk=disk)
        vm = sim.vms()[instance.uuid]
        # The value arrived whole, as data.
        assert vm['Notes'] == 'xhv:%s\n%s' % (instance.uuid, payload)
        assert vm['NetworkAdapters'][0]['SwitchName'] == 'xhv-external'
        assert vm['HardDrives'][0]['Path'].startswith(
            sim.info.storage_path + '\\')
        backend.destroy(None, instance, [])
    assert sim.vms()[canary.uuid]['State'] == 2
    assert backend.get_info(canary).state == power_state.RUNNING
    runs = [s for s in sim.scripts() if 'script' in s]
    assert runs and all(s['exit'] == 0 for s in runs), [
        s for s in runs if s['exit']]


# -- ports ------------------------------------------------------------------

def _vif(mac, segmentation_id=101, physnet=PHYSNET, vif_type='hyperv',
         switch='xhv-external'):
    """A port bound to a Hyper-V host, as Nova's network_info carries it.

    The binding details XHV's ML2 driver sets (doc/source/networking.rst).
    """
    details = {'xhv_family': 'hyperv', 'physical_network': physnet,
               'network_type': 'vlan' if segmentation_id else 'flat',
               'segmentation_id': segmentation_id,
               'hyperv_vswitch': switch,
               'hyperv_port_group': 'xhv-%s-%s' % (physnet, segmentation_id)}
    if switch is None:
        del details['hyperv_vswitch']
    return network_model.VIF(
        id='port-%s' % mac.replace(':', ''), address=mac, type=vif_type,
        details=details, network=network_model.Network(
            id='net-1', bridge=None, label='net', subnets=[]))


# Backend.nics (the network contract) refuses first, with its own exception.
REFUSALS = (base.VifRefused, network.HyperVNetworkError)


def test_ports_are_plugged_on_the_bound_vswitch(make_backend, hyperv_sim,
                                                tmp_path):
    backend = make_backend()
    instance = make_instance()
    _spawn(backend, tmp_path, instance, [
        _vif('fa:16:3e:11:22:33', 101), _vif('FA:16:3E:44:55:66', None)])
    try:
        adapters = hyperv_sim.vms()[instance.uuid]['NetworkAdapters']
        assert [(a['Name'], a['SwitchName'], a['MacAddress'],
                 a['DynamicMacAddressEnabled'], a['VlanMode'],
                 a['AccessVlanId']) for a in adapters] == [
            ('xhv-port-fa163e112233', 'xhv-external', 'FA163E112233', False,
             1, 101),
            ('xhv-port-FA163E445566', 'xhv-external', 'FA163E445566',
             False, 0, 0)]
        assert backend.plugged_ports(instance) == [
            ('port-fa163e112233', 'fa:16:3e:11:22:33'),
            ('port-FA163E445566', 'fa:16:3e:44:55:66')]
    finally:
        backend.destroy(None, instance, [])


@pytest.mark.parametrize('vif, message', [
    (_vif('fa:16:3e:00:00:02', physnet='elsewhere', switch=None),
     'hyperv_vswitch'),
    (_vif('fa:16:3e:00:00:03', vif_type='binding_failed'), 'binding_failed'),
    (_vif("fa:16:3e:00:00:04'", None), 'MAC address'),
    (_vif('fa:16:3e:00:00:05', 4095), 'VLAN id 4095'),
    (_vif('fa:16:3e:00:00:07', vif_type='ovs'), "vif_type 'ovs' is not"),
])
def test_unpluggable_ports_are_refused_before_the_vm_exists(
        make_backend, hyperv_sim, tmp_path, vif, message):
    backend = make_backend()
    instance = make_instance()
    with pytest.raises(REFUSALS, match=message):
        _spawn(backend, tmp_path, instance, [vif])
    assert instance.uuid not in hyperv_sim.vms()
    assert not [f for f in hyperv_sim.storage_files() if instance.uuid in f]


# -- faults -----------------------------------------------------------------

def test_cmdlet_failure_names_the_cmdlet_and_keeps_staged_disks(
        make_backend, hyperv_sim, tmp_path):
    backend = make_backend()
    instance = make_instance()
    staged = backend.stage_disks(None, instance,
                                 [_boot_disk(backend, tmp_path)])
    hyperv_sim.fail_cmdlet('Start-VM', 'The hypervisor is not running.')
    with pytest.raises(remote.HyperVCommandError,
                       match='Start-VM failed: The hypervisor is not '
                             'running'):
        backend.spawn_from_disks(None, instance, staged, [], IMAGE_META)
    assert instance.uuid not in hyperv_sim.vms()
    assert [f for f in hyperv_sim.storage_files() if instance.uuid in f] \
        == ['xhv-staged-%s/disk-0.vhdx' % instance.uuid]
    backend.discard_staged_disks(None, instance, staged)
    assert not [f for f in hyperv_sim.storage_files() if instance.uuid in f]


def test_wsman_fault_is_an_error(make_backend, hyperv_sim):
    backend = make_backend()
    hyperv_sim.fail_wsman('Receive', 'The WinRM service is overloaded.')
    with pytest.raises(remote.HyperVCommandError,
                       match='Get-VM failed: WS-Management fault '
                             '2150858770: The WinRM service is overloaded'):
        backend.list_instance_uuids()
    assert isinstance(backend.list_instance_uuids(), list)


def test_one_shell_is_reused_and_reopened_when_lost(
        make_backend, hyperv_sim):
    backend = make_backend()
    before = len(hyperv_sim.scripts())
    for _ in range(3):
        backend.list_instance_uuids()
    shells = {s['shell'] for s in hyperv_sim.scripts()[before:]}
    assert len(shells) == 1
    # The host forgot the shell (service restart): a new one, same call.
    hyperv_sim.fail_wsman('Command', 'shell not found', code=2150858843)
    before = len(hyperv_sim.scripts())
    backend.list_instance_uuids()
    after = hyperv_sim.scripts()[before:]
    assert len(after) == 1 and after[0]['shell'] not in shells


# -- lifecycle details --------------------------------------------------------

def test_soft_reboot_falls_back_to_hard_without_guest_shutdown(
        make_backend, hyperv_sim, tmp_path):
    backend = make_backend()
    instance = make_instance()
    _spawn(backend, tmp_path, instance)
    try:
        starts = hyperv_sim.vms()[instance.uuid]['Starts']
        before = len(hyperv_sim.scripts())
        backend.reboot(None, instance, [], 'SOFT')
        ran = hyperv_sim.scripts()[before:]
        assert backend.get_info(instance).state == power_state.RUNNING
        assert hyperv_sim.vms()[instance.uuid]['Starts'] == starts + 1
        # A clean shutdown first; the guest has no shutdown service.
        assert 'Stop-VM -Name' in ran[-2]['script'] and ran[-2]['exit'] == 1
        assert 'Restart-VM' in ran[-1]['script'] and ran[-1]['exit'] == 0
        backend.power_off(instance, timeout=5)
        assert backend.get_info(instance).state == power_state.SHUTDOWN
    finally:
        backend.destroy(None, instance, [])


def test_resources_and_foreign_vms(make_backend, hyperv_sim):
    backend = make_backend()
    res = backend.get_available_resource('XHV-HV01')
    assert (res['vcpus'], res['memory_mb'], res['hypervisor_type']) == (
        16, 64 * 1024, 'hyperv')
    assert res['local_gb'] > 0
    assert backend.get_available_nodes() == ['XHV-HV01']
    assert backend.get_nodenames_by_uuid() == {res['uuid']: 'XHV-HV01'}
    session = winrm.Session(
        'https://%s:%d/wsman' % (hyperv_sim.info.host, hyperv_sim.info.port),
        auth=(hyperv_sim.info.username, hyperv_sim.info.password),
        transport='ntlm', server_cert_validation='validate',
        ca_trust_path=hyperv_sim.info.ca_file)
    result = session.run_ps("New-VM -Name 'not-nova' -MemoryStartupBytes "
                            "256MB -NoVHD | Out-Null")
    assert result.status_code == 0, result.std_err
    assert 'not-nova' in hyperv_sim.vms()
    assert 'not-nova' not in backend.list_instance_uuids()


def test_many_ports_and_the_command_line_limit(make_backend, hyperv_sim,
                                               tmp_path):
    backend = make_backend()
    instance = make_instance()
    vifs = [_vif('fa:16:3e:01:00:%02x' % n, 100 + n) for n in range(24)]
    _spawn(backend, tmp_path, instance, vifs)
    try:
        adapters = hyperv_sim.vms()[instance.uuid]['NetworkAdapters']
        assert [a['AccessVlanId'] for a in adapters] == list(range(100, 124))
    finally:
        backend.destroy(None, instance, [])
    from nova_xhv.backends.hyperv import script as ps
    with pytest.raises(remote.HyperVCommandError,
                       match='Set-VM failed: a .*-character script does not '
                             'fit on a Windows command line'):
        backend._remote.run(ps.script(ps.command(
            'Set-VM', Name=instance.uuid, Notes='n' * 4000)), 'Set-VM')


def test_the_binding_names_the_vswitch(make_backend, own_sim, tmp_path):
    # XHV's ML2 driver puts the switch mapped in Neutron's configuration
    # into the binding: it wins over [xhv_hyperv] vswitch_mappings.
    sim = own_sim(switches=('xhv-external', 'Datacenter'))
    backend = make_backend(sim=sim)
    instance = make_instance()
    vif = _vif('fa:16:3e:00:00:08', 12)
    vif['details']['hyperv_vswitch'] = 'Datacenter'
    _spawn(backend, tmp_path, instance, [vif])
    adapter = sim.vms()[instance.uuid]['NetworkAdapters'][0]
    assert (adapter['SwitchName'], adapter['AccessVlanId']) == (
        'Datacenter', 12)
