"""The ``[xhv]`` group: which backend this nova-compute drives."""

from oslo_config import cfg

xhv_group = cfg.OptGroup(
    'xhv', title='XHV cross-hypervisor options',
    help='Options of the XHV meta compute driver (compute_driver = '
         'xhv.XHVDriver).')

driver_opts = [
    cfg.StrOpt('backend',
               default='libvirt',
               help='Hypervisor backend this nova-compute drives, by its '
                    'name in the "nova_xhv.backends" entry point namespace. '
                    'Built in: libvirt (KVM/QEMU through Nova\'s stock '
                    'libvirt driver), vmware (vSphere through pyvmomi), '
                    'fake (no guests: for tests and demonstrations). Third '
                    'parties can register their own; nova-compute refuses '
                    'an unknown name and lists the installed ones.'),
]


def list_opts():
    return [(xhv_group, driver_opts)]
