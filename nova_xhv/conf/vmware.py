"""The ``[xhv_vmware]`` group: XHV's vSphere backend (pyvmomi).

One nova-compute drives one vCenter cluster, or one standalone ESXi host.
"""

from oslo_config import cfg

xhv_vmware_group = cfg.OptGroup(
    'xhv_vmware', title='XHV vSphere backend',
    help='Options of XHV\'s vSphere backend ([xhv] backend = vmware). One '
         'nova-compute drives one vCenter cluster or one standalone ESXi '
         'host.')

vmware_opts = [
    cfg.HostAddressOpt('host',
                       help='vCenter (or ESXi) host name or IP address.'),
    cfg.PortOpt('port', default=443,
                help='HTTPS port of the vSphere API.'),
    cfg.StrOpt('username',
               help='vSphere user name, e.g. nova@vsphere.local.'),
    cfg.StrOpt('password', secret=True,
               help='Password of the vSphere user. Never logged.'),
    cfg.StrOpt('cluster_name',
               help='Name of the cluster this nova-compute drives. Leave '
                    'empty when connecting to a standalone ESXi host (the '
                    'host is then the only compute resource).'),
    cfg.StrOpt('datacenter',
               help='Datacenter holding the cluster. Needed only when '
                    'several datacenters have a cluster with the same '
                    'name.'),
    cfg.StrOpt('datastore_regex',
               help='Regular expression (Python syntax, matched from the '
                    'start of the name) selecting the datastores of the '
                    'cluster used for instance disks. Empty: every '
                    'accessible datastore. Capacity is reported from the '
                    'selected datastores only; new disks go on the one with '
                    'the most free space.'),
    cfg.StrOpt('vm_folder',
               help='Inventory path of the VM folder for instances, '
                    'relative to the datacenter\'s VM folder (e.g. '
                    '"openstack/nova"). Empty: the datacenter\'s VM folder. '
                    'Must exist.'),
    cfg.StrOpt('ca_file',
               help='PEM file with the CA certificate(s) that signed the '
                    'vCenter certificate. Empty: the system trust store. '
                    'Used for the API and for disk transfers.'),
    cfg.BoolOpt('insecure', default=False,
                help='Do not verify the vCenter TLS certificate. For labs '
                     'only: anyone on the path can then read the '
                     'credentials and the disks.'),
    cfg.IntOpt('connection_retries', default=3, min=0,
               help='How many times a failed API call (connection refused, '
                    'reset, timeout or an expired session) is retried '
                    'after reconnecting.'),
    cfg.FloatOpt('retry_interval', default=2.0, min=0,
                 help='Seconds to wait before the first retry; doubled for '
                      'each further retry.'),
    cfg.IntOpt('api_timeout', default=120, min=1,
               help='Socket timeout in seconds for one API call.'),
    cfg.IntOpt('task_timeout', default=1800, min=1,
               help='Seconds to wait for one vSphere task (create, '
                    'reconfigure, power, destroy, snapshot) before failing '
                    'the operation. Tasks are never waited on forever.'),
    cfg.FloatOpt('task_poll_interval', default=0.5, min=0.05,
                 help='Seconds between two polls of a running task.'),
    cfg.IntOpt('transfer_timeout', default=3600, min=1,
               help='Seconds allowed for one disk upload or download '
                    '(datastore HTTP API or NFC lease).'),
    cfg.StrOpt('default_adapter_type', default='lsiLogic',
               choices=[('lsiLogic', 'LSI Logic parallel SCSI'),
                        ('lsiLogicsas', 'LSI Logic SAS'),
                        ('busLogic', 'BusLogic SCSI'),
                        ('paraVirtual', 'VMware paravirtual SCSI'),
                        ('ide', 'IDE'),
                        ('sata', 'AHCI SATA')],
               help='Disk controller for images that set neither '
                    'vmware_adaptertype nor hw_disk_bus. lsiLogic boots '
                    'nearly every guest without extra drivers.'),
    cfg.StrOpt('export_method', default='datastore',
               choices=[('datastore', 'read the disk files in place through '
                                      'the datastore HTTP API (Range '
                                      'requests; no local copy)'),
                        ('nfc', 'download the disks through an ExportVm '
                                'HttpNfcLease (streamOptimized vmdk) into '
                                'staging_dir first')],
               help='How disks of a powered-off instance are exported for '
                    'a cross-hypervisor move.'),
    cfg.BoolOpt('direct_datastore_reads', default=True,
                help='With export_method = datastore, let the destination '
                     'compute of a cross-hypervisor move read each disk '
                     'straight from the datastore with a one-time vSphere '
                     'ticket (AcquireGenericServiceTicket: one GET of that '
                     'one file) that this compute acquires on the '
                     'destination\'s signed request, instead of this '
                     'compute proxying the data through its exchange '
                     'endpoint. The destination must reach the vCenter/ESXi '
                     'HTTPS endpoint; it verifies it with this compute\'s '
                     'ca_file (sent along) or its system trust store, and '
                     'reads through the exchange when the direct read '
                     'cannot start.'),
    cfg.BoolOpt('stream_uploads', default=True,
                help='Upload disks the translation engine writes for '
                     'vSphere (a move into vSphere, a spawn from a '
                     'qcow2/raw/vhd/vhdx image) while they are written: '
                     'the vmdk stream writer\'s output goes straight into '
                     'the NFC upload (HTTP chunked transfer, as its length '
                     'is known only at its end), with no local copy and '
                     'compression overlapping the upload. False writes '
                     'each disk to staging_dir first and uploads it with '
                     'its length. Tested against vcsim; turn it off for a '
                     'vSphere whose NFC service refuses chunked uploads.'),
    cfg.BoolOpt('create_port_groups', default=False,
                help='Create the distributed port group a Neutron binding '
                     'names (xhv-<physical network>[-<VLAN>] on the mapped '
                     'distributed switch) when it does not exist yet, with '
                     'the segment\'s VLAN. False: the port group must '
                     'exist (with that VLAN) and a port on a missing one is '
                     'refused. A port group of that name with another VLAN '
                     'is always refused.'),
    cfg.StrOpt('staging_dir', default='$state_path/xhv-vmware',
               help='Local directory for disks on their way in or out '
                    '(image conversion, exports).'),
]


def list_opts():
    return [(xhv_vmware_group, vmware_opts)]
