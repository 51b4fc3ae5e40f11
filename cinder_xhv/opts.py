"""Options of the XHV meta volume driver, read from its backend section.

``volume_driver = cinder_xhv.driver.XHVVolumeDriver`` and the inner driver's
own options live in the same cinder.conf backend section, so oslo's
generator lists them under ``backend_defaults`` like Cinder's own drivers.
"""

from oslo_config import cfg

from nova_xhv.translate import formats
from nova_xhv.translate import options as translate_options

# The format names the driver accepts in its options: the engine's list.
STORED_FORMATS = formats.FORMATS
VMDK_ADAPTER_TYPES = ('lsiLogic', 'busLogic', 'lsiLogicsas', 'paraVirtual',
                      'ide')

xhv_volume_opts = [
    cfg.StrOpt('xhv_inner_volume_driver',
               help='The real Cinder driver XHV wraps, in this same backend '
                    'section: a dotted class path (e.g. '
                    'cinder.volume.drivers.nfs.NfsDriver) or a short name '
                    'registered in the "cinder_xhv.inner_drivers" entry '
                    'point namespace (built in: nfs, lvm, vmdk). Required.'),
    cfg.ListOpt('xhv_attach_families',
                help='Hypervisor families that can attach this backend\'s '
                     'volumes, reported as the xhv_attach_families '
                     'capability for volume-type extra specs. Unset: '
                     'derived from what each installed XHV family declares '
                     'it attaches (nova_xhv.backends.family, '
                     'Family.volume_attach) for the inner driver\'s storage '
                     'protocol and stored format. Names are the families\' '
                     'own (kvm, vmware, ...).'),
    cfg.StrOpt('xhv_volume_format',
               choices=STORED_FORMATS,
               help='Disk format this backend stores its volumes in. Unset: '
                    'derived from the inner driver (NFS-like drivers: qcow2 '
                    'when <prefix>_qcow2_volumes is set, otherwise raw; the '
                    'VMDK driver: vmdk; anything else: raw). Set it only '
                    'when the inner driver stores another format.'),
    cfg.StrOpt('xhv_vmdk_adapter_type',
               default='lsiLogic',
               choices=VMDK_ADAPTER_TYPES,
               help='vmware_adaptertype image property written when a '
                    'volume is uploaded as a vmdk image and its own glance '
                    'metadata names none.'),
]


# The translation engine's options, which cinder-volume reads from its own
# [xhv] group for every conversion.  Only these: cinder_xhv registers no
# Nova-side group.
translate_group = cfg.OptGroup(
    'xhv', title='XHV translation engine',
    help='Options of XHV\'s disk-format translation engine, used by '
         'cinder_xhv for image <-> volume conversions.')


def register_translate_opts(conf):
    conf.register_group(translate_group)
    conf.register_opts(translate_options.translate_opts,
                       group=translate_group)


def list_opts():
    """oslo-config-generator entry point (``oslo.config.opts``).

    The translation engine's ``[xhv]`` options come along: the driver
    reads them from cinder.conf for every conversion.
    """
    return ([('backend_defaults', list(xhv_volume_opts))] +
            [(translate_group, list(translate_options.translate_opts))])
