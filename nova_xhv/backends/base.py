"""The backend contract: everything XHV needs from one hypervisor family.

A backend is a Nova ``ComputeDriver`` for one hypervisor family plus the
disk exchange that moves between families need.  ``XHVDriver``
(nova_xhv/driver.py) forwards every ComputeDriver call to it; the move
itself (export -> transfer -> translate -> stage -> spawn, with rollback)
lives in ``nova_xhv.migration``, never in a backend.  A backend imports
neither ``nova_xhv.migration`` nor ``nova_xhv.driver`` nor another backend
(tests/unit/test_house_rules.py checks it).

What a family ships (doc/source/architecture.rst, "How to add a backend"):

* ``nova_xhv/backends/<package>/facts.py`` with ``FAMILY``, a
  ``nova_xhv.backends.family.Family``: name, native format, the formats
  its spawn takes, its Nova hypervisor types and its hardware vocabulary.
  The backend class sets ``facts = FAMILY``; ``family``,
  ``native_format`` and ``native_subformat`` follow from it.
* the backend class (a subclass of ``Backend``), named by one entry point
  in the ``nova_xhv.backends`` namespace (setup.cfg);
* its options, ``[xhv_<name>]``, in ``nova_xhv/conf/<name>.py`` (found by
  nova_xhv/conf/opts.py without listing it).

ComputeDriver calls.  Nova needs at least these to run a compute and move
a server: init_host, get_available_nodes, get_available_resource,
update_provider_tree, list_instance_uuids, list_instances, spawn,
get_info, destroy, power_off, power_on, reboot, get_host_ip_addr,
snapshot.  ``get_info(instance).state`` is the hypervisor's honest power
state (nova.compute.power_state), and raises InstanceNotFound for a guest
it does not have.  Calls a backend does not support keep ComputeDriver's
NotImplementedError, which Nova already handles.  Same-family migrations
(migrate_disk_and_power_off, finish_migration, confirm_migration,
finish_revert_migration) are the backend's own business.

Volumes (Cinder).  A family attaches volumes as they are stored -- no
conversion at attach time -- and declares which in its facts:
``Family.volume_attach`` maps a Cinder ``driver_volume_type`` to the disk
formats its backend opens (e.g. vmware: ``{'nfs': ('raw',)}``; kvm: nfs
in raw or qcow2, iscsi, rbd, ...).  cinder_xhv reads these facts (it
imports nothing of Nova) to advertise ``xhv_attach_families`` and to
answer, or refuse with the reason, a connector of that family.  What a
backend must do:

``get_volume_connector(instance)``
    An os-brick style connector (``ip``, ``host``, ``initiator``,
    ``platform``, ``os_type``, ``multipath``, plus what its volume types
    need: ``wwpns``, ``nqn``...).  XHVDriver adds
    ``family.CONNECTOR_FAMILY_KEY`` (``xhv_family``) with the family's
    name: do not add it yourself, and do not add ``instance`` (Cinder's
    VMDK driver takes that key for Nova's own VMware driver).
``attach_volume(context, connection_info, instance, mountpoint,
disk_bus, device_type, encryption)``
    Consumes the inner driver's ``connection_info`` unchanged, plus
    ``data['xhv_family']`` and ``data['format']`` (the stored format) set
    by XHV's volume driver.  File volumes (``driver_volume_type`` in
    ``family.FILE_VOLUME_TYPES``; NFS: ``data['export']`` =
    ``host:/path``, ``data['name']`` = the file in it,
    ``data['options']``) are opened in place, on the share every family
    mounts: the same bytes serve every family, so a volume follows its
    server by re-attaching, never by copying.  Must: refuse, before
    changing anything, a type or format outside ``volume_attach``
    (Nova's ``VolumeDriverNotFound`` for an unknown type); be idempotent
    for a volume already attached; leave nothing (device, descriptor,
    mount) behind when it raises.
``check_volume_attachable(connection_info)``
    Raise (an ``exception.Invalid``: ``VolumeNotAttachable`` or the
    family's own volume error, with a reason an operator can act on: the
    export and the option to set) when this compute could not attach the
    volume; changes nothing.  A move asks the destination's backend this,
    through the exchange endpoint, before the source powers anything
    off.  Default: the type and format are in ``volume_attach``; a family
    that reaches volumes through its own configuration (a share map, a
    mount) also checks that, as its ``attach_volume`` would.
``detach_volume(context, connection_info, instance, mountpoint,
encryption)``
    Removes the device and what attach made for it, never the volume's
    data; a volume already detached, or a guest already gone, is fine.
``spawn`` / ``spawn_from_disks`` with ``block_device_info``
    Attach every mapped volume (the ``boot_index`` 0 one first: a server
    booted from a volume has no image disk), and ``destroy`` detaches
    them before deleting the guest's own disks (some hypervisors delete
    every disk file of a deleted VM).  ``export_disks`` never exports
    volumes: moves carry them through Nova's attachment flow.

tests/functional/backends/conformance.py checks these for every family
whose test bed can serve an NFS export (``TestBed.nfs_export``).

The disk exchange, in the order a move calls it:

source compute
    ``power_off`` -> ``export_disks`` -> ``open_exported_disk`` (once per
    disk, served to the destination) -> ``release_exported_disks`` (after
    the destination staged, or on rollback, or at confirm/revert after a
    restart: it may be called again with the same descriptors).
destination compute
    ``check_stageable`` (before any data is pulled) -> ``stage_disks``
    (with disks translated to the native format in a private work folder)
    (or ``stage_disk_streams``, when ``accepts_disk_streams()``)
    -> ``spawn_from_disks`` (in finish_migration) or
    ``discard_staged_disks`` (a failed or cancelled move, a revert, or
    leftovers found at the next start).

Cleanup duties, which tests/functional/backends/conformance.py checks for
every backend:

* ``stage_disks`` that raises leaves nothing behind (it removes its own
  partial placement before raising);
* ``discard_staged_disks`` is idempotent: a second call, or a call for
  disks already gone, succeeds and changes nothing;
* ``spawn_from_disks`` that raises leaves the staged disks for
  ``discard_staged_disks`` (the caller discards them);
* nothing of the exchange ever changes the instance's original disks.

The network contract (doc/source/networking.rst).  A family declares what
it consumes of Neutron in ``facts.network`` (nova_xhv.backends.family.
Network): the ``vif_types`` its backend plugs, the segment types
(``flat``, ``vlan`` ...) its hosts attach to, and who binds its hosts --
XHV's ML2 mechanism driver (``mechanism_drivers = ovn,xhv``; package
``neutron_xhv``) or another one (OVN/openvswitch for KVM).  XHV's driver
learns a host's family and its physical-network mappings from
neutron-server's configuration (``[ml2_xhv] host_families``,
``physical_network_mappings``), reads the family's facts, and binds with
``facts.network.vif_types[0]`` and these vif_details: ``xhv_family``,
``network_type``, ``physical_network``, ``segmentation_id`` (None when
flat), ``facts.network.switch_detail`` (the mapped switch) and
``facts.network.port_group_detail`` (the port group it names for the
segment).  It never lists families itself; a host it is configured for
but cannot bind (no mapping for the segment's physical network, a segment
type the family does not take, a family not installed) gets a binding
failure with the reason in neutron-server's log.

What a backend does with ``network_info`` (spawn, spawn_from_disks,
finish_migration and whatever else creates or rebuilds a guest):

* first ``self.nics(network_info)``: it checks every VIF and raises
  ``VifRefused`` naming the port and why (Neutron did not bind it to this
  host, a vif_type not in ``facts.network.vif_types``, a MAC that is not
  one, a switch or port group name that is not a plain name, a segment
  the family does not take), before anything is created: a refused
  request leaves nothing behind;
* one NIC per VIF, in network_info's order; the NIC's MAC is the port's
  MAC (set as a static/manual address, never generated), the NIC is tied
  to the port id where the hypervisor keeps one (vSphere ``externalId``,
  OVS ``iface-id``), the NIC model comes from the hardware choice
  (``facts.hardware_names['nic_model']``);
* families XHV binds: the NIC goes on the port group named by the
  binding, on the mapped switch, found, or created with the segment's VLAN
  where the backend's options allow it; a port group with another VLAN
  is refused, never reused;
* ``plugged_ports(instance)`` tells what the hypervisor holds:
  [(port id or None, MAC)] in NIC order (the conformance suite reads
  it);
* moves: a backend carries no NIC through ``export_disks``; Nova rebinds
  the ports to the destination host (``migrate_instance_finish``) and the
  destination plugs them from the network_info ``finish_migration``
  gets, so the port, its MAC and its fixed IPs stay the same.  XHV's move
  checks before power-off that Neutron can bind every port on the
  destination host (nova_xhv/migration/ports.py, with ``check_vifs``);
  Nova's revert rebinds them to the source.
"""

