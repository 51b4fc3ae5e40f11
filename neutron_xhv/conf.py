"""Options of XHV's ML2 mechanism driver, ``[ml2_xhv]`` in ml2_conf.ini."""

from oslo_config import cfg

GROUP = 'ml2_xhv'

OPTS = [
    cfg.DictOpt(
        'host_families', default={},
        help='Which hypervisor family each compute host that XHV binds '
             'ports for has, as <host>:<family> pairs, for example '
             '"aio-vmware:vmware,hv-01:hyperv".  <host> is the compute\'s '
             'Nova host name (the binding:host_id Nova asks for); <family> '
             'is an XHV family name or alias (vmware, vsphere, ...).  Hosts '
             'not listed here are left to the other mechanism drivers '
             '(OVN/openvswitch bind KVM hosts).'),
    cfg.ListOpt(
        'physical_network_mappings', default=[],
        help='Which switch carries each physical network, as '
             '<host or family>:<physical network>:<switch> entries, for '
             'example "vmware:public:DVS0".  The switch is the family\'s '
             'own (a vSphere distributed switch, a Hyper-V vSwitch ...).  '
             'An entry naming a host wins over one naming its family.  A '
             'port on a segment whose physical network has no mapping for '
             'its host is not bound (binding_failed, the reason in this '
             'server\'s log).'),
    cfg.StrOpt(
        'port_group_prefix', default='xhv-',
        regex=r'^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$',
        help='Prefix of the port group (vSphere) or network name XHV gives '
             'each segment on a switch: <prefix><physical network> for a '
             'flat segment, <prefix><physical network>-<VLAN id> for a VLAN '
             'segment.'),
]


def register_opts(conf):
    conf.register_opts(OPTS, group=GROUP)


def list_opts():
    return [(GROUP, OPTS)]
