"""The ML2 mechanism driver ``xhv`` (entry point in
``neutron.ml2.mechanism_drivers``), listed after OVN or openvswitch::

    [ml2]
    mechanism_drivers = ovn,xhv

OVN/openvswitch bind the KVM hosts (they run ovn-controller or the OVS
agent).  This driver binds the hosts ``[ml2_xhv] host_families`` names,
with what that family's backend consumes: ``vif_type`` =
``facts.network.vif_types[0]`` and the vif_details of the network
contract (nova_xhv/backends/base.py; doc/source/networking.rst).  Which
families exist and what they take comes from the installed families'
facts, never from a list here.

Why configuration and not an agent report: the hosts it binds run no
Neutron agent and have no datapath of their own to report (vCenter owns a
distributed switch); a report would give every such compute credentials
for Neutron's message bus and need neutron-server's RPC workers, for a
fact that changes only when the operator recabls a host.  The cost --
the operator names hosts in two places -- is checked where it hurts: a
host listed here with no usable mapping fails binding with a reason, and
the backend refuses a port bound for another family before it creates
anything.
"""

import re

from neutron_lib.api.definitions import portbindings
from neutron_lib import constants as n_const
from neutron_lib.plugins.ml2 import api
from oslo_config import cfg
from oslo_log import log as logging

from neutron_xhv import conf as xhv_conf
from nova_xhv.backends import family

LOG = logging.getLogger(__name__)

_NAME = re.compile(family.SWITCH_NAME_PATTERN)


class ConfigError(ValueError):
    """``[ml2_xhv]`` says something that cannot work."""


class HostBinding(object):
    """What this driver knows about one host: its family and mappings."""

    def __init__(self, host, facts, switches):
        self.host = host
        self.facts = facts
        #: physical network -> switch on this host
        self.switches = switches


def parse_config(conf):
    """{host: HostBinding} from ``[ml2_xhv]``; ConfigError when unusable."""
    group = conf[xhv_conf.GROUP]
    hosts = {}
    for host, name in sorted(group.host_families.items()):
        host = host.strip()
        try:
            facts = family.lookup(name)
        except family.UnknownFamily as error:
            raise ConfigError('[%s] host_families: host %s: %s'
                              % (xhv_conf.GROUP, host, error))
        if facts.network is None or not facts.network.bound_by_xhv:
            raise ConfigError(
                '[%s] host_families: host %s has family %s, whose ports %s '
                'binds, not XHV' % (xhv_conf.GROUP, host, facts.name,
                                    '/'.join(facts.network.bound_by)
                                    if facts.network else 'nothing'))
        hosts[host] = HostBinding(host, facts, {})
    by_family, by_host = {}, {}
    for entry in group.physical_network_mappings:
        parts = [p.strip() for p in entry.split(':')]
        if len(parts) != 3 or not all(parts):
            raise ConfigError(
                '[%s] physical_network_mappings: %r is not '
                '<host or family>:<physical network>:<switch>'
                % (xhv_conf.GROUP, entry))
        owner, physnet, switch = parts
        if not _NAME.match(switch):
            raise ConfigError('[%s] physical_network_mappings: switch %r is '
                              'not a plain name' % (xhv_conf.GROUP, switch))
        if owner in hosts:
            by_host.setdefault(owner, {})[physnet] = switch
            continue
        try:
            owner_family = family.lookup(owner).name
        except family.UnknownFamily:
            raise ConfigError(
                '[%s] physical_network_mappings: %r names neither a host of '
                'host_families nor an installed family'
                % (xhv_conf.GROUP, owner))
        by_family.setdefault(owner_family, {})[physnet] = switch
    for host, binding in hosts.items():
        binding.switches.update(by_family.get(binding.facts.name, {}))
        binding.switches.update(by_host.get(host, {}))
    return hosts


def port_group_name(prefix, segment):
    """The port group / network name of a segment on a switch."""
    name = prefix + segment[api.PHYSICAL_NETWORK]
    if segment[api.NETWORK_TYPE] == 'vlan':
        name += '-%d' % segment[api.SEGMENTATION_ID]
    return name


