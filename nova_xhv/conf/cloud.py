"""The ``[xhv_cloud]`` group: another OpenStack cloud as an XHV backend.

One nova-compute stands for one project in one region of a remote cloud,
reached with openstacksdk through an entry of a clouds.yaml file.
"""

from oslo_config import cfg

xhv_cloud_group = cfg.OptGroup(
    'xhv_cloud', title='XHV remote OpenStack cloud backend',
    help='Options of XHV\'s cloud backend ([xhv] backend = cloud): one '
         'nova-compute stands for one project in one region of another '
         'OpenStack cloud (doc/source/cloud.rst).')

cloud_opts = [
    cfg.StrOpt('cloud',
               help='Name of the clouds.yaml entry to use (application '
                    'credentials recommended). Its secrets stay in that '
                    'file: XHV never logs them.'),
    cfg.StrOpt('clouds_yaml',
               help='Path of the clouds.yaml file. Empty: openstacksdk\'s '
                    'search path (OS_CLIENT_CONFIG_FILE, ~/.config/'
                    'openstack, /etc/openstack).'),
    cfg.StrOpt('region',
               help='Region of the remote cloud. Empty: the entry\'s '
                    'region_name.'),
    cfg.StrOpt('ca_file',
               help='PEM file with the CA certificate(s) of the remote '
                    'endpoints. Empty: the entry\'s cacert, else the '
                    'system trust store.'),
    cfg.BoolOpt('insecure', default=False,
                help='Accept an entry with "verify: false" (no TLS '
                     'verification). For labs only: anyone on the path can '
                     'then read the credentials and the disks. Without '
                     'it such an entry is refused at start.'),
    cfg.StrOpt('node_name',
               help='Name of this compute\'s node. Empty: '
                    '"<cloud>-<region>".'),
    cfg.DictOpt('flavor_map', default={},
                help='Home flavor name -> remote flavor name or id. '
                     'Flavors not listed use the remote flavor of the '
                     'same name, else the smallest remote flavor that '
                     'fits (vCPUs, RAM, root disk).'),
    cfg.DictOpt('network_map', default={},
                help='Home Neutron network (id or name) -> remote network '
                     '(id or name) a port of that network is put on. '
                     'Networks not listed use the remote network of the '
                     'same name.'),
    cfg.StrOpt('image_format', default='qcow2',
               choices=['qcow2', 'raw', 'vmdk'],
               help='Disk format of the images XHV uploads to the remote '
                    'cloud (what its computes boot); images are '
                    'translated to it first. vmdk: streamOptimized vmdk, '
                    'which a move writes straight into the remote Glance '
                    'while it pulls and translates the disk (no local '
                    'copy); for remote clouds whose computes boot vmdk '
                    'images (libvirt: [compute] vmdk_allowed_types lists '
                    'streamOptimized, its default).'),
    cfg.DictOpt('capacity_if_unlimited',
                default={'VCPU': '64', 'MEMORY_MB': '131072',
                         'DISK_GB': '1000'},
                help='Inventory totals to report for a resource the remote '
                     'project has no quota on (-1).'),
    cfg.IntOpt('api_timeout', default=60, min=1,
               help='Socket timeout in seconds of one remote API call.'),
    cfg.IntOpt('build_timeout', default=600, min=1,
               help='Seconds to wait for a remote server to become ACTIVE, '
                    'a remote image to become active, or a power action '
                    'to finish.'),
    cfg.StrOpt('staging_dir', default='$state_path/xhv-cloud',
               help='Private local folder for images on their way to the '
                    'remote cloud and snapshots on their way home.'),
]


def list_opts():
    return [(xhv_cloud_group, cloud_opts)]
