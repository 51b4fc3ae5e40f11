"""What a hypervisor family declares about itself, and where to find it.

Each backend package owns one light module, ``<package>/facts.py``, that
defines ``FAMILY = Family(...)``: the family's name, native disk format,
the disk formats its ``spawn`` takes, the Nova hypervisor types that name
it, and its hardware vocabulary (its own names for disk buses, NIC models
and firmware, mapped to the family-neutral classes below).  The backend
class carries the same object as ``Backend.facts``.

``facts.py`` imports nothing but this module (and the translation
engine's format names), so every compute and the scheduler can read the
facts of every installed family -- also of families whose client
libraries (pyvmomi ...) are not installed here.  ``families()`` finds them
through the ``nova_xhv.backends`` entry points: the module an entry point
names sits in the family's package, whose ``facts`` module is read.

Neutral classes (what moves between families):

=============  =============================================================
disk_bus       paravirtual, scsi, sata, ide
nic_model      paravirtual, e1000
firmware       bios, uefi
=============  =============================================================

Networking (``Family.network``, a ``Network``): which Neutron port
bindings the family's backend consumes, which segment types its hosts
attach to, and who binds its hosts -- XHV's ML2 mechanism driver
(``neutron_xhv``, entry point ``xhv``) or another mechanism driver (OVN,
openvswitch).  The contract around it is in nova_xhv/backends/base.py
and doc/source/networking.rst.
"""

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import threading
import typing

from nova_xhv.translate import formats

DISK_BUS = 'disk_bus'
NIC_MODEL = 'nic_model'
FIRMWARE = 'firmware'
KINDS = (DISK_BUS, NIC_MODEL, FIRMWARE)

DISK_CLASSES = ('paravirtual', 'scsi', 'sata', 'ide')
NIC_CLASSES = ('paravirtual', 'e1000')
FIRMWARE_CLASSES = ('bios', 'uefi')
CLASSES = {DISK_BUS: DISK_CLASSES, NIC_MODEL: NIC_CLASSES,
           FIRMWARE: FIRMWARE_CLASSES}

BACKEND_NAMESPACE = 'nova_xhv.backends'
# The distribution whose extras bring each backend's client library.
DISTRIBUTION = 'openstack-xhv'
FACTS_MODULE = 'facts'


# The key an XHV compute adds to the os-brick connector it sends Cinder
# (``get_volume_connector``): the family that will attach the volume.
CONNECTOR_FAMILY_KEY = 'xhv_family'
# Volume types whose data are a file on a share every compute of a
# family can mount: the same bytes serve any family that declares them.
FILE_VOLUME_TYPES = ('nfs', 'local', 'smbfs', 'gpfs', 'quobyte')
# Neutron segment types (network_type) a family may declare.
SEGMENT_TYPES = ('flat', 'vlan', 'geneve', 'vxlan')
# Who binds a family's hosts: XHV's own ML2 mechanism driver ...
BOUND_BY_XHV = 'xhv'
# ... or these (Neutron's own) mechanism drivers.
OTHER_MECHANISM_DRIVERS = ('ovn', 'openvswitch')

# vif_details keys XHV's ML2 driver sets on every binding it makes, whatever
# the family (Neutron's own names where it has one).
DETAIL_FAMILY = 'xhv_family'
DETAIL_NETWORK_TYPE = 'network_type'
DETAIL_PHYSICAL_NETWORK = 'physical_network'
DETAIL_SEGMENTATION_ID = 'segmentation_id'
# A name a port group / vSwitch / network of a hypervisor may carry: made
# by the ML2 driver from operator and Neutron input, checked again by the
# backend before it reaches the hypervisor.
SWITCH_NAME_PATTERN = r'^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$'


class UnknownFamily(LookupError):
    """No installed backend declares this family."""