import abc
import collections
import re

from nova import exception
from nova.virt import driver

from nova_xhv.backends import family as families
from nova_xhv import disk as xhv_disk

_MAC = re.compile(r'^[0-9a-f]{2}(:[0-9a-f]{2}){5}$')
_SWITCH_NAME = re.compile(families.SWITCH_NAME_PATTERN)
# vif_types Neutron reports when nothing bound the port to the host.
_UNBOUND = ('binding_failed', 'unbound')


class VifRefused(exception.NovaException):
    msg_fmt = ('The %(family)s backend cannot plug Neutron port '
               '%(port_id)s: %(reason)s')
    code = 400


class VolumeNotAttachable(exception.Invalid):
    msg_fmt = 'The XHV %(family)s backend cannot attach this volume: ' \
        '%(reason)s'


#: One NIC to plug, checked (``Backend.nics``): ``port_id``, ``mac``
#: (lower case), ``vif_type``; for families XHV binds also ``switch``,
#: ``port_group``, ``network_type``, ``physical_network`` and
#: ``segmentation_id`` (int, None when flat), else None.
Nic = collections.namedtuple('Nic', [
    'port_id', 'mac', 'vif_type', 'switch', 'port_group', 'network_type',
    'physical_network', 'segmentation_id'])


class Backend(driver.ComputeDriver, metaclass=abc.ABCMeta):
    """One hypervisor family behind XHV.

    Subclasses set ``facts`` and implement the exchange methods.  They are
    built as ``Backend(virtapi, read_only=False)``, exactly like a Nova
    compute driver.
    """

    #: The family's facts: nova_xhv.backends.family.Family.
    facts = None
    #: From ``facts``: XHV's name for the family (kvm, vmware, fake ...).
    family = None
    #: From ``facts``: format (nova_xhv.translate.formats) and subformat
    #: the hypervisor stores disks in; moved disks arrive in it.
    native_format = None
    native_subformat = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get('facts') is not None:
            cls.family = cls.facts.name
            cls.native_format = cls.facts.native_format
            cls.native_subformat = cls.facts.native_subformat

    def nics(self, network_info):
        """Check every VIF of ``network_info``; the Nics to plug, in order.

        Raises VifRefused (see module doc) for the first VIF this family
        cannot plug.
        """
        return check_vifs(self.facts, network_info)

    def plugged_ports(self, instance):
        """[(Neutron port id or None, MAC)] of the guest's NICs, in order."""
        raise NotImplementedError()

    def check_volume_attachable(self, connection_info):
        """Raise when this compute cannot attach the volume (module doc).

        Default: from the family's facts alone.
        """
        kind = str(connection_info.get('driver_volume_type') or '').lower()
        fmt = (connection_info.get('data') or {}).get('format') or 'raw'
        if not self.facts.attaches(kind, fmt):
            raise VolumeNotAttachable(
                family=self.family,
                reason='it is a %s volume stored as %s; this family '
                       'attaches %s' % (kind or 'typeless', fmt, ', '.join(
                           '%s (%s)' % (k, ' or '.join(v)) for k, v in
                           sorted(self.facts.volume_attach.items()))
                           or 'no volumes'))

    @abc.abstractmethod
    def export_disks(self, context, instance, block_device_info=None):
        """Describe the disks of a powered-off instance for a move.

        May assume: the instance is powered off (``power_off`` returned);
        it raises when it is not.  Volumes and regenerated disks (config
        drives) are not exported; a server booted from a volume (a
        mapping with ``boot_index`` 0 in ``block_device_info``) may have
        no disk to export: return [] (``spawn_from_disks`` then gets no
        disks and boots from the volume).

        :returns: list of nova_xhv.disk.DiskDescriptor, boot disk
            (``boot_index`` 0) first, each with ``format``/``subformat``,
            ``virtual_size``, ``bus`` (the family's own name, see
            ``facts.hardware_names``) and a ``handle`` naming the disk in
            the family's own words.  Each disk is readable through
            ``open_exported_disk`` (never modified) until
            ``release_exported_disks``: a local ``path`` (the live disk
            file when storage is local, or a private copy), or a
            backend-specific ``url`` where the disk is stored.
        """

    def open_exported_disk(self, disk):
        """A nova_xhv.disk.DiskReader over one disk from ``export_disks``.

        The exchange endpoint serves the disk through it (Range reads).
        A reader may also offer ``direct_read()`` (see
        nova_xhv.disk.DiskReader) for a one-time read straight from the
        hypervisor's storage.  Default: the descriptor's local ``path``;
        backends that export disks where they are stored (``url`` set)
        override this.
        """
        if disk.path is None:
            raise ValueError('the %s backend exported %s without a local '
                             'path and cannot open it' % (self.family,
                                                          disk.url))
        return xhv_disk.LocalFileReader(disk.path)

    def release_exported_disks(self, context, instance, disks):
        """Drop whatever ``export_disks`` made (copies, leases, tokens).

        Never touches the instance's own disks; idempotent.  Default:
        nothing to drop.
        """

    def check_stageable(self, context, instance, disks):
        """Raise now if ``stage_disks`` would refuse these disks.

        Called with the source's descriptors (formats of the source
        family; ``url`` set, no ``path``) before any data is pulled, so
        that a move that cannot land fails, and rolls back, at once.
        Default: every disk can be staged.
        """

    @abc.abstractmethod
    def stage_disks(self, context, instance, disks):
        """Place native-format disks in the hypervisor's storage.

        The disks are attached to nothing yet, and no guest is created.

        May assume: each disk is a local ``path`` in ``native_format`` /
        ``native_subformat``, written by the translation engine after its
        safety inspection, in a folder private to this move; the backend
        may move (rename) these files instead of copying.  ``bus`` is the
        family's own name of the chosen disk bus.  ``handle`` is the
        source's own name for the disk: a backend uses it only when it
        recognises it as one of its own (a move back to this family).

        Must: raise, with nothing left behind, when it cannot place every
        disk.

        :returns: DiskDescriptors for the staged disks, in the same order,
            whose ``handle`` (and ``path``/``url``) is all that
            ``spawn_from_disks`` and ``discard_staged_disks`` need: they
            may be called by another process after a restart, with the
            descriptors read back from a journal (to_dict/from_dict).
        """

    def accepts_disk_streams(self):
        """True when ``stage_disk_streams`` takes disks as they are written.

        Default False: a move translates each disk into a local file and
        calls ``stage_disks``.
        """
        return False

    def stage_disk_streams(self, context, instance, disks, streams):
        """``stage_disks`` for disks still being translated.

        ``streams[i]`` is a nova_xhv.translate.TranslationStream (already
        inspected: ``virtual_size``, ``size_hint``) of ``disks[i]``, whose
        ``url`` is where the engine reads it from (no ``path``).  The
        backend runs each (``run(consume)``) once, consuming the
        native-format stream as the engine writes it (no local copy), and
        keeps nothing of a stream whose run raised.  Same duties as
        ``stage_disks``.

        :returns: (staged DiskDescriptors as stage_disks returns them,
            the ConvertResult of each stream)
        """
        raise NotImplementedError()

    @abc.abstractmethod
    def discard_staged_disks(self, context, instance, disks):
        """Remove disks made by ``stage_disks``, and only those.

        Idempotent: disks already gone, or a second call, are fine.
        ``instance`` may be a stub carrying only ``uuid`` (the server was
        deleted meanwhile).
        """

    @abc.abstractmethod
    def spawn_from_disks(self, context, instance, disks, network_info,
                         image_meta, block_device_info=None, hardware=None,
                         power_on=True):
        """Create the instance on this hypervisor from staged disks.

        May assume: ``disks`` came from ``stage_disks`` on this compute;
        the hardware chosen for a move is in ``image_meta``: the instance's
        system_metadata carries it as the image properties
        ``facts.image_properties`` names (the one channel the choice
        travels in; a later hard reboot rebuilds from the same).

        :param hardware: an explicit override in the family's own names
            ({disk_bus, nic_model, firmware}: ``facts.hardware_names``) for
            direct callers; XHV's moves pass None.
        :param power_on: start the guest (False: leave it powered off).

        On failure it raises and leaves the staged disks to
        ``discard_staged_disks``.
        """

    def import_disks(self, context, instance, disks, network_info,
                     image_meta, block_device_info=None, hardware=None,
                     power_on=True):
        """Stage native-format disks and create the instance from them."""
        staged = self.stage_disks(context, instance, disks)
        try:
            self.spawn_from_disks(context, instance, staged, network_info,
                                  image_meta, block_device_info,
                                  hardware=hardware, power_on=power_on)
        except Exception:
            self.discard_staged_disks(context, instance, staged)
            raise
        return staged


