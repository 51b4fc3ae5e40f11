"""A server's Neutron ports follow it between families, through Nova.

Nova's harness runs Neutron as its NeutronFixture (in memory).  The one
thing that fixture cannot do is bind like ML2: here the binding of every
port to a host -- Nova's ``binding:host_id`` updates and the extended
binding API -- is made by XHV's real ML2 mechanism driver
(neutron_xhv.ml2.mech_driver.XHVMechanismDriver.bind_port) with the
``[ml2_xhv]`` settings below, on one VLAN segment (physical network
``public``, VLAN 120).  tests/functional/neutron runs the same driver in a
real neutron-server.

Proves: the port keeps its id and MAC on the vSphere NIC (vcsim) and on
the fake family's NIC record, Nova's own rebinding moves the binding to
the destination, a revert rebinds it to the source, and a destination
that cannot bind the port refuses the move before the source powers off.
"""

import copy

from neutron_lib.api.definitions import portbindings
from neutron_lib.plugins.ml2 import api as ml2_api
from neutronclient.common import exceptions as neutron_client_exc
from nova.compute import power_state
from nova.network import neutron as neutron_api
from nova import objects
from nova.tests import fixtures as nova_fixtures
from oslo_config import cfg
from pyVmomi import vim

from neutron_xhv.ml2 import mech_driver
from tests.functional.migration import base

NETWORK = nova_fixtures.NeutronFixture.network_1['id']
SEGMENT = {ml2_api.ID: 'segment-public-120', ml2_api.NETWORK_TYPE: 'vlan',
           ml2_api.PHYSICAL_NETWORK: 'public', ml2_api.SEGMENTATION_ID: 120}
UNBINDABLE = 'fake2'  # a fake host whose switch maps no 'public'


class _PortContext(object):

    def __init__(self, port, host):
        self.current = {'id': port['id'],
                        portbindings.VNIC_TYPE: port['binding:vnic_type']}
        self.host = host
        self.segments_to_bind = [SEGMENT]
        self.bound = None

    def set_binding(self, segment_id, vif_type, vif_details, status=None):
        self.bound = (vif_type, vif_details)


class XHVBindingNeutron(object):
    """NeutronFixture whose bindings XHV's ML2 driver makes (module doc)."""

    def __init__(self, fixture, others=None):
        #: host -> (vif_type, vif_details) for hosts another mechanism
        #: driver (OVN) binds.
        self.others = others or {}
        conf = cfg.ConfigOpts()
        self.driver = mech_driver.XHVMechanismDriver(conf)
        mech_driver.xhv_conf.register_opts(conf)
        conf.set_override('host_families', {
            base.VMW: 'vmware', base.FAKE: 'fake', UNBINDABLE: 'fake'},
            group='ml2_xhv')
        conf.set_override('physical_network_mappings', [
            'vmware:public:DVS0', '%s:public:fake-switch' % base.FAKE],
            group='ml2_xhv')
        conf([])
        self.driver.initialize()
        self.fixture = fixture
        self._update_port = fixture.update_port
        fixture.update_port = self.update_port
        fixture.create_port_binding = self.create_port_binding

    def _bind(self, port, host):
        if host in self.others:
            return copy.deepcopy(self.others[host])
        ctx = _PortContext(port, host)
        self.driver.bind_port(ctx)
        return ctx.bound  # None: binding_failed

    def update_port(self, port_id, body=None):
        host = (body or {}).get('port', {}).get('binding:host_id')
        details = None
        if host:
            port = self.fixture._ports[port_id]
            bound = self._bind(port, host)
            vif_type, details = bound or ('binding_failed', {})
            port['binding:vif_type'] = vif_type
            port['binding:vif_details'] = copy.deepcopy(details)
        result = self._update_port(port_id, body)
        if host:
            self.fixture._port_bindings[port_id][host]['vif_details'] = \
                copy.deepcopy(details)
        return result

    def create_port_binding(self, port_id, body):
        port = self.fixture._ports[port_id]
        binding = copy.deepcopy(body['binding'])
        bound = self._bind(port, binding['host'])
        if bound is None:
            raise neutron_client_exc.NeutronClientException(
                status_code=500, message='PortBindingError')
        binding.update(vif_type=bound[0], vif_details=bound[1],
                       vnic_type=port['binding:vnic_type'],
                       status='INACTIVE'
                       if self.fixture._port_bindings[port_id] else 'ACTIVE')
        self.fixture._port_bindings[port_id][binding['host']] = binding
        return {'binding': copy.deepcopy(binding)}


