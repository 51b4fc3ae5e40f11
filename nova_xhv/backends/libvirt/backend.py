"""The KVM backend: Nova's stock libvirt driver, plus the disk exchange.

Every ComputeDriver call goes unchanged to Nova's own ``LibvirtDriver``
(``self.stock_driver``), including ``register_event_listener``, so a KVM
compute switched to XHV keeps every stock behaviour, its node identity and
its guests.  This module adds only:

export_disks
    Describes the local disk files of a powered-off instance (``disk``,
    ``disk.local``, ``disk.ephN``, ``disk.swap``; never volumes or the
    regenerated ``disk.config``).  A disk without a backing file is
    described in place.  A qcow2 overlay on the shared image cache
    (``_base``) is flattened into a private copy under
    ``<instance dir>/xhv-export/`` (mode 0600 in a 0700 folder), so the
    descriptor is self-contained and never names or exposes ``_base``,
    which other tenants' servers read.  ``release_exported_disks`` removes
    that copy.

stage_disks / spawn_from_disks
    Puts self-contained qcow2 files where the stock driver keeps an
    instance's disks (``<instances_path>/<uuid>/disk`` ...; mode 0644 in a
    0755 folder, like the stock driver's own files: libvirt's dynamic
    ownership hands them to its qemu user at start) with a matching
    ``disk.info``, then runs the stock ``spawn``.  For such an instance the
    stock driver's disk creation step (``_create_image``, which would
    download the image from Glance into ``_base``) never makes the root
    disk: it checks that the staged one is there, and only creates the
    ephemeral and swap disks the server's block device mappings ask for
    and the import did not bring (a server born on vSphere has none), as a
    new boot would: blank.  Everything else (guest XML, networks, config
    drive, console log, waiting for boot) is the stock code.  So an import
    downloads nothing from Glance and works after the original image was
    deleted.

    Non-boot disks that arrive without a KVM name (a move from another
    family: vSphere keeps no ``disk.eph0``) take the name of the mapped
    ephemeral or swap disk of exactly their size, in the mappings' order;
    a disk that fits none is refused before any data is pulled
    (``check_stageable``).

Reaching into the stock driver's internals happens only here;
tests/unit/driver/test_libvirt_internals.py fails if those change.
"""

import errno
import os
import re
import shutil
import threading

from lxml import etree
from nova import block_device
from nova.compute import power_state
from nova import exception
from nova import objects
from nova.virt import driver
from nova.virt.libvirt import driver as libvirt_driver
from nova.virt.libvirt import utils as libvirt_utils
from oslo_log import log as logging
from oslo_serialization import jsonutils
from oslo_utils.imageutils import format_inspector

from nova_xhv.backends import base
from nova_xhv.backends.libvirt import facts as kvm_facts
import nova_xhv.conf
from nova_xhv.conf import translate as translate_conf
from nova_xhv import disk as xhv_disk
from nova_xhv import forwarding
from nova_xhv.translate import formats
from nova_xhv.translate import qemu_img

CONF = nova_xhv.conf.CONF
LOG = logging.getLogger(__name__)

EXPORT_DIR = 'xhv-export'
ROOT_DISK = 'disk'
# Local disks the stock driver created for an import (see _create_image),
# which discard_staged_disks removes with the staged ones.
_CREATED_RECORD = '.xhv-created-disks'
GiB = 1024 ** 3
MiB = 1024 ** 2
# Instance-local disk files the stock driver creates besides the root.
_LOCAL_DISK_NAME = re.compile(r'^disk(\.local|\.swap|\.eph[0-9]+)?$')
# [libvirt] images_type values that keep disks as files in the instance
# folder; lvm, rbd and ploop keep them elsewhere.
_FILE_IMAGE_TYPES = ('default', 'qcow2', 'raw', 'flat')
_POWERED_OFF = (power_state.SHUTDOWN, power_state.CRASHED,
                power_state.NOSTATE)
# Hardware choices (nova_xhv.migration) expressed as the image properties
# the stock driver reads.
_HARDWARE_PROPERTIES = {
    'disk_bus': 'hw_disk_bus',
    'nic_model': 'hw_vif_model',
    'firmware': 'hw_firmware_type',
}


# From this libvirt on, <os firmware='efi'><firmware><feature
# name='secure-boot'/> alone carries the secure boot choice (Nova's own
# MIN_LIBVIRT_STATELESS_FIRMWARE note says <loader secure> is only needed
# before it).
_MIN_LIBVIRT_FIRMWARE_FEATURES = (8, 6, 0)


