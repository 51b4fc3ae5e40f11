"""The Xen backend on its test bed: the xapi simulator, over TLS.

The conformance suite, plus what only Xen has: errors at init_host,
sessions (re-login after SESSION_INVALID, logout at shutdown), xapi
failures as Nova exceptions with the code kept, and port plugging.
"""

import os
import ssl
import xmlrpc.client

from nova.compute import power_state
from nova import exception
from nova import objects
from oslo_config import cfg
from oslo_config import fixture as config_fixture
from oslo_utils import uuidutils
import pytest

from nova_xhv.backends.xenapi import backend as xen_backend
from nova_xhv.backends.xenapi import session as xsession
from nova_xhv.backends.xenapi import vm as vmops
from tests.fixtures import disks
from tests.fixtures import vcsim as vcsim_fixture
from tests.fixtures.wait import wait_for
from tests.fixtures import xapi
from tests.functional.backends import conformance

objects.register_all()
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope='module')
def sim():
    server = xapi.XapiSimulator().start()
    yield server
    server.stop()


@pytest.fixture
def make_backend(sim, tmp_path):
    fixture = config_fixture.Config(cfg.CONF)
    fixture.setUp()
    built = []

    def make(start=True, **overrides):
        options = dict(url=sim.url, username=sim.username,
                       password=sim.password, ca_file=sim.ca_file,
                       staging_dir=str(tmp_path / 'staging'),
                       network_map={'public': xapi.SECOND_NETWORK},
                       sr=None, template='Other install media',
                       default_network=None,
                       # This machine's folder stands for the export, and
                       # for the compute's mount of it.
                       volume_exports=['127.0.0.1:%s=%s' % (
                           tmp_path / 'nfs-export', tmp_path / 'nfs-export')])
        options.update(overrides)
        for name, value in options.items():
            fixture.config(group='xhv_xenapi', **{name: value})
        # init_host writes Nova's compute_id there (Nova also looks next
        # to the config files, an option a parsed command line registers).
        fixture.config(state_path=str(tmp_path / 'state'))
        if 'config_file' not in cfg.CONF:
            fixture.register_opt(cfg.MultiStrOpt('config_file', default=[]))
        backend = xen_backend.XenAPIBackend(None)
        if start:
            backend.init_host('xhv-test-host')
        built.append(backend)
        return backend

    yield make
    for backend in built:
        backend.cleanup_host('xhv-test-host')
    fixture.cleanUp()


def make_instance():
    return objects.Instance(
        uuid=uuidutils.generate_uuid(), display_name='xhv-conformance',
        flavor=objects.Flavor(vcpus=1, memory_mb=128, root_gb=1,
                              ephemeral_gb=0, swap=0))


class XenBed(conformance.TestBed):

    def __init__(self, backend, sim):
        self.backend = backend
        self.sim = sim
        self.admin = sim.session()
        # The xapi network the bed's physical network maps to (network
        # contract: the switch of XHV-bound families).
        self.switch = xapi.SECOND_NETWORK

    def new_instance(self):
        return make_instance()

    def leftovers(self, instance):
        x = self.admin.xenapi
        found = sorted(
            'VM ' + r['name_label'] for r in x.VM.get_all_records().values()
            if instance.uuid in r['name_label']
            or r['other_config'].get('nova_uuid') == instance.uuid)
        vdis = x.VDI.get_all_records().values()
        found += sorted(
            'VDI ' + r['name_label'] for r in vdis
            if instance.uuid in r['name_label']
            or instance.uuid in r['other_config'].values())
        # Files no VDI owns (spooled uploads, lost VDIs).
        known = {r['uuid'] + '.raw' for r in vdis}
        found += sorted('file ' + n for n in os.listdir(self.sim.sr_dir())
                        if n not in known)
        return found

    def nfs_export(self, tmp_path):
        export = tmp_path / 'nfs-export'
        export.mkdir()
        os.chmod(str(export), 0o777)
        return str(export)

    def attached_volume_files(self, instance):
        x = self.admin.xenapi
        refs = x.VM.get_by_name_label(instance.uuid)
        found = []
        for vbd in (x.VM.get_VBDs(refs[0]) if refs else []):
            record = x.VBD.get_record(vbd)
            if record['other_config'].get('xhv_volume'):
                # What the pool opens: the VDI's location in its SR.
                found.append(x.VDI.get_location(record['VDI']))
        return found


@pytest.fixture
def bed(make_backend, sim):
    return XenBed(make_backend(), sim)


class TestXenConformance(conformance.BackendConformance):
    pass


def _guest(bed, tmp_path, **kwargs):
    return conformance.BackendConformance()._guest(bed, tmp_path, **kwargs)


def _rpc(sim, method, *params):
    """One raw XML-RPC call, bypassing the SDK's re-login."""
    context = ssl.create_default_context(cafile=sim.ca_file)
    proxy = xmlrpc.client.ServerProxy(sim.url, context=context)
    return getattr(proxy, method)(*params)


