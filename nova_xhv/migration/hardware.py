"""The ONE hardware mapping between hypervisor families.

Three choices move with a server: its disk bus, its NIC model and its
firmware.  Each family names them differently; this module maps them
through family-neutral classes:

=============  ====================  ==========================  ==========
class          KVM (libvirt)         vSphere                     image props
=============  ====================  ==========================  ==========
paravirtual    virtio                paraVirtual (PVSCSI)        see table
scsi           scsi (virtio-scsi)    lsiLogic (also lsiLogicsas,
                                     busLogic)
sata           sata                  sata (AHCI)
ide            ide                   ide
NIC e1000      e1000                 e1000
NIC paravirt.  virtio                vmxnet3
bios / uefi    bios / uefi           bios / efi
=============  ====================  ==========================  ==========

A move inside one family keeps what the server had.  A move between
families defaults to a safe first boot -- SATA disk, e1000 NIC -- because
guests often lack the other side's paravirtual drivers; image properties
``xhv_disk_bus`` / ``xhv_nic_model`` or ``[xhv] cross_family_disk_bus`` /
``cross_family_nic_model`` ask for another class.  Firmware is never
changed: a UEFI guest does not boot from BIOS.

The choice is written into the instance's system_metadata as the image
properties the destination's driver reads (``image_hw_disk_bus`` ...), so
a later stop/start or hard reboot rebuilds the same hardware, and the
values they replaced are kept under ``xhv_hw_original`` so a revert
restores them.
"""

from oslo_serialization import jsonutils

DISK_BUS = 'disk_bus'
NIC_MODEL = 'nic_model'
FIRMWARE = 'firmware'

DISK_CLASSES = ('paravirtual', 'scsi', 'sata', 'ide')
NIC_CLASSES = ('paravirtual', 'e1000')
FIRMWARE_CLASSES = ('bios', 'uefi')
SAFE_DISK_BUS = 'sata'
SAFE_NIC_MODEL = 'e1000'

# family -> class -> the backend's own name (DiskDescriptor.bus, the
# ``hardware`` argument of Backend.spawn_from_disks).
_NATIVE_NAMES = {
    'kvm': {
        DISK_BUS: {'paravirtual': 'virtio', 'scsi': 'scsi', 'sata': 'sata',
                   'ide': 'ide'},
        NIC_MODEL: {'paravirtual': 'virtio', 'e1000': 'e1000'},
        FIRMWARE: {'bios': 'bios', 'uefi': 'uefi'},
    },
    'vmware': {
        DISK_BUS: {'paravirtual': 'paraVirtual', 'scsi': 'lsiLogic',
                   'sata': 'sata', 'ide': 'ide'},
        NIC_MODEL: {'paravirtual': 'vmxnet3', 'e1000': 'e1000'},
        FIRMWARE: {'bios': 'bios', 'uefi': 'efi'},
    },
}
# Other native names that belong to a class (read only, never chosen).
_EXTRA_NAMES = {
    'kvm': {DISK_BUS: {'virtio-scsi': 'scsi'},
            NIC_MODEL: {'e1000e': 'e1000', 'rtl8139': 'e1000'}},
    'vmware': {DISK_BUS: {'lsiLogicsas': 'scsi', 'busLogic': 'scsi'},
               NIC_MODEL: {'e1000e': 'e1000'}},
}
# family -> class -> the image properties the family's driver reads.
_IMAGE_PROPERTIES = {
    'kvm': {
        DISK_BUS: {'paravirtual': {'hw_disk_bus': 'virtio'},
                   'scsi': {'hw_disk_bus': 'scsi',
                            'hw_scsi_model': 'virtio-scsi'},
                   'sata': {'hw_disk_bus': 'sata'},
                   'ide': {'hw_disk_bus': 'ide'}},
        NIC_MODEL: {'paravirtual': {'hw_vif_model': 'virtio'},
                    'e1000': {'hw_vif_model': 'e1000'}},
    },
    'vmware': {
        DISK_BUS: {'paravirtual': {'hw_disk_bus': 'scsi',
                                   'hw_scsi_model': 'vmpvscsi'},
                   'scsi': {'hw_disk_bus': 'scsi',
                            'hw_scsi_model': 'lsilogic'},
                   'sata': {'hw_disk_bus': 'sata'},
                   'ide': {'hw_disk_bus': 'ide'}},
        NIC_MODEL: {'paravirtual': {'hw_vif_model': 'vmxnet3'},
                    'e1000': {'hw_vif_model': 'e1000'}},
    },
}
for _family in _IMAGE_PROPERTIES:
    _IMAGE_PROPERTIES[_family][FIRMWARE] = {
        c: {'hw_firmware_type': c} for c in FIRMWARE_CLASSES}
# Every image property this module may set, for save/restore.
MANAGED_PROPERTIES = ('hw_disk_bus', 'hw_scsi_model', 'hw_vif_model',
                      'hw_firmware_type')
