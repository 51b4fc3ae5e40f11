"""Neutron ports on a Hyper-V host: one network adapter per port.

A port is plugged as a VM network adapter named ``xhv-<port id>``, on
the vSwitch its binding names (``hyperv_vswitch``, set by XHV's ML2
driver from ``[ml2_xhv] physical_network_mappings``) or else the one
``[xhv_hyperv] vswitch_mappings`` gives the port's physical network,
with the port's MAC as a static MAC and, when the segment is a VLAN,
the adapter in access mode on that VLAN id.  The binding details carry
the segment (``physical_network``, ``network_type``,
``segmentation_id``: Neutron's names); a network's ``meta`` is read
where an older binding left them.
"""

import re

from nova import exception

from nova_xhv.backends.hyperv import script as ps

MAC = re.compile(r'^[0-9A-Fa-f]{2}([:-]?)[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}$')
REFUSED_VIF_TYPES = ('binding_failed', 'unbound')
VIF_TYPES = ('hyperv',)
SWITCH_DETAIL = 'hyperv_vswitch'
ADAPTER_PREFIX = 'xhv-'


class HyperVNetworkError(exception.NovaException):
    msg_fmt = 'Cannot plug port %(port)s on Hyper-V: %(reason)s'


def parse_mappings(pairs):
    """{physical_network: vSwitch} from ``physnet:vSwitch`` items."""
    mappings = {}
    for pair in pairs or []:
        physnet, sep, switch = pair.partition(':')
        physnet, switch = physnet.strip(), switch.strip()
        if not sep or not physnet or not switch:
            raise ValueError('[xhv_hyperv] vswitch_mappings: %r is not '
                             'physical_network:vSwitch' % pair)
        if physnet in mappings:
            raise ValueError('[xhv_hyperv] vswitch_mappings maps %r twice'
                             % physnet)
        mappings[physnet] = switch
    return mappings


def switches_of(mappings):
    return set(mappings.values())


def _segment(vif):
    details = vif.get('details') or {}
    meta = (vif.get('network') or {}).get('meta') or {}
    physnet = details.get('physical_network') or meta.get('physical_network')
    network_type = details.get('network_type') or meta.get('network_type')
    vlan = details.get('segmentation_id')
    if vlan is None:
        vlan = details.get('vlan', meta.get('vlan'))
    if network_type not in (None, 'vlan'):
        vlan = None
    return physnet, vlan


def adapter(vif, mappings):
    """(adapter name, vSwitch, MAC, VLAN id or None) of one port."""
    port = vif.get('id') or '?'
    if vif.get('type') in REFUSED_VIF_TYPES:
        raise HyperVNetworkError(port=port, reason='the port is %s'
                                 % vif.get('type'))
    if vif.get('type') not in VIF_TYPES:
        raise HyperVNetworkError(port=port, reason='vif_type %r is not %s'
                                 % (vif.get('type'), ', '.join(VIF_TYPES)))
    physnet, vlan = _segment(vif)
    switch = (vif.get('details') or {}).get(SWITCH_DETAIL)
    if not switch and physnet:
        switch = mappings.get(physnet)
    if switch is None:
        raise HyperVNetworkError(
            port=port, reason='the binding names no vSwitch (%s) and none '
                              'is mapped for physical network %r '
                              '([xhv_hyperv] vswitch_mappings)'
                              % (SWITCH_DETAIL, physnet))
    mac = vif.get('address') or ''
    if not MAC.match(mac):
        raise HyperVNetworkError(port=port, reason='MAC address %r' % mac)
    if vlan is not None:
        try:
            vlan = int(vlan)
        except (TypeError, ValueError):
            vlan = -1
        if not 1 <= vlan <= 4094:
            raise HyperVNetworkError(port=port, reason='VLAN id %r'
                                     % _segment(vif)[1])
    return (ADAPTER_PREFIX + port, switch, re.sub('[:-]', '', mac).upper(),
            vlan)


def check(network_info, mappings):
    for vif in network_info or []:
        adapter(vif, mappings)


def plug_lines(vm_name, network_info, mappings, legacy=False):
    """Per port of ``network_info``, the script lines that plug it."""
    ports = []
    for vif in network_info or []:
        name, switch, mac, vlan = adapter(vif, mappings)
        lines = []
        ports.append(lines)
        lines.append(ps.command(
            'Add-VMNetworkAdapter', VMName=vm_name, Name=name,
            SwitchName=switch, StaticMacAddress=mac,
            IsLegacy=True if legacy else None))
        if vlan is not None:
            lines.append(ps.command(
                'Set-VMNetworkAdapterVlan', VMName=vm_name,
                VMNetworkAdapterName=name, Access=ps.SWITCH, VlanId=vlan))
    return ports


def port_of(adapter_name, mac):
    """(port id or None, MAC as Neutron writes it) of a VM's adapter."""
    port = adapter_name[len(ADAPTER_PREFIX):] \
        if adapter_name.startswith(ADAPTER_PREFIX) else None
    mac = (mac or '').lower()
    return port, ':'.join(mac[i:i + 2] for i in range(0, len(mac), 2))
