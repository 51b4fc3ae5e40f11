"""What the fake family declares (see nova_xhv.backends.family).

Its own words for hardware, unlike any real family's, so that a move to
or from it proves the neutral mapping rather than a lucky match of names.
"""

from nova_xhv.backends import family
from nova_xhv.translate import formats

FAMILY = family.Family(
    name='fake',
    native_format=formats.VHDX,
    native_subformat=formats.DYNAMIC,
    # spawn translates what it fetches with the translation engine.
    spawn_formats=formats.FORMATS,
    hypervisor_types=('fake',),
    image_hv_types=('fake',),
    # Bound by XHV's ML2 driver; the fake backend records each NIC (port
    # id, MAC, switch, port group, VLAN) with the guest.
    network=family.Network(
        vif_types=('other',), segment_types=('flat', 'vlan'),
        bound_by=(family.BOUND_BY_XHV,), switch_detail='fake_switch',
        port_group_detail='fake_port_group'),
    hardware_names={
        family.DISK_BUS: {'paravirtual': 'fake-pv-blk',
                          'scsi': 'fake-scsi', 'sata': 'fake-ahci',
                          'ide': 'fake-ata'},
        family.NIC_MODEL: {'paravirtual': 'fake-pv-net',
                           'e1000': 'fake-e1000'},
        family.FIRMWARE: {'bios': 'fake-legacy', 'uefi': 'fake-efi'},
    },
    # What the fake driver reads back from a server's image properties
    # (Nova's own enum values).
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
)