class DiskExchangeError(exception.NovaException):
    msg_fmt = '%(reason)s'


def _fail(reason):
    raise DiskExchangeError(reason=reason)


class StockLibvirtDriver(libvirt_driver.LibvirtDriver):
    """Nova's LibvirtDriver with one switch for imported instances.

    For an instance whose disks were staged by ``LibvirtBackend.stage_disks``
    disk creation never makes the root (it checks the staged one is there)
    and only creates the ephemeral and swap disks the import lacks.
    """

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi, read_only)
        self._staged_lock = threading.Lock()
        self._staged_instances = set()

    def mark_staged(self, instance_uuid, staged):
        with self._staged_lock:
            if staged:
                self._staged_instances.add(instance_uuid)
            else:
                self._staged_instances.discard(instance_uuid)

    def _configure_guest_by_virt_type(self, guest, *args, **kwargs):
        super()._configure_guest_by_virt_type(guest, *args, **kwargs)
        # Nova 34 writes both <firmware><feature name='secure-boot'> and
        # <loader secure=...> for a UEFI guest; libvirt 9.0 (Debian 12)
        # refuses the latter with firmware autoselection ("loader attribute
        # 'secure' cannot be specified when firmware autoselection is
        # enabled"), so no UEFI guest could start.  The feature element
        # says the same; drop the loader attribute when libvirt reads it.
        if (guest.os_firmware == 'efi' and guest.os_loader is None
                and guest.os_loader_secure is not None
                and guest.os_firmware_secure is not None
                and self._host.has_min_version(
                    _MIN_LIBVIRT_FIRMWARE_FEATURES)):
            guest.os_loader_secure = None

    def _create_image(self, context, instance, disk_mapping, *args,
                      **kwargs):
        if not self._is_staged(instance):
            return super()._create_image(context, instance, disk_mapping,
                                         *args, **kwargs)
        if instance.kernel_id or instance.ramdisk_id:
            _fail('XHV cannot import instance %s onto KVM: it boots a '
                  'separate kernel/ramdisk image, which would be fetched '
                  'from Glance.' % instance.uuid)
        instance_dir = libvirt_utils.get_instance_path(instance)
        if not os.path.exists(os.path.join(instance_dir, ROOT_DISK)):
            _fail('XHV import of instance %s: its root disk was not '
                  'imported into %s.' % (instance.uuid, instance_dir))
        missing = sorted(
            name for name in disk_mapping
            if name != ROOT_DISK and _LOCAL_DISK_NAME.match(name)
            and not os.path.exists(os.path.join(instance_dir, name)))
        LOG.info('Using imported disks in %s', instance_dir,
                 instance=instance)
        if missing:
            # Recorded first: a failure halfway still leaves discard the
            # list of what may exist.
            _record_created(instance_dir, missing)
            LOG.info('Creating blank local disks %s that the import did '
                     'not bring (the source family keeps none)',
                     ', '.join(missing), instance=instance)
            # The stock step, minus the root (see
            # _create_and_inject_local_root); it leaves existing files as
            # they are and creates the missing ones as a boot would.
            super()._create_image(context, instance, disk_mapping, *args,
                                  **kwargs)
        # Neither the folder nor the imported disks were made here: a
        # failed start must leave them to discard_staged_disks.
        return False, False

    def _create_and_inject_local_root(self, context, instance, *args,
                                      **kwargs):
        if self._is_staged(instance):
            return False  # imported, never fetched from Glance
        return super()._create_and_inject_local_root(context, instance,
                                                     *args, **kwargs)

    def _is_staged(self, instance):
        with self._staged_lock:
            return instance.uuid in self._staged_instances


_StockDriverForwarder = forwarding.delegating_driver(
    'stock_driver', 'StockDriverForwarder')


