"""What the cloud family declares (see nova_xhv.backends.family).

A remote OpenStack cloud boots what its Glance holds; XHV uploads qcow2
(``[xhv_cloud] image_format``), the format KVM clouds boot and snapshot
to.  The hardware names are the Nova image properties the remote cloud's
own driver reads, so a move carries the guest's bus and NIC model there
as image properties of the uploaded image.
"""

from nova_xhv.backends import family
from nova_xhv.translate import formats

FAMILY = family.Family(
    name='cloud',
    native_format=formats.QCOW2,
    native_subformat=None,
    # spawn translates what it fetches with the translation engine.
    spawn_formats=formats.FORMATS,
    hypervisor_types=('cloud',),
    # No image pins itself to "another cloud".
    image_hv_types=(),
    aliases=('openstack', 'federation'),
    hardware_names={
        family.DISK_BUS: {'paravirtual': 'virtio', 'scsi': 'scsi',
                          'sata': 'sata', 'ide': 'ide'},
        family.NIC_MODEL: {'paravirtual': 'virtio', 'e1000': 'e1000'},
        family.FIRMWARE: {'bios': 'bios', 'uefi': 'uefi'},
    },
    image_properties={
        family.DISK_BUS: {
            'paravirtual': {'hw_disk_bus': 'virtio'},
            'scsi': {'hw_disk_bus': 'scsi'},
            'sata': {'hw_disk_bus': 'sata'},
            'ide': {'hw_disk_bus': 'ide'}},
        family.NIC_MODEL: {
            'paravirtual': {'hw_vif_model': 'virtio'},
            'e1000': {'hw_vif_model': 'e1000'}},
    },
    # Ports of the home cloud are bound by XHV's ML2 driver (nothing is
    # plugged on this host); the backend puts the guest on the remote
    # network the binding's segment, or [xhv_cloud] network_map, names.
    network=family.Network(
        vif_types=('xhv_cloud',), segment_types=('flat', 'vlan', 'geneve',
                                                 'vxlan'),
        bound_by=(family.BOUND_BY_XHV,), switch_detail='cloud_physnet',
        port_group_detail='cloud_network'),
    # Volumes would be remote Cinder volumes: not done (cloud.rst).
    volume_attach={},
)