def binding_details(binding, segment, prefix):
    """(vif_details, None) for a segment the host takes, else (None, why)."""
    network = binding.facts.network
    network_type = segment.get(api.NETWORK_TYPE)
    physnet = segment.get(api.PHYSICAL_NETWORK)
    if network_type not in network.segment_types:
        return None, ('segment %s is %s; family %s takes %s'
                      % (segment.get(api.ID), network_type,
                         binding.facts.name,
                         ', '.join(network.segment_types)))
    if not physnet or physnet not in binding.switches:
        return None, ('segment %s is on physical network %r, which '
                      '[%s] physical_network_mappings maps to no switch for '
                      'host %s (mapped: %s)'
                      % (segment.get(api.ID), physnet, xhv_conf.GROUP,
                         binding.host,
                         ', '.join(sorted(binding.switches)) or 'none'))
    group = port_group_name(prefix, segment)
    if not _NAME.match(group):
        return None, ('segment %s would need the port group name %r, which '
                      'is not a plain name' % (segment.get(api.ID), group))
    segmentation_id = (segment.get(api.SEGMENTATION_ID)
                       if network_type == 'vlan' else None)
    return {
        family.DETAIL_FAMILY: binding.facts.name,
        family.DETAIL_NETWORK_TYPE: network_type,
        family.DETAIL_PHYSICAL_NETWORK: physnet,
        family.DETAIL_SEGMENTATION_ID: segmentation_id,
        network.switch_detail: binding.switches[physnet],
        network.port_group_detail: group,
        # The backend enforces no security groups (networking.rst).
        portbindings.CAP_PORT_FILTER: False,
    }, None


class XHVMechanismDriver(api.MechanismDriver):
    """Binds ports on hosts of agentless XHV families (module doc)."""

    def __init__(self, conf=None):
        super().__init__()
        self._conf = conf or cfg.CONF
        self._hosts = {}

    def initialize(self):
        xhv_conf.register_opts(self._conf)
        try:
            self._hosts = parse_config(self._conf)
        except ConfigError as error:
            LOG.error('XHV mechanism driver: %s', error)
            raise
        for host, binding in sorted(self._hosts.items()):
            LOG.info('XHV binds ports on host %s (family %s, vif_type %s, '
                     'physical networks: %s)', host, binding.facts.name,
                     binding.facts.network.vif_types[0],
                     ', '.join('%s->%s' % kv for kv in
                               sorted(binding.switches.items())) or 'none')

    @property
    def connectivity(self):
        return portbindings.CONNECTIVITY_L2

    def bind_port(self, context):
        host = context.host
        binding = self._hosts.get(host)
        if binding is None:
            LOG.debug('XHV does not bind port %s: host %s is not in '
                      '[%s] host_families', context.current['id'], host,
                      xhv_conf.GROUP)
            return
        vnic_type = context.current.get(portbindings.VNIC_TYPE,
                                        portbindings.VNIC_NORMAL)
        if vnic_type != portbindings.VNIC_NORMAL:
            LOG.error('XHV cannot bind port %s to host %s (family %s): '
                      'vnic_type %s; only %s', context.current['id'], host,
                      binding.facts.name, vnic_type,
                      portbindings.VNIC_NORMAL)
            return
        prefix = self._conf[xhv_conf.GROUP].port_group_prefix
        reasons = []
        for segment in context.segments_to_bind:
            details, reason = binding_details(binding, segment, prefix)
            if details is None:
                reasons.append(reason)
                continue
            context.set_binding(segment[api.ID],
                                binding.facts.network.vif_types[0], details,
                                status=n_const.PORT_STATUS_ACTIVE)
            LOG.info('XHV bound port %s to host %s: vif_type %s, %s',
                     context.current['id'], host,
                     binding.facts.network.vif_types[0], details)
            return
        LOG.error('XHV cannot bind port %s to host %s (family %s): %s',
                  context.current['id'], host, binding.facts.name,
                  '; '.join(reasons) or 'the network has no segment')
