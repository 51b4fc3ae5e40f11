"""``[xhv]`` options of cross-hypervisor cold migration.

Every XHV nova-compute serves the disk exchange endpoint
(nova_xhv.migration.exchange); the options below configure it, the staged
move (nova_xhv.migration.source_side / destination_side), the hardware mapping
(nova_xhv.migration.hardware) and the scheduler filter
(nova_xhv.scheduler).
"""

from oslo_config import cfg

from nova_xhv.conf.xhv import xhv_group

exchange_opts = [
    cfg.StrOpt('exchange_secret', secret=True,
               help='Secret shared by all XHV nova-computes of a cloud. '
                    'Control requests between computes are signed with it '
                    '(HMAC-SHA256); a compute without it refuses '
                    'cross-hypervisor moves. Never logged.'),
    cfg.HostAddressOpt('exchange_bind_host', default='0.0.0.0',
                       help='Address the exchange endpoint listens on.'),
    cfg.PortOpt('exchange_port', default=8799,
                help='TCP port of the exchange endpoint; the same on every '
                     'compute of a cloud. 0 lets the kernel choose (tests: '
                     'the chosen URL is published in the compute node '
                     'stats either way).'),
    cfg.StrOpt('exchange_advertise_host', default='$my_ip',
               help='Host name or address other computes use to reach this '
                    'compute\'s exchange endpoint (must match the TLS '
                    'certificate).'),
    cfg.BoolOpt('exchange_use_tls', default=True,
                help='Serve the exchange endpoint over HTTPS. Disks cross '
                     'the network through it: switch TLS off only on a '
                     'trusted, isolated migration network.'),
    cfg.StrOpt('exchange_cert_file',
               help='PEM certificate (chain) of the exchange endpoint. '
                    'Required when exchange_use_tls is on.'),
    cfg.StrOpt('exchange_key_file',
               help='PEM private key of exchange_cert_file.'),
    cfg.StrOpt('exchange_ca_file',
               help='PEM CA bundle used to verify other computes\' exchange '
                    'certificates, for control requests and for the disk '
                    'data a destination pulls. Empty: the system trust '
                    'store.'),
    cfg.BoolOpt('exchange_insecure', default=False,
                help='Do not verify other computes\' exchange certificates. '
                     'Labs only: requests stay authenticated by the shared '
                     'secret, but anyone on the path can read the disks.'),
    cfg.IntOpt('exchange_token_ttl', default=86400, min=60,
               help='Seconds a per-disk download token stays valid at '
                    'most. Tokens are revoked as soon as the destination '
                    'has staged the disk or the move is rolled back.'),
    cfg.IntOpt('exchange_clock_skew', default=300, min=5,
               help='Largest clock difference, in seconds, accepted '
                    'between computes for signed requests.'),
    cfg.FloatOpt('exchange_header_timeout', default=10.0, min=0.1,
                 help='Seconds a client of the exchange endpoint has, from '
                      'connecting (TLS handshake included), to send its '
                      'request line and headers. A client that stays silent '
                      'or trickles bytes is answered 408 and cut.'),
    cfg.FloatOpt('exchange_body_timeout', default=30.0, min=0.1,
                 help='Seconds a client has to send the body of a control '
                      'request (at most 1 MiB) once its headers arrived.'),
    cfg.FloatOpt('exchange_idle_timeout', default=300.0, min=1,
                 help='Seconds a connection that got an answer may stay '
                      'idle before its next request, and the longest wait '
                      'for one read or write while a disk is served (qemu '
                      'keeps its connections open between reads). A '
                      'refused request always closes its connection.'),
    cfg.IntOpt('exchange_max_connections', default=256, min=1,
               help='Connections the exchange endpoint serves at once (one '
                    'thread each). Connections beyond it are answered 503 '
                    '(over TLS: closed) at once, without a thread.'),
    cfg.IntOpt('exchange_max_connections_per_client', default=64, min=1,
               help='Connections one client address may hold at once; '
                    'beyond it, shed like exchange_max_connections. A '
                    'destination pulling disks holds a few per disk it '
                    'reads.'),
]

flow_opts = [
    cfg.IntOpt('migration_stage_timeout', default=3600, min=10,
               help='Seconds the source waits for the destination to '
                    'pull, translate and stage all disks of one server. '
                    'On timeout the move is rolled back: the original is '
                    'powered on again and the destination removes what '
                    'it staged.'),
    cfg.FloatOpt('migration_poll_interval', default=0.25, min=0.05,
                 help='Seconds between two status polls of a staging '
                      'destination (one small signed request each); the '
                      'source notices the end of staging at most this late. '
                      'Progress is logged and saved at most once a second '
                      'whatever this is.'),
    cfg.StrOpt('migration_state_dir', default='$state_path/xhv-migration',
               help='Folder for disks being staged and for the small '
                    'journal of unfinished moves; leftovers of a crash '
                    'are removed at the next start of the compute.'),
    cfg.ListOpt('accepted_source_families', default=[],
                help='Hypervisor families (kvm, vmware, hyperv, xen) whose '
                     'servers this compute accepts in a cross-hypervisor '
                     'move. Empty: all. The scheduler filter '
                     'XHVMoveFilter and the exchange endpoint both '
                     'enforce it.'),
    cfg.ListOpt('new_boot_families', default=[],
                help='Image hypervisor_type values for which a NEW boot may '
                     'land on this compute although the image is pinned to '
                     'another hypervisor (XHVMoveFilter). Empty: a pinned '
                     'image boots only on its own hypervisor; moves of '
                     'existing servers are allowed regardless.'),
]

hardware_opts = [
    cfg.StrOpt('cross_family_disk_bus', default='sata',
               choices=[('sata', 'AHCI SATA: drivers in nearly every guest'),
                        ('ide', 'IDE: oldest guests'),
                        ('scsi', 'emulated SCSI (virtio-scsi on KVM, LSI '
                                 'Logic on vSphere)'),
                        ('paravirtual', 'virtio-blk on KVM, PVSCSI on '
                                        'vSphere: fastest, needs drivers')],
               help='Disk bus of a server after a move between hypervisor '
                    'families. Image property xhv_disk_bus overrides it.'),
    cfg.StrOpt('cross_family_nic_model', default='e1000',
               choices=[('e1000', 'Intel e1000: drivers in nearly every '
                                  'guest'),
                        ('paravirtual', 'virtio-net on KVM, vmxnet3 on '
                                        'vSphere: fastest, needs drivers')],
               help='NIC model of a server after a move between hypervisor '
                    'families. Image property xhv_nic_model overrides it.'),
]


def list_opts():
    return [(xhv_group, exchange_opts + flow_opts + hardware_opts)]