SYSMETA_ORIGINAL = 'xhv_hw_original'
SYSMETA_MAPPING = 'xhv_hw_mapping'
SYSMETA_PREFIX = 'image_'


class HardwareError(ValueError):
    """A hardware name or choice that cannot be mapped."""

    def __init__(self, reason):
        super().__init__(reason)


def families():
    return tuple(sorted(_NATIVE_NAMES))


def _family_table(family):
    try:
        return _NATIVE_NAMES[family]
    except KeyError:
        raise HardwareError(
            reason='XHV has no hardware mapping for hypervisor family %r;'
                   ' known: %s' % (family, ', '.join(families())))


def classify(family, kind, native_name):
    """The family-neutral class of ``native_name``; None if unknown."""
    if native_name is None:
        return None
    table = _family_table(family)[kind]
    for cls, name in table.items():
        if name.lower() == str(native_name).lower():
            return cls
    extras = _EXTRA_NAMES.get(family, {}).get(kind, {})
    for name, cls in extras.items():
        if name.lower() == str(native_name).lower():
            return cls
    return None


def native_name(family, kind, cls):
    return _family_table(family)[kind][cls]


def _property_choice(properties, name, allowed):
    value = (properties or {}).get(name)
    if value is None:
        return None
    if value not in allowed:
        raise HardwareError(
            reason='image property %s=%r is not one of %s; fix the image '
                   '(glance image-update) or unset it'
                   % (name, value, ', '.join(allowed)))
    return value


def choose(source_family, dest_family, source, image_properties,
           default_disk_bus=SAFE_DISK_BUS, default_nic_model=SAFE_NIC_MODEL):
    """Classes for the destination: {disk_bus, nic_model, firmware}.

    :param source: the server's current hardware as native names of
        ``source_family`` ({kind: name}; missing or unknown names fall back
        to the defaults).
    :param image_properties: the server's image properties (a dict).
    :param default_disk_bus, default_nic_model: classes for a move between
        families when the image does not choose ([xhv] options).
    """
    _family_table(dest_family)
    current = {kind: classify(source_family, kind, source.get(kind))
               for kind in (DISK_BUS, NIC_MODEL, FIRMWARE)}
    firmware = current[FIRMWARE] or 'bios'
    if source_family == dest_family:
        return {DISK_BUS: current[DISK_BUS] or default_disk_bus,
                NIC_MODEL: current[NIC_MODEL] or default_nic_model,
                FIRMWARE: firmware}
    disk = (_property_choice(image_properties, 'xhv_disk_bus',
                             DISK_CLASSES) or default_disk_bus)
    nic = (_property_choice(image_properties, 'xhv_nic_model',
                            NIC_CLASSES) or default_nic_model)
    if disk not in DISK_CLASSES or nic not in NIC_CLASSES:
        raise HardwareError(
            reason='unknown hardware class %r / %r' % (disk, nic))
    return {DISK_BUS: disk, NIC_MODEL: nic, FIRMWARE: firmware}


def native_hardware(family, classes):
    """``classes`` as the backend's own names (spawn_from_disks)."""
    return {kind: native_name(family, kind, cls)
            for kind, cls in classes.items()}


def image_properties(family, classes):
    """The image properties ``family``'s driver reads for ``classes``."""
    props = {}
    for kind, cls in classes.items():
        props.update(_IMAGE_PROPERTIES[family][kind][cls])
    return props


def apply_to_system_metadata(system_metadata, family, classes):
    """Write the choice into system_metadata, keeping the originals once.

    Returns the changed keys.  Calling it again (a retried finish) keeps the
    first recorded originals.
    """
    if SYSMETA_ORIGINAL not in system_metadata:
        original = {p: system_metadata.get(SYSMETA_PREFIX + p)
                    for p in MANAGED_PROPERTIES}
        system_metadata[SYSMETA_ORIGINAL] = jsonutils.dumps(original)
    wanted = image_properties(family, classes)
    for prop in MANAGED_PROPERTIES:
        key = SYSMETA_PREFIX + prop
        if prop in wanted:
            system_metadata[key] = wanted[prop]
        else:
            system_metadata.pop(key, None)
    system_metadata[SYSMETA_MAPPING] = jsonutils.dumps(
        dict(classes, family=family))
    return wanted


def restore_system_metadata(system_metadata):
    """Undo apply_to_system_metadata; True when something was restored."""
    saved = system_metadata.pop(SYSMETA_ORIGINAL, None)
    system_metadata.pop(SYSMETA_MAPPING, None)
    if saved is None:
        return False
    for prop, value in jsonutils.loads(saved).items():
        key = SYSMETA_PREFIX + prop
        if value is None:
            system_metadata.pop(key, None)
        else:
            system_metadata[key] = value
    return True


def forget_original(system_metadata):
    """After confirm: the mapping is now the server's own hardware."""
    system_metadata.pop(SYSMETA_ORIGINAL, None)
