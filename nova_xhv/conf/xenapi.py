"""The ``[xhv_xenapi]`` group: XHV's XenServer / XCP-ng backend (XenAPI).

One nova-compute drives one pool through its master.
"""

from oslo_config import cfg

xhv_xenapi_group = cfg.OptGroup(
    'xhv_xenapi', title='XHV XenServer / XCP-ng backend',
    help='Options of XHV\'s XenServer / XCP-ng backend ([xhv] backend = '
         'xenapi). One nova-compute drives one pool through its master.')

xenapi_opts = [
    cfg.URIOpt('url', schemes=['https', 'http'],
               help='URL of the pool master\'s API, e.g. '
                    'https://xen-master.example.org. Plain http sends the '
                    'password and the disks in the clear: for isolated '
                    'labs only.'),
    cfg.StrOpt('username', default='root',
               help='User that logs into the pool master.'),
    cfg.StrOpt('password', secret=True,
               help='Password of that user. Never logged.'),
    cfg.StrOpt('ca_file',
               help='PEM file with the CA certificate(s) that signed the '
                    'pool master\'s certificate. Empty: the system trust '
                    'store. Used for the API and for disk transfers.'),
    cfg.BoolOpt('insecure', default=False,
                help='Do not verify the pool master\'s TLS certificate. For '
                     'labs only: anyone on the path can then read the '
                     'credentials and the disks.'),
    cfg.StrOpt('sr',
               help='Storage repository for instance disks: its name-label '
                    'or uuid. Empty: the pool\'s default SR.'),
    cfg.StrOpt('template', default='Other install media',
               help='Name-label (or uuid) of the VM template HVM instances '
                    'are cloned from; flavor memory and vCPUs are set on '
                    'the clone.'),
    cfg.DictOpt('network_map', default={},
                help='Neutron network (uuid or name) -> xapi network '
                     '(name-label or uuid) that the VIF of a port on that '
                     'network goes on, e.g. "public:Pool-wide network '
                     'associated with eth0". Used for ports whose binding '
                     'names no xapi network. Every target must exist at '
                     'start.'),
    cfg.StrOpt('default_network',
               help='xapi network (name-label or uuid) for ports of '
                    'Neutron networks not in network_map. Empty: such '
                    'ports are refused.'),
    cfg.IntOpt('api_timeout', default=120, min=1,
               help='Socket timeout in seconds for one API call.'),
    cfg.IntOpt('transfer_timeout', default=3600, min=1,
               help='Socket timeout in seconds for disk uploads and '
                    'downloads (/import_raw_vdi, /export_raw_vdi).'),
    cfg.ListOpt('volume_exports', default=[],
                help='<nfs host>:<export path>=<local folder> pairs: '
                     'where this compute has mounted an NFS export Cinder '
                     'keeps XHV volumes on (the mount a KVM compute makes '
                     'for them). XHV gives a volume file its name in the '
                     'export\'s NFS SR folder there (a hard link) and the '
                     'pool attaches it as a raw VDI, in place (see '
                     'doc/source/cinder.rst). Empty: no volume attaches '
                     'here.'),
    cfg.StrOpt('staging_dir', default='$state_path/xhv-xenapi',
               help='Private local folder for images on their way to the '
                    'pool and for disks exported for moves and snapshots.'),
]


def list_opts():
    return [(xhv_xenapi_group, xenapi_opts)]
