"""The hardware choice of a move between hypervisor families.

Three choices move with a server: its disk bus, its NIC model and its
firmware.  Each family names them in its own words, declared in its
facts (``nova_xhv.backends.family.Family``: ``hardware_names``,
``hardware_aliases``, ``image_properties``); this module reasons only in
the family-neutral classes (paravirtual/scsi/sata/ide disk buses,
paravirtual/e1000 NICs, bios/uefi firmware) and keeps no table of its own.

A move inside one family keeps what the server had.  A move between
families defaults to a safe first boot -- SATA disk, e1000 NIC -- because
guests often lack the other side's paravirtual drivers; image properties
``xhv_disk_bus`` / ``xhv_nic_model`` or ``[xhv] cross_family_disk_bus`` /
``cross_family_nic_model`` ask for another class.  Firmware is never
changed: a UEFI guest does not boot from BIOS.

The source classifies its server's hardware in its own family's words and
sends the classes; the destination chooses, writes the choice into the
instance's system_metadata as the image properties its driver reads
(``image_hw_disk_bus`` ...) -- the one channel the choice travels in: a
later stop/start or hard reboot rebuilds the same hardware -- and keeps
the values they replaced under ``xhv_hw_original`` so a revert restores
them.
"""

from oslo_serialization import jsonutils

from nova_xhv.backends import family as backend_family

DISK_BUS = backend_family.DISK_BUS
NIC_MODEL = backend_family.NIC_MODEL
FIRMWARE = backend_family.FIRMWARE

DISK_CLASSES = backend_family.DISK_CLASSES
NIC_CLASSES = backend_family.NIC_CLASSES
FIRMWARE_CLASSES = backend_family.FIRMWARE_CLASSES
SAFE_DISK_BUS = 'sata'
SAFE_NIC_MODEL = 'e1000'

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
    return tuple(sorted(backend_family.families()))


def _family(name):
    try:
        return backend_family.get(name)
    except backend_family.UnknownFamily:
        raise HardwareError(
            reason='XHV has no hardware mapping for hypervisor family %r;'
                   ' known: %s' % (name, ', '.join(families())))


def classify(family, kind, native_name):
    """The family-neutral class of ``native_name``; None if unknown."""
    return _family(family).classify(kind, native_name)


def classify_all(family, native):
    """{kind: class or None} for {kind: native name} of ``family``."""
    facts = _family(family)
    return {kind: facts.classify(kind, native.get(kind))
            for kind in (DISK_BUS, NIC_MODEL, FIRMWARE)}


def native_name(family, kind, cls):
    return _family(family).native_name(kind, cls)


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

    :param source: the server's current hardware as neutral classes
        ({kind: class}, see ``classify_all``; missing or unknown classes
        fall back to the defaults).
    :param image_properties: the server's image properties (a dict).
    :param default_disk_bus, default_nic_model: classes for a move between
        families when the image does not choose ([xhv] options).
    """
    _family(dest_family)
    current = {kind: source.get(kind) if source.get(kind) in allowed
               else None for kind, allowed in (
                   (DISK_BUS, DISK_CLASSES), (NIC_MODEL, NIC_CLASSES),
                   (FIRMWARE, FIRMWARE_CLASSES))}
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
    """``classes`` as the backend's own names."""
    return _family(family).native_hardware(classes)


def image_properties(family, classes):
    """The image properties ``family``'s driver reads for ``classes``."""
    return _family(family).image_properties_for(classes)


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
