"""What the Xen family declares (see nova_xhv.backends.family).

Disks live in VDIs on an SR and travel as dynamic vhd (what
``/import_raw_vdi`` and ``/export_raw_vdi`` speak).  Xen HVM guests see
every VBD as an emulated IDE disk until their PV drivers switch it to
``xvd``; the disk-bus names record which device names the guest was
moved with (``xvd`` paravirtual, ``hd`` IDE, ``sd`` SCSI, ``ahci`` SATA)
so that a move back restores them.  NICs are netfront (PV) or emulated
e1000 (``platform:nic_type``).
"""

from nova_xhv.backends import family
from nova_xhv.translate import formats

FAMILY = family.Family(
    name='xen',
    native_format=formats.VHD,
    native_subformat=formats.DYNAMIC,
    # spawn translates what it fetches with the translation engine.
    spawn_formats=formats.FORMATS,
    hypervisor_types=('xen', 'xenserver', 'xcp-ng'),
    image_hv_types=('xen',),
    aliases=('xenapi', 'xcp', 'citrix hypervisor'),
    hardware_names={
        family.DISK_BUS: {'paravirtual': 'xvd', 'scsi': 'sd',
                          'sata': 'ahci', 'ide': 'hd'},
        family.NIC_MODEL: {'paravirtual': 'netfront', 'e1000': 'e1000'},
        family.FIRMWARE: {'bios': 'bios', 'uefi': 'uefi'},
    },
    hardware_aliases={
        family.NIC_MODEL: {'rtl8139': 'e1000', 'vif': 'paravirtual'},
    },
    # What the xenapi backend reads back from a server's image properties
    # (Nova's own enum values).
    image_properties={
        family.DISK_BUS: {
            'paravirtual': {'hw_disk_bus': 'xen'},
            'scsi': {'hw_disk_bus': 'scsi'},
            'sata': {'hw_disk_bus': 'sata'},
            'ide': {'hw_disk_bus': 'ide'}},
        family.NIC_MODEL: {
            'paravirtual': {'hw_vif_model': 'netfront'},
            'e1000': {'hw_vif_model': 'e1000'}},
    },
    # Raw NFS volume files, introduced in place as raw VDIs of an NFS SR
    # on their export (nova_xhv/backends/xenapi/volumes.py).
    volume_attach={'nfs': (formats.RAW,)},
    # The network contract (doc/source/networking.rst): XHV's ML2 driver
    # binds Xen hosts; the switch is the xapi network of the physical
    # network, the port group the xapi network of the segment.
    network=family.Network(
        vif_types=('xenapi',), segment_types=('flat', 'vlan'),
        bound_by=(family.BOUND_BY_XHV,), switch_detail='xen_network',
        port_group_detail='xen_segment_network'),
)
