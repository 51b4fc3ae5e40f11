"""Neutron ports on vSphere (vcsim): distributed port groups and NICs.

What the binding of XHV's ML2 driver names (vif_type dvs, the switch, the
port group for the segment, its VLAN) is what the backend plugs; vcsim's
own inventory is read back through an independent session.
"""

from nova import exception
from oslo_utils import uuidutils
import pytest
from pyVmomi import vim

from nova_xhv.backends import base
from nova_xhv.backends.vmware import network
from nova_xhv.disk import DiskDescriptor
from tests.functional.vmware.conftest import make_instance

pytestmark = pytest.mark.timeout(120)


def _vif(physnet, vlan=None, n=1, switch='DVS0'):
    group = 'xhv-%s%s' % (physnet, '-%d' % vlan if vlan else '')
    return {'id': uuidutils.generate_uuid(), 'type': 'dvs',
            'address': 'FA:16:3E:10:00:%02X' % n,
            'details': {'xhv_family': 'vmware',
                        'network_type': 'vlan' if vlan else 'flat',
                        'physical_network': physnet,
                        'segmentation_id': vlan, 'dvs_name': switch,
                        'dvs_port_group_name': group}}


def _spawn(backend, vifs, disk, power_on=False):
    instance = make_instance()
    staged = backend.stage_disks(None, instance, [DiskDescriptor(
        format='vmdk', subformat='streamOptimized',
        virtual_size=disk['size'], path=disk['vmdk'])])
    try:
        backend.spawn_from_disks(None, instance, staged, vifs, None,
                                 power_on=power_on)
    except Exception:
        backend.discard_staged_disks(None, instance, staged)
        raise
    return instance


def _port_groups(si):
    view = si.content.viewManager.CreateContainerView(
        si.content.rootFolder, [vim.dvs.DistributedVirtualPortgroup], True)
    try:
        return {pg.key: pg for pg in view.view}
    finally:
        view.Destroy()


def _no_vm(si, instance):
    return si.content.searchIndex.FindByUuid(
        None, instance.uuid, True, True) is None


def test_each_port_is_a_nic_with_its_mac_on_its_segment_port_group(
        make_backend, admin_si, guest_disk):
    backend = make_backend(create_port_groups=True)
    physnet = 'net%s' % uuidutils.generate_uuid()[:8]
    vifs = [_vif(physnet, 101, 1), _vif(physnet, None, 2)]
    instance = _spawn(backend, vifs, guest_disk)
    try:
        vm = admin_si.content.searchIndex.FindByUuid(None, instance.uuid,
                                                     True, True)
        nics = [d for d in vm.config.hardware.device
                if isinstance(d, vim.vm.device.VirtualEthernetCard)]
        groups = _port_groups(admin_si)
        assert len(nics) == 2
        for nic, vif in zip(sorted(nics, key=lambda d: d.key), vifs):
            assert isinstance(nic, vim.vm.device.VirtualVmxnet3)
            assert nic.addressType.lower() == 'manual'
            assert nic.macAddress.lower() == vif['address'].lower()
            assert nic.externalId == vif['id']
            group = groups[nic.backing.port.portgroupKey]
            assert group.name == vif['details']['dvs_port_group_name']
            assert group.config.distributedVirtualSwitch.name == 'DVS0'
            assert group.config.defaultPortConfig.vlan.vlanId == (
                vif['details']['segmentation_id'] or 0)
        extra = {o.key: o.value for o in vm.config.extraConfig}
        assert extra['nvp.iface-id.0'] == vifs[0]['id']
        assert extra['nvp.iface-id.1'] == vifs[1]['id']
        assert backend.plugged_ports(instance) == [
            (v['id'], v['address'].lower()) for v in vifs]
    finally:
        backend.destroy(None, instance, vifs)


def test_a_second_server_reuses_the_port_group(make_backend, admin_si,
                                               guest_disk):
    backend = make_backend(create_port_groups=True)
    physnet = 'net%s' % uuidutils.generate_uuid()[:8]
    first = _spawn(backend, [_vif(physnet, 7)], guest_disk)
    second = _spawn(backend, [_vif(physnet, 7, 2)], guest_disk)
    try:
        named = [g for g in _port_groups(admin_si).values()
                 if g.name == 'xhv-%s-7' % physnet]
        assert len(named) == 1
    finally:
        backend.destroy(None, first, [])
        backend.destroy(None, second, [])


@pytest.mark.parametrize('case,reason', [
    ('other-vlan', 'has VLAN 9, the segment 5'),
    ('no-create', 'does not exist on DVS0'),
    ('no-switch', "distributed switch 'NO-SUCH-DVS'"),
])
def test_a_port_it_cannot_place_is_refused_and_leaves_no_vm(
        make_backend, admin_si, guest_disk, case, reason):
    physnet = 'net%s' % uuidutils.generate_uuid()[:8]
    if case == 'other-vlan':
        # The same name with another VLAN exists: never reused.
        setup = make_backend(create_port_groups=True)
        first = _spawn(setup, [_vif(physnet, 9)], guest_disk)
        setup.destroy(None, first, [])
        vif = _vif(physnet, 9)
        vif['details']['segmentation_id'] = 5
        backend = setup
    elif case == 'no-create':
        backend = make_backend(create_port_groups=False)
        vif = _vif(physnet, 5)
    else:
        backend = make_backend(create_port_groups=True)
        vif = _vif(physnet, 5, switch='NO-SUCH-DVS')
    before = set(_port_groups(admin_si))
    instance = make_instance()
    with pytest.raises(network.PortGroupRefused) as caught:
        _spawn(backend, [_vif(physnet, 5, 2, switch='DVS0'), vif]
               if case == 'no-switch' else [vif], guest_disk)
    assert reason in str(caught.value)
    assert set(_port_groups(admin_si)) == before  # nothing created
    assert _no_vm(admin_si, instance)


def test_a_port_neutron_did_not_bind_is_refused_by_spawn(
        make_backend, admin_si):
    backend = make_backend()
    vif = dict(_vif('x'), type='binding_failed')
    instance = make_instance()
    with pytest.raises(base.VifRefused, match='did not bind'):
        backend.spawn(None, instance, None, [], None, {}, [vif])
    assert _no_vm(admin_si, instance)


def test_power_cycle_keeps_the_nics(make_backend, guest_disk):
    backend = make_backend(create_port_groups=True)
    vif = _vif('net%s' % uuidutils.generate_uuid()[:8], 33)
    instance = _spawn(backend, [vif], guest_disk, power_on=True)
    try:
        backend.power_off(instance)
        backend.power_on(None, instance, [vif])
        assert backend.plugged_ports(instance) == [
            (vif['id'], vif['address'].lower())]
    finally:
        backend.destroy(None, instance, [vif])
    with pytest.raises(exception.InstanceNotFound):
        backend.plugged_ports(instance)