class PortChecks(object):
    """Helpers of the tests with ports (mixed into a harness case)."""

    def _port(self, server):
        ports = [p for p in self.neutron._ports.values()
                 if p['device_id'] == server['id']]
        self.assertEqual(1, len(ports))
        return self.neutron.show_port(ports[0]['id'])['port']

    def _vsphere_nics(self, server):
        vm = self.si.content.searchIndex.FindByUuid(None, server['id'],
                                                    True, True)
        return [(d.externalId, d.macAddress.lower(),
                 d.backing.port.portgroupKey)
                for d in vm.config.hardware.device
                if isinstance(d, vim.vm.device.VirtualEthernetCard)]

    def _port_group_name(self, key):
        for dc in self.si.content.rootFolder.childEntity:
            for item in dc.networkFolder.childEntity:
                if isinstance(item, vim.dvs.DistributedVirtualPortgroup) \
                        and item.key == key:
                    return item.name, item.config.defaultPortConfig.vlan.vlanId
        return None

    def _driver(self, host):
        return self.computes[host].manager.driver

    def _ports(self, server):
        return sorted((self.neutron.show_port(p['id'])['port']
                       for p in self.neutron._ports.values()
                       if p['device_id'] == server['id']),
                      key=lambda p: p['id'])

    def _boot(self, host, image_id, nics=1):
        flavor = self._create_flavor(memory_mb=256, vcpu=1, disk=1,
                                     ephemeral=0)
        server = self._create_server(image_uuid=image_id, flavor_id=flavor,
                                     networks=[{'uuid': NETWORK}] * nics,
                                     host=host)
        # In this harness the instance's network info cache stays empty
        # after the boot (the port is bound and plugged); Nova builds a
        # move's network_info from that cache, so fill it the way Nova's
        # _heal_instance_info_cache task does.
        ctxt = self.cell_context()
        instance = objects.Instance.get_by_uuid(
            ctxt, server['id'], expected_attrs=['info_cache'])
        nw_info = neutron_api.API().get_instance_nw_info(
            ctxt, instance, force_refresh=True)
        self.assertEqual(nics, len(nw_info))
        return self._wait_for_server_parameter(
            server, {'status': 'ACTIVE'})

    def _assert_on_vsphere(self, server, port):
        self.assertEqual(
            (base.VMW, 'dvs'),
            (port['binding:host_id'], port['binding:vif_type']))
        (port_id, mac, group), = self._vsphere_nics(server)
        self.assertEqual((port['id'], port['mac_address']), (port_id, mac))
        self.assertEqual(('xhv-public-120', 120),
                         self._port_group_name(group))

    def _assert_on_fake(self, server, port):
        self.assertEqual(
            (base.FAKE, 'other'),
            (port['binding:host_id'], port['binding:vif_type']))
        fake = self._driver(base.FAKE).backend
        self.assertEqual([(port['id'], port['mac_address'])],
                         fake.plugged_ports(self.instance(server)))


