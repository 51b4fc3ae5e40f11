"""XHV's ML2 mechanism driver inside a real neutron-server, and the
binding it makes plugged by the vSphere backend on vcsim.

neutron-server (API under uWSGI, ML2, SQLite) runs with
``mechanism_drivers = xhv`` and ``[ml2_xhv]`` naming one vSphere host;
every check reads Neutron's own answers (port status, binding, extended
bindings) and its log.
"""

from oslo_utils import uuidutils
import pytest
from pyVmomi import vim

from nova_xhv.disk import DiskDescriptor
from tests.fixtures import neutron as neutron_fixture
from tests.fixtures.vcsim import vcsim  # noqa: F401
from tests.functional.vmware.conftest import admin_si  # noqa: F401
from tests.functional.vmware.conftest import conf  # noqa: F401
from tests.functional.vmware.conftest import guest_disk  # noqa: F401
from tests.functional.vmware.conftest import make_backend  # noqa: F401
from tests.functional.vmware.conftest import make_instance

pytestmark = pytest.mark.timeout(180)

VC_HOST = 'vc-compute-1'


@pytest.fixture(scope='module')
def neutron():
    server = neutron_fixture.NeutronServer(
        mechanism_drivers='xhv',
        vlan_ranges='public:100:200,unmapped:100:200',
        ml2_xhv={'host_families': '%s:vsphere' % VC_HOST,
                 # 'unmapped' reaches no switch of the host
                 'physical_network_mappings':
                     'vmware:public:DVS0,%s:flatnet:DVS0' % VC_HOST})
    server.start()
    try:
        yield server
    except Exception:
        print(server.log_tail())
        raise
    finally:
        server.stop()


def _network(neutron, **kwargs):
    name = 'n-%s' % uuidutils.generate_uuid()[:8]
    return neutron.network(name, **kwargs)


def _vif(port):
    """The VIF Nova's network_info carries for a bound port."""
    return {'id': port['id'], 'type': port['binding:vif_type'],
            'address': port['mac_address'],
            'details': port['binding:vif_details']}


def test_a_vsphere_host_gets_dvs_with_the_segment_and_the_port_is_active(
        neutron):
    net, _subnet = _network(neutron, network_type='vlan',
                            segmentation_id=142)
    port = neutron.port(net['id'], VC_HOST, device_owner='compute:nova')
    assert port['binding:vif_type'] == 'dvs'
    assert port['binding:host_id'] == VC_HOST
    assert port['status'] == 'ACTIVE'
    details = port['binding:vif_details']
    assert details['dvs_name'] == 'DVS0'
    assert details['dvs_port_group_name'] == 'xhv-public-142'
    assert details['segmentation_id'] == 142
    assert details['xhv_family'] == 'vmware'
    assert details['port_filter'] is False


def test_flat_networks_bind_without_a_vlan(neutron):
    net, _subnet = _network(neutron, physnet='flatnet', cidr='10.21.0.0/24')
    port = neutron.port(net['id'], VC_HOST)
    assert port['binding:vif_type'] == 'dvs'
    assert port['binding:vif_details']['segmentation_id'] is None
    assert port['binding:vif_details']['dvs_port_group_name'] == \
        'xhv-flatnet'


def test_a_host_it_cannot_bind_fails_with_the_reason_in_the_log(neutron):
    net, _subnet = _network(neutron, network_type='vlan', physnet='unmapped',
                            segmentation_id=143, cidr='10.22.0.0/24')
    port = neutron.port(net['id'], VC_HOST)
    assert port['binding:vif_type'] == 'binding_failed'
    assert port['status'] == 'DOWN'
    log = neutron.server_log()
    assert ('XHV cannot bind port %s to host %s (family vmware)'
            % (port['id'], VC_HOST)) in log
    assert "physical network 'unmapped'" in log


def test_hosts_it_does_not_know_are_left_to_other_drivers(neutron):
    net, _subnet = _network(neutron, cidr='10.23.0.0/24')
    port = neutron.port(net['id'], 'kvm-compute-1')
    assert port['binding:vif_type'] == 'binding_failed'
    assert ('XHV cannot bind port %s' % port['id']) not in \
        neutron.server_log()


def test_an_inactive_binding_shows_in_advance_whether_a_host_can_bind(
        neutron):
    # What XHV's early check asks before a move powers anything off.
    net, _subnet = _network(neutron, network_type='vlan',
                            segmentation_id=144, cidr='10.24.0.0/24')
    port = neutron.port(net['id'], 'kvm-compute-1',
                        device_owner='compute:nova')
    path = '/v2.0/ports/%s/bindings' % port['id']
    made = neutron.request('POST', path, {'binding': {'host': VC_HOST}})
    assert made['binding']['status'] == 'INACTIVE'
    assert made['binding']['vif_type'] == 'dvs'
    neutron.request('DELETE', '%s/%s' % (path, VC_HOST))
    with pytest.raises(neutron_fixture.NeutronError) as caught:
        neutron.request('POST', path, {'binding': {'host': 'kvm-compute-2'}})
    assert b'PortBindingError' in caught.value.body
    hosts = [b['host'] for b in neutron.request('GET', path)['bindings']]
    assert hosts == ['kvm-compute-1']


def test_the_vsphere_backend_plugs_what_neutron_bound(
        neutron, make_backend, admin_si, guest_disk):  # noqa: F811
    net, _subnet = _network(neutron, network_type='vlan',
                            segmentation_id=145, cidr='10.25.0.0/24')
    ports = [neutron.port(net['id'], VC_HOST, device_owner='compute:nova')
             for _ in range(2)]
    backend = make_backend(create_port_groups=True)
    instance = make_instance()
    staged = backend.stage_disks(None, instance, [DiskDescriptor(
        format='vmdk', subformat='streamOptimized',
        virtual_size=guest_disk['size'], path=guest_disk['vmdk'])])
    backend.spawn_from_disks(None, instance, staged,
                             [_vif(p) for p in ports], None)
    try:
        vm = admin_si.content.searchIndex.FindByUuid(None, instance.uuid,
                                                     True, True)
        nics = sorted((d for d in vm.config.hardware.device
                       if isinstance(d, vim.vm.device.VirtualEthernetCard)),
                      key=lambda d: d.key)
        groups = {}
        for dc in admin_si.content.rootFolder.childEntity:
            for item in dc.networkFolder.childEntity:
                if isinstance(item, vim.dvs.DistributedVirtualPortgroup):
                    groups[item.key] = item
        assert [(n.externalId, n.macAddress.lower()) for n in nics] == [
            (p['id'], p['mac_address']) for p in ports]
        for nic in nics:
            group = groups[nic.backing.port.portgroupKey]
            assert group.name == 'xhv-public-145'
            assert group.config.defaultPortConfig.vlan.vlanId == 145
        # The ports stay bound to the vSphere compute and ACTIVE.
        for port in ports:
            again = neutron.request('GET', '/v2.0/ports/%s'
                                    % port['id'])['port']
            assert (again['status'], again['binding:host_id'],
                    again['binding:vif_type']) == ('ACTIVE', VC_HOST, 'dvs')
    finally:
        backend.destroy(None, instance, [])