@dataclasses.dataclass(frozen=True)
class Network:
    """What a family consumes of Neutron's port binding (see module doc)."""

    #: ``vif_type`` values its backend plugs (network_info's ``vif['type']``);
    #: any other is refused.  For families XHV binds, the first is the one
    #: XHV's ML2 driver binds with.
    vif_types: typing.Tuple[str, ...]
    #: Neutron ``network_type`` values (SEGMENT_TYPES) its hosts attach to.
    segment_types: typing.Tuple[str, ...]
    #: Who binds its hosts: (BOUND_BY_XHV,) or mechanism drivers of
    #: OTHER_MECHANISM_DRIVERS, in the order an operator lists them.
    bound_by: typing.Tuple[str, ...]
    #: For families XHV binds: the vif_details key that carries the switch
    #: (DVS, vSwitch, ...) the segment's physical network maps to on the
    #: host (``[ml2_xhv] physical_network_mappings``) ...
    switch_detail: typing.Optional[str] = None
    #: ... and the key naming the port group / network on that switch for
    #: the segment (the ML2 driver names it; the backend finds or creates
    #: it, with the segment's VLAN).
    port_group_detail: typing.Optional[str] = None

    @property
    def bound_by_xhv(self):
        return BOUND_BY_XHV in self.bound_by

    def check(self, family_name):
        """Raise ValueError when these facts cannot work (see module doc)."""
        problems = []
        if not self.vif_types:
            problems.append('no vif_types')
        unknown = [t for t in self.segment_types if t not in SEGMENT_TYPES]
        if not self.segment_types or unknown:
            problems.append('segment_types %r (known: %s)'
                            % (self.segment_types, ', '.join(SEGMENT_TYPES)))
        known = (BOUND_BY_XHV,) + OTHER_MECHANISM_DRIVERS
        if not self.bound_by or [b for b in self.bound_by if b not in known]:
            problems.append('bound_by %r (known: %s)'
                            % (self.bound_by, ', '.join(known)))
        if self.bound_by_xhv and not (self.switch_detail
                                      and self.port_group_detail):
            problems.append('bound by XHV without switch_detail and '
                            'port_group_detail')
        if problems:
            raise ValueError('family %s declares unusable network facts: %s'
                             % (family_name, '; '.join(problems)))


@dataclasses.dataclass(frozen=True)
class Family:
    """The facts of one hypervisor family (see module doc)."""

    #: XHV's name for the family (kvm, vmware, hyperv, xen, fake).
    name: str
    #: Format (nova_xhv.translate.formats) and subformat its disks are
    #: stored in; moved disks are translated to it.
    native_format: str
    native_subformat: typing.Optional[str]
    #: Disk formats (Glance disk_format names) ``spawn`` boots from;
    #: a compute with moves enabled advertises these image types.
    spawn_formats: typing.Tuple[str, ...]
    #: Nova ``hypervisor_type`` values of this family's computes (any
    #: case), for computes that publish no XHV stats.
    hypervisor_types: typing.Tuple[str, ...]
    #: Image ``hypervisor_type`` values (Nova's HVType) that pin an image
    #: to this family; advertised in supported_instances by computes of
    #: other families that take its servers.
    image_hv_types: typing.Tuple[str, ...]
    #: kind -> neutral class -> the family's own name (what
    #: DiskDescriptor.bus and Backend.spawn_from_disks' ``hardware`` use).
    hardware_names: typing.Mapping[str, typing.Mapping[str, str]]
    #: kind -> other native name -> neutral class (read, never chosen).
    hardware_aliases: typing.Mapping[str, typing.Mapping[str, str]] = \
        dataclasses.field(default_factory=dict)
    #: kind -> neutral class -> image properties this family's driver
    #: reads to build that hardware (kept in system_metadata so a hard
    #: reboot rebuilds it).
    image_properties: typing.Mapping[
        str, typing.Mapping[str, typing.Mapping[str, str]]] = \
        dataclasses.field(default_factory=dict)
    #: Other names operators use for the family (any case).
    aliases: typing.Tuple[str, ...] = ()
    #: Cinder ``driver_volume_type`` -> disk formats (translate.formats
    #: names) of volumes this family's backend attaches through
    #: ``attach_volume`` as they are, with no conversion.  Read by
    #: cinder_xhv (which imports no nova) to answer a connector of this
    #: family, to advertise ``xhv_attach_families`` and to refuse what a
    #: family cannot attach.  Empty: the family attaches no volume.
    volume_attach: typing.Mapping[str, typing.Tuple[str, ...]] = \
        dataclasses.field(default_factory=dict)

    def attaches(self, volume_type, disk_format=None):
        """Whether ``attach_volume`` takes ``volume_type`` in ``disk_format``.

        ``disk_format`` None: in any format.
        """
        accepted = self.volume_attach.get(str(volume_type or '').lower())
        if accepted is None:
            return False
        return disk_format is None or disk_format in accepted
    #: What it consumes of Neutron (a Network).  None: a family that has
    #: not declared it yet; the conformance suite fails it.
    network: typing.Optional[Network] = None

    def __post_init__(self):
        if self.network is not None:
            self.network.check(self.name)
        for kind in KINDS:
            names = self.hardware_names.get(kind, {})
            missing = [c for c in CLASSES[kind] if c not in names]
            if missing:
                raise ValueError('family %s names no %s for %s'
                                 % (self.name, kind, ', '.join(missing)))

    def classify(self, kind, native_name):
        """The neutral class of one of this family's names; None if unknown."""
        if native_name is None:
            return None
        wanted = str(native_name).lower()
        for cls, name in self.hardware_names[kind].items():
            if name.lower() == wanted:
                return cls
        for name, cls in self.hardware_aliases.get(kind, {}).items():
            if name.lower() == wanted:
                return cls
        return None

    def native_name(self, kind, cls):
        return self.hardware_names[kind][cls]

    def native_hardware(self, classes):
        """``classes`` ({kind: class}) in this family's own names."""
        return {kind: self.native_name(kind, cls)
                for kind, cls in classes.items()}

    def image_properties_for(self, classes):
        """The image properties this family's driver reads for ``classes``."""
        props = {}
        for kind, cls in classes.items():
            if kind == FIRMWARE:
                # Nova's hw_firmware_type speaks the neutral names.
                props['hw_firmware_type'] = cls
            else:
                props.update(self.image_properties[kind][cls])
        return props


