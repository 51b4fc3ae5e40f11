"""What the KVM family declares (see nova_xhv.backends.family)."""

from nova_xhv.backends import family
from nova_xhv.translate import formats

FAMILY = family.Family(
    name='kvm',
    native_format=formats.QCOW2,
    native_subformat=None,
    # With moves enabled XHV advertises every format the translation
    # engine reads; the stock driver converts what it fetches from Glance.
    spawn_formats=formats.FORMATS,
    hypervisor_types=('qemu', 'kvm'),
    image_hv_types=('qemu', 'kvm'),
    # Bound by Neutron's OVN (or openvswitch) mechanism driver: the host runs
    # ovn-controller (or the OVS agent); Nova's libvirt driver plugs the tap
    # into br-int through os-vif.
    network=family.Network(
        vif_types=('ovs',), segment_types=('flat', 'vlan', 'geneve'),
        bound_by=('ovn', 'openvswitch')),
    hardware_names={
        family.DISK_BUS: {'paravirtual': 'virtio', 'scsi': 'scsi',
                          'sata': 'sata', 'ide': 'ide'},
        family.NIC_MODEL: {'paravirtual': 'virtio', 'e1000': 'e1000'},
        family.FIRMWARE: {'bios': 'bios', 'uefi': 'uefi'},
    },
    hardware_aliases={
        family.DISK_BUS: {'virtio-scsi': 'scsi'},
        family.NIC_MODEL: {'e1000e': 'e1000', 'rtl8139': 'e1000'},
    },
    image_properties={
        family.DISK_BUS: {
            'paravirtual': {'hw_disk_bus': 'virtio'},
            'scsi': {'hw_disk_bus': 'scsi', 'hw_scsi_model': 'virtio-scsi'},
            'sata': {'hw_disk_bus': 'sata'},
            'ide': {'hw_disk_bus': 'ide'}},
        family.NIC_MODEL: {
            'paravirtual': {'hw_vif_model': 'virtio'},
            'e1000': {'hw_vif_model': 'e1000'}},
    },
    # Stock LibvirtDriver volume drivers; file volumes keep their format
    # (libvirt passes connection_info data['format'] to the domain XML).
    volume_attach={
        'nfs': (formats.RAW, formats.QCOW2),
        'local': (formats.RAW, formats.QCOW2),
        'smbfs': (formats.RAW, formats.QCOW2),
        'gpfs': (formats.RAW,), 'quobyte': (formats.RAW, formats.QCOW2),
        'iscsi': (formats.RAW,), 'iser': (formats.RAW,),
        'fibre_channel': (formats.RAW,), 'rbd': (formats.RAW,),
        'nvmeof': (formats.RAW,), 'scaleio': (formats.RAW,),
        'storpool': (formats.RAW,), 'lightos': (formats.RAW,),
    },
)
