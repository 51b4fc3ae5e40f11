"""Neutron ports on vSphere: distributed port groups and NICs.

The binding (XHV's ML2 driver, vif_type ``dvs``) names the distributed
switch and the port group for the port's segment; ``Backend.nics`` has
checked both names and the VLAN before anything here runs.  A port group
is found on that switch by its exact name, or created with the segment's
VLAN when ``[xhv_vmware] create_port_groups`` allows it; one with another
VLAN is refused.  Each NIC gets the port's MAC (manual), ``externalId`` =
port id and ``nvp.iface-id.<n>`` = port id, like stock Nova's vmwareapi.
"""

from nova import exception
from oslo_log import log as logging
from pyVmomi import vim

from nova_xhv.backends.vmware import inventory

LOG = logging.getLogger(__name__)

# hw_vif_model / the family's nic_model names -> vSphere NIC classes.
NIC_CLASSES = {
    'vmxnet3': vim.vm.device.VirtualVmxnet3,
    'e1000': vim.vm.device.VirtualE1000,
    'e1000e': vim.vm.device.VirtualE1000e,
}
DEFAULT_NIC_MODEL = 'vmxnet3'
_NIC_KEY_BASE = -200


class PortGroupRefused(exception.NovaException):
    msg_fmt = ('Cannot plug Neutron port %(port_id)s on vSphere: '
               '%(reason)s')
    code = 400


def nic_model(image_meta, hardware=None):
    """The vSphere NIC model from the hardware choice or the image."""
    wanted = (hardware or {}).get('nic_model')
    if not wanted and image_meta is not None:
        props = image_meta.properties
        wanted = (props.get('hw_vif_model')
                  if 'hw_vif_model' in props else None)
    wanted = (wanted or DEFAULT_NIC_MODEL).lower()
    if wanted not in NIC_CLASSES:
        LOG.info('NIC model %r does not exist on vSphere; using %s', wanted,
                 DEFAULT_NIC_MODEL)
        wanted = DEFAULT_NIC_MODEL
    return wanted


def _switches_and_groups(session, compute):
    """({switch name: (ref, uuid)}, {(switch ref, group name): props})."""
    traversal = [
        inventory._traverse('netChildren', vim.Folder, 'childEntity',
                            'netChildren'),
    ]
    found = inventory.retrieve(
        session, 'read distributed switches',
        session.run('read network folder',
                    lambda: compute.datacenter.networkFolder),
        traversal,
        {vim.DistributedVirtualSwitch: ['name', 'uuid'],
         vim.dvs.DistributedVirtualPortgroup: [
             'name', 'key', 'config.distributedVirtualSwitch',
             'config.defaultPortConfig']})
    switches, groups = {}, {}
    for obj, props in found:
        if isinstance(obj, vim.DistributedVirtualSwitch):
            switches[props['name']] = (obj, props['uuid'])
    for obj, props in found:
        if isinstance(obj, vim.dvs.DistributedVirtualPortgroup):
            owner = props.get('config.distributedVirtualSwitch')
            groups[(owner._moId if owner is not None else None,
                    props['name'])] = dict(props, ref=obj)
    return switches, groups


def _vlan_of(group):
    port_config = group.get('config.defaultPortConfig')
    spec = getattr(port_config, 'vlan', None)
    vlan = getattr(spec, 'vlanId', 0)
    return vlan if isinstance(vlan, int) else None  # trunk ranges: None


def _add_port_group(session, switch, name, vlan, instance):
    spec = vim.dvs.DistributedVirtualPortgroup.ConfigSpec(
        name=name, type='earlyBinding', numPorts=8,
        description='Neutron segment, created by XHV',
        defaultPortConfig=vim.dvs.VmwareDistributedVirtualSwitch
        .VmwarePortConfigPolicy(
            vlan=vim.dvs.VmwareDistributedVirtualSwitch.VlanIdSpec(
                vlanId=vlan or 0, inherited=False)))
    session.run_task('AddDVPortgroup_Task', switch.AddDVPortgroup_Task,
                     spec=[spec], instance=instance)
    LOG.info('Created distributed port group %s (VLAN %s)', name,
             vlan or 'none')


def resolve(session, compute, nics, create, instance=None):
    """[(nic, switch uuid, port group key)] for checked Nics, in order.

    Finds every switch and port group first; creates missing port groups
    (``create``) only when every NIC can be placed.
    """
    if not nics:
        return []
    switches, groups = _switches_and_groups(session, compute)
    missing = {}
    for nic in nics:
        if nic.switch not in switches:
            raise PortGroupRefused(
                port_id=nic.port_id,
                reason='distributed switch %r (from [ml2_xhv] '
                       'physical_network_mappings) does not exist in '
                       'datacenter %s; there: %s'
                       % (nic.switch, compute.datacenter_name,
                          ', '.join(sorted(switches)) or 'none'))
        ref, _uuid = switches[nic.switch]
        group = groups.get((ref._moId, nic.port_group))
        wanted_vlan = nic.segmentation_id or 0
        if group is None:
            if not create:
                raise PortGroupRefused(
                    port_id=nic.port_id,
                    reason='port group %r does not exist on %s; create it '
                           'with VLAN %s or set [xhv_vmware] '
                           'create_port_groups' % (nic.port_group,
                                                   nic.switch, wanted_vlan))
            missing[(ref._moId, nic.port_group)] = (ref, wanted_vlan)
        elif _vlan_of(group) != wanted_vlan:
            raise PortGroupRefused(
                port_id=nic.port_id,
                reason='port group %r on %s has VLAN %s, the segment %s'
                       % (nic.port_group, nic.switch, _vlan_of(group),
                          wanted_vlan))
    for (_moid, name), (ref, vlan) in sorted(missing.items()):
        _add_port_group(session, ref, name, vlan, instance)
    if missing:
        switches, groups = _switches_and_groups(session, compute)
    placed = []
    for nic in nics:
        ref, uuid = switches[nic.switch]
        placed.append((nic, uuid, groups[(ref._moId, nic.port_group)]['key']))
    return placed


def device_changes(placed, model):
    """VirtualDeviceSpecs adding one NIC per placed port, in order."""
    changes = []
    for index, (nic, switch_uuid, group_key) in enumerate(placed):
        backing = vim.vm.device.VirtualEthernetCard \
            .DistributedVirtualPortBackingInfo(
                port=vim.dvs.PortConnection(switchUuid=switch_uuid,
                                            portgroupKey=group_key))
        device = NIC_CLASSES[model](
            key=_NIC_KEY_BASE - index, addressType='manual',
            macAddress=nic.mac, externalId=nic.port_id,
            wakeOnLanEnabled=False, backing=backing,
            connectable=vim.vm.device.VirtualDevice.ConnectInfo(
                startConnected=True, allowGuestControl=True,
                connected=True))
        changes.append(vim.vm.device.VirtualDeviceSpec(
            operation=vim.vm.device.VirtualDeviceSpec.Operation.add,
            device=device))
    return changes


def extra_config(placed):
    return [vim.option.OptionValue(key='nvp.iface-id.%d' % index,
                                   value=nic.port_id)
            for index, (nic, _s, _g) in enumerate(placed)]


def plugged(devices):
    """[(port id, MAC, port group key)] of a VM's NICs, in device order."""
    return [(d.externalId, (d.macAddress or '').lower(),
             getattr(getattr(d.backing, 'port', None), 'portgroupKey', None))
            for d in sorted((d for d in devices or []
                             if isinstance(d, vim.vm.device
                                           .VirtualEthernetCard)),
                            key=lambda d: d.key)]