_lock = threading.Lock()
_cache = None


def _facts_module(entry_point):
    """``<family package>.facts`` for an entry point's target module."""
    module = entry_point.value.split(':', 1)[0].strip()
    spec = importlib.util.find_spec(module)
    if spec is None or spec.submodule_search_locations is None:
        module = module.rpartition('.')[0]  # a module inside the package
    return '%s.%s' % (module, FACTS_MODULE)


def families(reload=False):
    """{family name: Family} of every installed backend."""
    global _cache
    with _lock:
        if _cache is None or reload:
            found = {}
            for ep in importlib.metadata.entry_points(
                    group=BACKEND_NAMESPACE):
                facts = importlib.import_module(_facts_module(ep)).FAMILY
                found[facts.name] = facts
            _cache = found
        return dict(_cache)


def get(name):
    """The Family called ``name``; UnknownFamily if none is installed."""
    known = families()
    try:
        return known[name]
    except KeyError:
        raise UnknownFamily('XHV has no backend for hypervisor family %r; '
                            'installed: %s' % (name, ', '.join(sorted(known))))


def lookup(name):
    """The Family ``name`` means; UnknownFamily if none.

    ``name``: the family's own name, an alias, an entry point name (``[xhv]
    backend``) or a Nova hypervisor type, in any case.
    """
    wanted = str(name or '').strip().lower()
    known = families()
    if wanted in known:
        return known[wanted]
    for ep in importlib.metadata.entry_points(group=BACKEND_NAMESPACE):
        if ep.name.lower() == wanted:
            return importlib.import_module(_facts_module(ep)).FAMILY
    for facts in known.values():
        if wanted in (n.lower() for n in facts.aliases
                      + facts.hypervisor_types + facts.image_hv_types):
            return facts
    raise UnknownFamily('unknown hypervisor family %r; installed: %s'
                        % (name, ', '.join(sorted(known))))


def native_format(name):
    """formats.NativeFormat(format, subformat) of the family ``name``."""
    facts = lookup(name)
    return formats.NativeFormat(facts.native_format, facts.native_subformat)


def family_of_hv_type(hv_type):
    """The family a Nova hypervisor_type (of a compute or an image) names."""
    if not hv_type:
        return None
    wanted = str(hv_type).strip().lower()
    for facts in families().values():
        if wanted in (t.lower() for t in
                      facts.hypervisor_types + facts.image_hv_types):
            return facts.name
    return None


def families_attaching(volume_type, disk_format=None):
    """Sorted names of installed families that attach this volume type."""
    return sorted(name for name, facts in families().items()
                  if facts.attaches(volume_type, disk_format))


def install_hint(name):
    """How to get backend ``name``'s Python dependencies, from our extras."""
    try:
        extras = importlib.metadata.metadata(DISTRIBUTION).get_all(
            'Provides-Extra') or []
    except importlib.metadata.PackageNotFoundError:
        extras = []
    if name in extras:
        return 'pip install %s[%s]' % (DISTRIBUTION, name)
    return 'install the package that provides it'