# -- init_host ---------------------------------------------------------------

def test_bad_password_is_a_clear_error_without_the_password(make_backend):
    with pytest.raises(xsession.XapiConnectionError) as caught:
        make_backend(password='not-the-password')
    assert caught.value.kwargs['xapi_code'] == 'SESSION_AUTHENTICATION_FAILED'
    assert 'username and password' in str(caught.value)
    assert 'not-the-password' not in str(caught.value)


def test_tls_mismatch_is_refused(make_backend, tmp_path):
    other_ca, _, _ = vcsim_fixture.make_ca_and_server_cert(str(tmp_path))
    with pytest.raises(xsession.XapiConnectionError) as caught:
        make_backend(ca_file=other_ca)
    assert caught.value.kwargs['xapi_code'] == 'TLS'
    assert 'ca_file' in str(caught.value)
    # Without a CA file: the system trust store, which does not know it.
    with pytest.raises(xsession.XapiConnectionError):
        make_backend(ca_file=None)


def test_unknown_sr_template_or_network_is_a_clear_error(make_backend):
    for option, value, words in (
            ('sr', 'no-such-sr', "storage repository named 'no-such-sr'"),
            ('template', 'no-such-template', 'template'),
            ('network_map', {'public': 'no-such-net'}, 'network_map'),
            ('default_network', 'no-such-net', 'default_network')):
        with pytest.raises(xsession.XapiConfigError) as caught:
            make_backend(**{option: value})
        assert words in str(caught.value), option


def test_sr_by_uuid_and_resources(make_backend, sim):
    backend = make_backend(sr=sim.srs[xapi.SR]['uuid'])
    node = backend.get_available_nodes()[0]
    res = backend.get_available_resource(node)
    assert res['hypervisor_type'] == 'xen'
    assert res['vcpus'] == 16 and res['memory_mb'] == 64 * 1024
    assert res['local_gb'] == 1024
    assert res['supported_instances'][0][1] == 'xen'


def test_node_identity_persists_for_the_next_start(make_backend, tmp_path):
    # Nova refuses a compute's second start without $state_path/compute_id
    # (ComputeManager._ensure_existing_node_identity, after init_host).
    compute_id = tmp_path / 'state' / 'compute_id'
    first = make_backend()
    pool = first.get_available_nodes()[0]
    assert compute_id.read_text() == pool
    assert first.get_nodenames_by_uuid() == {pool: pool}
    make_backend()  # a restart: the file is kept as it is
    assert compute_id.read_text() == pool
    compute_id.write_text('5c8cd4e5-7a3b-4d4c-9b7e-0e4f3b2a1c9d')
    make_backend()  # another pool since: Nova makes a new node
    assert compute_id.read_text() == '5c8cd4e5-7a3b-4d4c-9b7e-0e4f3b2a1c9d'


# -- sessions and failures --------------------------------------------------

def test_session_invalid_logs_in_again(bed, sim):
    old = bed.backend.xapi._session.handle
    sim.expire_sessions()
    wait_for(
        lambda: _rpc(sim, 'VM.get_all', old)['Status'] == 'Failure', 10,
        what='the simulator to expire sessions')
    assert bed.backend.list_instances() == []
    assert bed.backend.xapi._session.handle != old
    bed.admin = sim.session()  # the test's own session expired too


def test_transfers_log_in_again_after_session_invalid(bed, sim, tmp_path):
    x = bed.admin.xenapi
    vdi = x.VDI.create({'name_label': 'xhv-relogin', 'SR': bed.backend._sr,
                        'virtual_size': str(4 * disks.MiB), 'type': 'user',
                        'sharable': False, 'read_only': False,
                        'other_config': {}})
    uuid = x.VDI.get_uuid(vdi)
    data = str(tmp_path / 'data.raw')
    disks.make_raw_disk(data, 4 * disks.MiB)
    old = bed.backend.xapi._session.handle
    sim.expire_sessions()
    wait_for(
        lambda: _rpc(sim, 'VM.get_all', old)['Status'] == 'Failure', 10,
        what='the simulator to expire sessions')
    bed.backend.xapi.import_vdi(vdi, uuid, data, 'raw')
    assert disks.sha256_file(sim.vdi_file(uuid)) == disks.sha256_file(data)
    sim.expire_sessions()
    wait_for(
        lambda: _rpc(sim, 'VM.get_all', bed.backend.xapi._session.handle)[
            'Status'] == 'Failure', 10, what='the sessions to expire again')
    back = str(tmp_path / 'back.raw')
    bed.backend.xapi.export_vdi(vdi, uuid, back, 'raw')
    assert disks.sha256_file(back) == disks.sha256_file(data)
    bed.admin = sim.session()
    bed.admin.xenapi.VDI.destroy(vdi)


