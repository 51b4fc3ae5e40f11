"""What the Hyper-V family declares (see nova_xhv.backends.family).

Hyper-V has two disk controllers (IDE, emulated, the only one generation 1
boots from; SCSI, synthetic over VMBus) and two NICs (the synthetic
"Network Adapter"; the emulated "Legacy Network Adapter", generation 1
only).  Disks that were SCSI or SATA on their source family are attached
to the controller Hyper-V has for them and keep their class in the name
(``SCSI:scsi``, ``IDE:sata``), so a move back restores the original bus.
"""

from nova_xhv.backends import family
from nova_xhv.translate import formats

FAMILY = family.Family(
    name='hyperv',
    native_format=formats.VHDX,
    native_subformat=formats.DYNAMIC,
    # spawn translates what it fetches with the translation engine.
    spawn_formats=formats.FORMATS,
    hypervisor_types=('hyperv',),
    image_hv_types=('hyperv',),
    aliases=('hyper-v', 'microsoft hyper-v'),
    hardware_names={
        family.DISK_BUS: {'paravirtual': 'SCSI', 'scsi': 'SCSI:scsi',
                          'sata': 'IDE:sata', 'ide': 'IDE'},
        family.NIC_MODEL: {'paravirtual': 'Synthetic', 'e1000': 'Legacy'},
        family.FIRMWARE: {'bios': 'Generation1', 'uefi': 'Generation2'},
    },
    image_properties={
        family.DISK_BUS: {
            'paravirtual': {'hw_disk_bus': 'scsi'},
            'scsi': {'hw_disk_bus': 'scsi', 'hw_scsi_model': 'lsilogic'},
            'sata': {'hw_disk_bus': 'sata'},
            'ide': {'hw_disk_bus': 'ide'}},
        family.NIC_MODEL: {
            'paravirtual': {'hw_vif_model': 'virtio'},
            'e1000': {'hw_vif_model': 'e1000'}},
    },
    # Raw NFS volume files, attached in place as fixed VHDs (a footer
    # appended, over SMB: nova_xhv/backends/hyperv/volumes.py).
    volume_attach={'nfs': (formats.RAW,)},
    # The network contract (doc/source/networking.rst): bound by XHV's ML2
    # driver, which names the vSwitch mapped from the segment's physical
    # network; the VLAN goes on the adapter.
    network=family.Network(
        vif_types=('hyperv',), segment_types=('flat', 'vlan'),
        bound_by=(family.BOUND_BY_XHV,), switch_detail='hyperv_vswitch',
        port_group_detail='hyperv_port_group'),
)