class LibvirtBackend(_StockDriverForwarder, base.Backend):
    """KVM/QEMU through Nova's stock libvirt driver."""

    facts = kvm_facts.FAMILY

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi)
        self.stock_driver = StockLibvirtDriver(virtapi, read_only)

    # -- network (the stock driver plugs through os-vif) -------------------

    def spawn(self, context, instance, image_meta, injected_files,
              admin_password, allocations, network_info=None,
              block_device_info=None, power_on=True, accel_info=None):
        self.nics(network_info)  # refuse before the stock driver starts
        return self.stock_driver.spawn(
            context, instance, image_meta, injected_files, admin_password,
            allocations, network_info=network_info,
            block_device_info=block_device_info, power_on=power_on,
            accel_info=accel_info)

    def plugged_ports(self, instance):
        guest = self.stock_driver._host.get_guest(instance)
        root = etree.fromstring(guest.get_xml_desc())
        found = []
        for iface in root.findall('./devices/interface'):
            mac = iface.find('mac')
            param = iface.find('virtualport/parameters')
            found.append((param.get('interfaceid') if param is not None
                          else None,
                          (mac.get('address') or '').lower()
                          if mac is not None else ''))
        return found

    # -- export ------------------------------------------------------------

    def export_disks(self, context, instance, block_device_info=None):
        self._require_file_disks()
        state = self.stock_driver.get_info(instance).state
        if state not in _POWERED_OFF:
            _fail('Cannot export the disks of instance %s: it is not '
                  'powered off (power state %s); stop it first.'
                  % (instance.uuid, power_state.STATE_MAP.get(state, state)))
        instance_dir = libvirt_utils.get_instance_path(instance)
        guest = self.stock_driver._host.get_guest(instance)
        disks = []
        for device in guest.get_all_disks():
            path = device.source_path
            if (device.source_type != 'file' or device.source_device != 'disk'
                    or not path or os.path.dirname(path) != instance_dir
                    or not _LOCAL_DISK_NAME.match(os.path.basename(path))):
                continue  # volumes, config drive, CD-ROMs
            disks.append(self._export_one(instance, path, device))
        if not disks:
            if any(bdm.get('boot_index') == 0 for bdm in
                   driver.block_device_info_get_mapping(block_device_info)):
                return []  # booted from a volume: volumes follow by attach
            _fail('Instance %s has no local disk files to export (booted '
                  'from volume?).' % instance.uuid)
        disks.sort(key=lambda d: (d.boot_index is None, d.handle))
        return disks

    def _export_one(self, instance, path, device):
        name = os.path.basename(path)
        fmt = device.driver_format or 'raw'
        info = _qemu_img_info(path, fmt)
        export_path = path
        if info.get('backing-filename') or info.get('full-backing-filename'):
            # An overlay on _base: flatten into a private copy so that the
            # descriptor is self-contained and _base is never handed out.
            export_dir = os.path.join(os.path.dirname(path), EXPORT_DIR)
            os.makedirs(export_dir, mode=0o700, exist_ok=True)
            os.chmod(export_dir, 0o700)
            export_path = os.path.join(export_dir, name + '.' + fmt)
            _remove(export_path)
            _flatten(path, export_path, fmt, int(info['virtual-size']))
            os.chmod(export_path, 0o600)
            LOG.info('Flattened %s into %s for export', path, export_path,
                     instance=instance)
        return xhv_disk.DiskDescriptor(
            format=fmt, virtual_size=int(info['virtual-size']),
            path=export_path, bus=device.target_bus,
            boot_index=0 if name == ROOT_DISK else None,
            device_name=device.target_dev, handle=name)

    def release_exported_disks(self, context, instance, disks):
        export_dir = os.path.join(
            libvirt_utils.get_instance_path(instance), EXPORT_DIR)
        for disk in disks:
            if disk.path and os.path.dirname(disk.path) == export_dir:
                _remove(disk.path)
        try:
            os.rmdir(export_dir)
        except OSError:
            pass  # absent, or still holds another export

    # -- import ------------------------------------------------------------

    def stage_disks(self, context, instance, disks):
        self._require_file_disks()
        instance_dir = libvirt_utils.get_instance_path(instance)
        plan = self._plan(context, instance, disks)
        for disk, name in plan:
            self._check_importable(instance, disk)
            if os.path.exists(os.path.join(instance_dir, name)):
                _fail('Cannot import disk %s of instance %s: %s already '
                      'exists; remove it or import under a new instance.'
                      % (name, instance.uuid, instance_dir))
        os.makedirs(instance_dir, mode=0o755, exist_ok=True)
        staged = []
        try:
            for disk, name in plan:
                target = os.path.join(instance_dir, name)
                _move_or_copy(disk.path, target)
                os.chmod(target, 0o644)
                size = disk.virtual_size
                if name == ROOT_DISK:
                    size = self._grow_to_flavor(instance, target, size)
                staged.append(xhv_disk.DiskDescriptor(
                    format='qcow2', virtual_size=size, path=target,
                    bus=disk.bus, boot_index=disk.boot_index,
                    device_name=disk.device_name, checksum=disk.checksum,
                    handle=name))
            _write_disk_info(instance_dir, [d.path for d in staged])
        except Exception:
            self.discard_staged_disks(context, instance, staged)
            raise
        return staged

    def discard_staged_disks(self, context, instance, disks):
        instance_dir = libvirt_utils.get_instance_path(instance)
        for disk in disks:
            if disk.path and os.path.dirname(disk.path) == instance_dir:
                _remove(disk.path)
        for name in _read_created(instance_dir):
            _remove(os.path.join(instance_dir, name))
        _remove(os.path.join(instance_dir, _CREATED_RECORD))
        _remove(os.path.join(instance_dir, 'disk.info'))
        try:
            os.rmdir(instance_dir)
        except OSError:
            pass  # absent, or holds files we did not make

    def spawn_from_disks(self, context, instance, disks, network_info,
                         image_meta, block_device_info=None, hardware=None,
                         power_on=True):
        self.nics(network_info)
        for disk in disks:
            if not disk.path or not os.path.exists(disk.path):
                _fail('Staged disk %s of instance %s is missing.'
                      % (disk.path or disk.url, instance.uuid))
        image_meta = _with_hardware(image_meta, hardware)
        # No disks: a volume-backed server, which the stock spawn boots
        # from its (re-attached) volume like any boot from volume.
        self.stock_driver.mark_staged(instance.uuid, bool(disks))
        try:
            self.stock_driver.spawn(
                context, instance, image_meta, injected_files=[],
                admin_password=None, allocations={},
                network_info=network_info,
                block_device_info=block_device_info, power_on=power_on)
        finally:
            self.stock_driver.mark_staged(instance.uuid, False)
        # The server runs: its disks are its own now, as after a boot.
        _remove(os.path.join(libvirt_utils.get_instance_path(instance),
                             _CREATED_RECORD))

    # -- helpers -----------------------------------------------------------

    @staticmethod
    def _require_file_disks():
        if CONF.libvirt.images_type not in _FILE_IMAGE_TYPES:
            _fail('XHV moves KVM disks as files in the instances path; '
                  '[libvirt] images_type = %s keeps them elsewhere. Use one '
                  'of: %s.' % (CONF.libvirt.images_type,
                               ', '.join(_FILE_IMAGE_TYPES)))

    def check_stageable(self, context, instance, disks):
        self._require_file_disks()
        self._plan(context, instance, disks)

    def _plan(self, context, instance, disks):
        """[(disk, file name)]: where each disk goes in the instance folder.

        The boot disk is ``disk``; a disk that carries its KVM name
        (``handle``) keeps it; the others take, in order, the name of the
        first ephemeral or swap disk of the server's mappings that has
        exactly their size and no disk yet.
        """
        names = [ROOT_DISK if disk.boot_index == 0
                 else disk.handle if (disk.handle and disk.handle != ROOT_DISK
                                      and _LOCAL_DISK_NAME.match(disk.handle))
                 else None
                 for disk in disks]
        if None in names:
            free = [slot for slot in expected_local_disks(context, instance)
                    if slot[0] not in names]
            for n, disk in enumerate(disks):
                if names[n] is not None:
                    continue
                fits = [slot for slot in free
                        if slot[1] == disk.virtual_size]
                if not fits:
                    _fail('Cannot place non-boot disk %s of instance %s '
                          '(%d bytes) on KVM: it matches none of the '
                          'ephemeral and swap disks the server has left '
                          'to fill (%s); KVM keeps only those as local '
                          'disks.' % (
                              disk.path or disk.url, instance.uuid,
                              disk.virtual_size,
                              ', '.join('%s %d bytes' % slot for slot in free)
                              or 'none'))
                names[n] = fits[0][0]
                free.remove(fits[0])
        if ROOT_DISK not in names or len(set(names)) != len(names):
            _fail('Disks to import onto KVM for instance %s need exactly one '
                  'boot disk (boot_index 0) and distinct names; got %s.'
                  % (instance.uuid, ', '.join(names)))
        return list(zip(disks, names))

    @staticmethod
    def _check_importable(instance, disk):
        where = disk.path or disk.url
        if not disk.path:
            _fail('Disk %s of instance %s must be a local file to import '
                  'onto KVM.' % (where, instance.uuid))
        if disk.format != 'qcow2':
            _fail('Disk %s of instance %s is %s; KVM imports take qcow2 '
                  '(translate it first).' % (where, instance.uuid,
                                             disk.format))
        inspector = format_inspector.detect_file_format(disk.path)
        if inspector.NAME != 'qcow2':
            _fail('Disk %s of instance %s claims qcow2 but its content is '
                  '%s.' % (where, instance.uuid, inspector))
        try:
            inspector.safety_check()
        except format_inspector.SafetyCheckFailed as error:
            # Refuses backing files and external data files: an imported
            # disk must carry all of its data itself.
            _fail('Disk %s of instance %s is not a self-contained qcow2: '
                  '%s.' % (where, instance.uuid, error))

    @staticmethod
    def _grow_to_flavor(instance, path, size):
        wanted = instance.flavor.root_gb * 1024 ** 3
        if wanted > size:
            options = _convert_options()
            qemu_img.resize(path, 'qcow2', wanted, options.info_limits(),
                            options.timeout_base)
            return wanted
        return size