def check_vifs(family_facts, network_info):
    """``Backend.nics`` for the family ``family_facts`` describes.

    Also what a move checks against the destination's bindings before the
    source powers anything off.
    """
    facts = family_facts.network if family_facts is not None else None
    name = family_facts.name if family_facts is not None else None
    return [_check_vif(name, facts, vif) for vif in (network_info or [])]


def _check_vif(family_name, facts, vif):
    port_id = vif.get('id')

    def refuse(reason):
        raise VifRefused(family=family_name, port_id=port_id, reason=reason)

    vif_type = vif.get('type')
    if facts is None:
        refuse('the family declares no network facts')
    if vif_type in _UNBOUND or not vif_type:
        refuse('Neutron did not bind it to this host (vif_type %s): see '
               'neutron-server\'s log and doc/source/networking.rst'
               % (vif_type or 'missing'))
    if vif_type not in facts.vif_types:
        refuse('vif_type %r is not one this family plugs (%s)'
               % (vif_type, ', '.join(facts.vif_types)))
    mac = str(vif.get('address') or '').lower()
    if not _MAC.match(mac):
        refuse('%r is not a MAC address' % vif.get('address'))
    if not facts.bound_by_xhv:
        return Nic(port_id, mac, vif_type, None, None, None, None, None)
    details = vif.get('details') or {}
    names = []
    for key in (facts.switch_detail, facts.port_group_detail):
        name = details.get(key)
        if not isinstance(name, str) or not _SWITCH_NAME.match(name):
            refuse('binding detail %s=%r is not a plain name (%s)'
                   % (key, name, families.SWITCH_NAME_PATTERN))
        names.append(name)
    network_type = details.get(families.DETAIL_NETWORK_TYPE)
    if network_type not in facts.segment_types:
        refuse('segment type %r is not one this family takes (%s)'
               % (network_type, ', '.join(facts.segment_types)))
    segmentation_id = details.get(families.DETAIL_SEGMENTATION_ID)
    if network_type == 'vlan':
        if (isinstance(segmentation_id, bool)
                or not isinstance(segmentation_id, int)
                or not 1 <= segmentation_id <= 4094):
            refuse('VLAN id %r is not one of 1-4094' % (segmentation_id,))
    else:
        segmentation_id = None
    return Nic(port_id, mac, vif_type, names[0], names[1], network_type,
               details.get(families.DETAIL_PHYSICAL_NETWORK),
               segmentation_id)
