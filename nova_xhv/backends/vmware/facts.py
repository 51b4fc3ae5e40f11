"""What the vSphere family declares (see nova_xhv.backends.family)."""

from nova_xhv.backends import family
from nova_xhv.translate import formats

FAMILY = family.Family(
    name='vmware',
    native_format=formats.VMDK,
    native_subformat=formats.STREAM_OPTIMIZED,
    # spawn translates what it fetches (see VMwareBackend.spawn).
    spawn_formats=formats.FORMATS,
    hypervisor_types=('vmware', 'vmware vcenter server', 'vmware esxi'),
    image_hv_types=('vmware',),
    aliases=('vsphere', 'esx', 'esxi', 'vmwareapi'),
    # Bound by XHV's ML2 driver with what stock Nova's vmwareapi consumes
    # too: vif_type dvs, the distributed switch and the port group by name.
    network=family.Network(
        vif_types=('dvs',), segment_types=('flat', 'vlan'),
        bound_by=(family.BOUND_BY_XHV,), switch_detail='dvs_name',
        port_group_detail='dvs_port_group_name'),
    hardware_names={
        family.DISK_BUS: {'paravirtual': 'paraVirtual', 'scsi': 'lsiLogic',
                          'sata': 'sata', 'ide': 'ide'},
        family.NIC_MODEL: {'paravirtual': 'vmxnet3', 'e1000': 'e1000'},
        family.FIRMWARE: {'bios': 'bios', 'uefi': 'efi'},
    },
    hardware_aliases={
        family.DISK_BUS: {'lsiLogicsas': 'scsi', 'busLogic': 'scsi'},
        family.NIC_MODEL: {'e1000e': 'e1000'},
    },
    image_properties={
        family.DISK_BUS: {
            'paravirtual': {'hw_disk_bus': 'scsi',
                            'hw_scsi_model': 'vmpvscsi'},
            'scsi': {'hw_disk_bus': 'scsi', 'hw_scsi_model': 'lsilogic'},
            'sata': {'hw_disk_bus': 'sata'},
            'ide': {'hw_disk_bus': 'ide'}},
        family.NIC_MODEL: {
            'paravirtual': {'hw_vif_model': 'vmxnet3'},
            'e1000': {'hw_vif_model': 'e1000'}},
    },
    # A raw volume file on an NFS share, mounted as a NAS datastore and
    # seen through a monolithicFlat descriptor: no conversion (see
    # VMwareBackend.attach_volume).
    volume_attach={'nfs': (formats.RAW,)},
)