def expected_local_disks(context, instance):
    """[(file name, bytes)]: the server's ephemeral and swap disks on KVM.

    In the order and with the names Nova's libvirt driver gives them.
    Nova's API turns the flavor's ephemeral and swap into block device
    mappings at boot (disk.eph0, disk.swap); without them the flavor's
    sizes are what the stock driver uses (disk.local, disk.swap).
    """
    bdms = objects.BlockDeviceMappingList.get_by_instance_uuid(
        context, instance.uuid)
    ephemerals = [b for b in bdms if block_device.new_format_is_ephemeral(b)]
    swaps = [b for b in bdms if block_device.new_format_is_swap(b)]
    flavor = instance.flavor
    expected = [('disk.eph%d' % n, (b.volume_size or 0) * GiB)
                for n, b in enumerate(ephemerals)]
    if not ephemerals and flavor.ephemeral_gb:
        expected.append(('disk.local', flavor.ephemeral_gb * GiB))
    swap_mb = swaps[0].volume_size if swaps else None
    swap_mb = swap_mb or flavor.swap
    if swap_mb:
        expected.append(('disk.swap', swap_mb * MiB))
    return expected


def _record_created(instance_dir, names):
    path = os.path.join(instance_dir, _CREATED_RECORD)
    with open(path, 'w') as f:
        f.write(jsonutils.dumps(sorted(set(_read_created(instance_dir))
                                       | set(names))))