def test_logout_at_shutdown(make_backend, sim):
    backend = make_backend()
    handle = backend.xapi._session.handle
    assert _rpc(sim, 'VM.get_all', handle)['Status'] == 'Success'
    backend.cleanup_host('xhv-test-host')
    answer = _rpc(sim, 'VM.get_all', handle)
    assert answer['ErrorDescription'][0] == 'SESSION_INVALID'


def test_xapi_failures_keep_their_code(bed, tmp_path):
    instance = _guest(bed, tmp_path)
    try:
        ref = vmops.get(bed.backend.xapi, instance)
        with pytest.raises(exception.InstanceInvalidState) as caught:
            bed.backend.xapi.call('VM.start', ref, False, False,
                                  instance=instance)
        assert 'VM_BAD_POWER_STATE' in str(caught.value)
        with pytest.raises(xsession.XapiError) as caught:
            bed.backend.xapi.call('VM.destroy', ref)
        assert xsession.error_code(caught.value) == 'VM_BAD_POWER_STATE'
        assert 'OpaqueRef' not in str(caught.value)
    finally:
        bed.destroy(instance)


def test_soft_reboot_and_clean_power_off(bed, tmp_path):
    backend = bed.backend
    instance = _guest(bed, tmp_path)
    try:
        backend.reboot(None, instance, [], 'SOFT')
        assert backend.get_info(instance).state == power_state.RUNNING
        backend.power_off(instance, timeout=10)
        assert backend.get_info(instance).state == power_state.SHUTDOWN
        backend.reboot(None, instance, [], 'SOFT')  # a halted guest starts
        assert backend.get_info(instance).state == power_state.RUNNING
    finally:
        bed.destroy(instance)


def test_clean_operations_fall_back_to_hard_ones(bed, tmp_path, sim):
    # An HVM guest without PV drivers cannot shut down or reboot cleanly.
    backend = bed.backend
    instance = _guest(bed, tmp_path)
    refused = ['VM_MISSING_PV_DRIVERS', 'OpaqueRef:x']
    sim.inject(calls={'VM.clean_reboot': refused,
                      'VM.clean_shutdown': refused})
    try:
        backend.reboot(None, instance, [], 'SOFT')
        assert backend.get_info(instance).state == power_state.RUNNING
        backend.power_off(instance, timeout=10)
        assert backend.get_info(instance).state == power_state.SHUTDOWN
    finally:
        sim.inject()
        bed.destroy(instance)


# -- ports -------------------------------------------------------------------

def _vif(mac, port_id=None):
    net = xapi.SECOND_NETWORK
    return {'id': port_id or uuidutils.generate_uuid(), 'address': mac,
            'type': 'xenapi', 'network': {'id': uuidutils.generate_uuid(),
                                          'label': 'public'},
            'details': {'xen_network': net, 'xen_segment_network': net,
                        'network_type': 'flat', 'physical_network': 'public',
                        'segmentation_id': None}}


def _staged(bed, tmp_path, instance):
    folder = str(tmp_path / 'in')
    os.makedirs(folder)
    return bed.backend.stage_disks(None, instance,
                                   [bed.native_disk(folder, 'boot')])


def test_ports_become_vifs_with_the_port_mac_on_the_mapped_network(
        bed, tmp_path, sim):
    backend = bed.backend
    instance = make_instance()
    staged = _staged(bed, tmp_path, instance)
    vifs = [_vif('FA:16:3E:00:00:01'), _vif('fa:16:3e:00:00:02')]
    backend.spawn_from_disks(None, instance, staged, vifs,
                             objects.ImageMeta.from_dict({}))
    try:
        assert backend.plugged_ports(instance) == [
            (vifs[0]['id'], 'fa:16:3e:00:00:01'),
            (vifs[1]['id'], 'fa:16:3e:00:00:02')]
        x = bed.admin.xenapi
        wanted = x.network.get_by_uuid(sim.networks[xapi.SECOND_NETWORK])
        ref = vmops.get(backend.xapi, instance)
        assert [x.VIF.get_network(v) for v in x.VM.get_VIFs(ref)] == \
            [wanted, wanted]
    finally:
        bed.destroy(instance)
    assert bed.leftovers(instance) == []


def test_a_bad_port_is_refused_before_anything_is_made(bed, tmp_path):
    backend = bed.backend
    instance = make_instance()
    staged = _staged(bed, tmp_path, instance)
    before = bed.leftovers(instance)
    with pytest.raises(xen_backend.VifRefused):
        backend.spawn_from_disks(None, instance, staged,
                                 [_vif('fa:16:3e:00:00:01'),
                                  _vif('not-a-mac')],
                                 objects.ImageMeta.from_dict({}))
    assert bed.leftovers(instance) == before  # the staged disk only
    backend.discard_staged_disks(None, instance, staged)
    assert bed.leftovers(instance) == []