class TestPortsFollowTheMove(PortChecks, base.CrossHypervisorTestCase):

    uses_kvm = False  # vcsim and the fake family only

    def setUp(self):
        super().setUp()
        self.binding = XHVBindingNeutron(self.neutron)
        # Port groups are named by the binding; vcsim has none of them.
        self.flags(group='xhv_vmware', create_port_groups=True)
        self.start_vmware()
        self.start_fake()

    def test_vsphere_to_fake_keeps_the_port_and_revert_rebinds_the_source(
            self):
        image_id, _raw = self.make_vmware_image()
        server = self._boot(base.VMW, image_id)
        before = self._port(server)
        self._assert_on_vsphere(server, before)

        server = self._migrate_server(server, host=base.FAKE)
        moved = self._port(server)
        self.assertEqual((before['id'], before['mac_address'],
                          before['fixed_ips']),
                         (moved['id'], moved['mac_address'],
                          moved['fixed_ips']))
        self._assert_on_fake(server, moved)

        self._revert_resize(server)
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual(base.VMW, server['OS-EXT-SRV-ATTR:host'])
        self._assert_on_vsphere(server, self._port(server))
        self._delete_server(server)

    def test_fake_to_vsphere_plugs_the_same_mac_on_the_segment_port_group(
            self):
        image_id, _raw = self.make_image('qcow2', name='fake-guest')
        server = self._boot(base.FAKE, image_id)
        before = self._port(server)
        self._assert_on_fake(server, before)

        server = self._migrate_server(server, host=base.VMW)
        self._assert_on_vsphere(server, self._port(server))
        self.assertEqual(before['mac_address'],
                         self._port(server)['mac_address'])

        self._revert_resize(server)
        server = self._wait_for_state_change(server, 'ACTIVE')
        self.assertEqual(base.FAKE, server['OS-EXT-SRV-ATTR:host'])
        self._assert_on_fake(server, self._port(server))
        self._delete_server(server)

    def test_a_destination_that_cannot_bind_refuses_before_power_off(self):
        self.start_fake(UNBINDABLE)
        image_id, _raw = self.make_vmware_image()
        server = self._boot(base.VMW, image_id)
        port = self._port(server)
        self.api.post_server_action(server['id'], {'migrate': {
            'host': UNBINDABLE}})
        server = self._wait_for_state_change(server, 'ACTIVE')
        self._wait_for_migration_status(server, ['error'])
        self.assertEqual(base.VMW, server['OS-EXT-SRV-ATTR:host'])
        # Never powered off, nothing staged, the binding untouched.
        self.assertNotIn('xhv_power_off', self.action_events(server))
        self.assertEqual(power_state.RUNNING,
                         self._driver(base.VMW).get_info(
                             self.instance(server)).state)
        self.assertEqual([], self.staged_leftovers(UNBINDABLE))
        self._assert_on_vsphere(server, self._port(server))
        self.assertEqual(port['mac_address'],
                         self._port(server)['mac_address'])
        self.assertEqual([base.VMW], sorted(
            self.neutron._port_bindings[port['id']]))

    def test_several_ports_keep_their_macs_both_ways(self):
        image_id, _raw = self.make_vmware_image()
        server = self._boot(base.VMW, image_id, nics=2)
        before = self._ports(server)
        self.assertEqual(2, len(before))
        wanted = sorted((p['id'], p['mac_address']) for p in before)
        self.assertEqual(wanted, sorted(
            nic[:2] for nic in self._vsphere_nics(server)))

        server = self._migrate_server(server, host=base.FAKE)
        fake = self._driver(base.FAKE).backend
        self.assertEqual(wanted,
                         sorted(fake.plugged_ports(self.instance(server))))
        self.assertEqual({(base.FAKE, 'other')}, {
            (p['binding:host_id'], p['binding:vif_type'])
            for p in self._ports(server)})
        self._confirm_resize(server)

        server = self._migrate_server(server, host=base.VMW)
        self.assertEqual(wanted, sorted(
            nic[:2] for nic in self._vsphere_nics(server)))
        self.assertEqual({(base.VMW, 'dvs')}, {
            (p['binding:host_id'], p['binding:vif_type'])
            for p in self._ports(server)})
        self._confirm_resize(server)
        self._delete_server(server)