def _read_created(instance_dir):
    try:
        with open(os.path.join(instance_dir, _CREATED_RECORD)) as f:
            names = jsonutils.loads(f.read())
    except (OSError, ValueError):
        return []
    # Only ever local disk names inside the folder.
    return [n for n in names if isinstance(n, str)
            and _LOCAL_DISK_NAME.match(n) and n != ROOT_DISK]


def _with_hardware(image_meta, hardware):
    if not hardware:
        return image_meta
    unknown = set(hardware) - set(_HARDWARE_PROPERTIES)
    if unknown:
        _fail('Unknown hardware choices for KVM: %s.'
              % ', '.join(sorted(unknown)))
    image_meta = image_meta.obj_clone()
    for choice, value in hardware.items():
        setattr(image_meta.properties, _HARDWARE_PROPERTIES[choice], value)
    return image_meta


def _convert_options():
    # The operator's [xhv] limits and timeouts for every qemu-img run here.
    return translate_conf.convert_options_from_conf(CONF.xhv)


def _qemu_img_info(path, fmt):
    # -f always: never let qemu-img probe a guest-written file's format.
    options = _convert_options()
    return qemu_img.info(path, formats.qemu_driver(fmt),
                         options.info_limits(), options.timeout_base,
                         force_share=True)


def _flatten(path, target, fmt, virtual_size):
    """A self-contained copy of an overlay, in the same format."""
    options = _convert_options()
    driver = formats.qemu_driver(fmt)
    qemu_img.run_convert(
        qemu_img.convert_argv(path, driver, target, driver, progress=True),
        options.long_limits(virtual_size),
        options.timeout_for(virtual_size))


def _write_disk_info(instance_dir, paths):
    """Record the staged files' format as the stock image backends do."""
    info_path = os.path.join(instance_dir, 'disk.info')
    fd = os.open(info_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, 'w') as info:
        info.write('%s\n' % jsonutils.dumps({p: 'qcow2' for p in paths}))


def _move_or_copy(source, target):
    try:
        os.rename(source, target)
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        shutil.copyfile(source, target)


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
