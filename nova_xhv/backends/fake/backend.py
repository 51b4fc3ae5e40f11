"""The fake backend: Nova's fake driver with disks as files and a state file.

Nova's ``FakeDriver`` reports resources and answers the calls a compute
makes; this backend keeps what a real family keeps: guests with honest
power states (``state.GuestState``) and their disks as vhdx files in
``[xhv_fake] disk_dir/<host>/<uuid>/``.  ``spawn`` fetches the image from
Glance and translates it to vhdx; the disk exchange exports those files
and stages moved disks under ``<host>/staged-<uuid>/``.
"""

import os
import shutil

from nova import exception
from nova.image import glance
from nova.virt import fake as nova_fake
from nova.virt import hardware as nova_hardware
from oslo_log import log as logging

from nova_xhv.backends import base
from nova_xhv.backends.fake import facts as fake_facts
from nova_xhv.backends.fake import state as guest_state
from nova_xhv.backends import family
import nova_xhv.conf
from nova_xhv.conf import translate as translate_conf
from nova_xhv import disk as xhv_disk
from nova_xhv import translate

CONF = nova_xhv.conf.CONF
LOG = logging.getLogger(__name__)
FAMILY = fake_facts.FAMILY
STAGED_PREFIX = 'staged-'


class FakeBackendError(exception.NovaException):
    msg_fmt = '%(reason)s'


def _fail(reason):
    raise FakeBackendError(reason=reason)


class FakeBackend(base.Backend, nova_fake.FakeDriver):
    """A hypervisor family that runs nowhere (see module doc)."""

    facts = FAMILY
    capabilities = dict(
        nova_fake.FakeDriver.capabilities,
        supports_image_type_raw=True, supports_image_type_qcow2=True,
        supports_image_type_vmdk=True, supports_image_type_vhdx=True,
        supports_image_type_vhd=True)

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi, read_only)
        self._root = CONF.xhv_fake.disk_dir
        self.guests = None

    def init_host(self, host):
        super().init_host(host)
        self.guests = guest_state.GuestState(self._folder())
        os.makedirs(self._folder(), mode=0o700, exist_ok=True)

    def _folder(self, *names):
        return os.path.join(self._root, self._host, *names)

    def _options(self):
        return translate_conf.convert_options_from_conf(CONF.xhv)

    # -- lifecycle ---------------------------------------------------------

    def list_instances(self):
        return [g['name'] for g in self.guests.all().values()]

    def list_instance_uuids(self):
        return list(self.guests.all())

    def instance_exists(self, instance):
        return self.guests.get(instance.uuid) is not None

    def get_info(self, instance, use_cache=True):
        guest = self.guests.get(instance.uuid)
        if guest is None:
            raise exception.InstanceNotFound(instance_id=instance.uuid)
        return nova_hardware.InstanceInfo(
            state=guest_state.POWER_STATE_MAP[guest['power']])

    def _require(self, instance):
        guest = self.guests.get(instance.uuid)
        if guest is None:
            raise exception.InstanceNotFound(instance_id=instance.uuid)
        return guest

    def spawn(self, context, instance, image_meta, injected_files,
              admin_password, allocations, network_info=None,
              block_device_info=None, power_on=True, accel_info=None):
        if self.guests.get(instance.uuid) is not None:
            raise exception.InstanceExists(name=instance.uuid)
        nics = self.nics(network_info)
        folder = self._folder(instance.uuid)
        os.makedirs(folder, mode=0o700)
        try:
            image = os.path.join(folder, 'image')
            glance.API().download(context, image_meta.id, dest_path=image)
            target = os.path.join(folder, 'disk-0.vhdx')
            translate.convert(image, target, to_format=FAMILY.native_format,
                              from_format=image_meta.disk_format,
                              subformat=FAMILY.native_subformat,
                              options=self._options())
            os.unlink(image)
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self._record(instance, ['disk-0.vhdx'],
                     self._hardware_from_image(image_meta), power_on, nics)

    def _record(self, instance, disks, hardware, power_on, nics):
        # Nova's instance name needs a database id; bare objects (tests)
        # go by uuid.
        name = (instance.name if instance.obj_attr_is_set('id')
                else instance.uuid)
        self.guests.put(instance.uuid, {
            'name': name, 'disks': disks, 'hardware': hardware,
            # What a switch would hold: port, MAC, where, VLAN.
            'nics': [[n.port_id, n.mac, n.switch, n.port_group,
                      n.segmentation_id] for n in nics],
            'power': guest_state.RUNNING if power_on
            else guest_state.SHUTOFF})

    @staticmethod
    def _hardware_from_image(image_meta):
        """The fake's own names for what the image properties ask for."""
        props = image_meta.properties
        chosen = {}
        for kind, default in ((family.DISK_BUS, 'paravirtual'),
                              (family.NIC_MODEL, 'paravirtual')):
            chosen[kind] = default
            for cls, wanted in FAMILY.image_properties[kind].items():
                if all(name in props and props.get(name) == value
                       for name, value in wanted.items()):
                    chosen[kind] = cls
                    break
        firmware = (props.get('hw_firmware_type')
                    if 'hw_firmware_type' in props else None)
        chosen[family.FIRMWARE] = firmware if firmware in \
            family.FIRMWARE_CLASSES else 'bios'
        return FAMILY.native_hardware(chosen)

    def plugged_ports(self, instance):
        return [(nic[0], nic[1])
                for nic in self._require(instance).get('nics', [])]

    def power_off(self, instance, timeout=0, retry_interval=0):
        self._require(instance)
        self.guests.update(instance.uuid, power=guest_state.SHUTOFF)

    def power_on(self, context, instance, network_info,
                 block_device_info=None, accel_info=None, share_info=None):
        self._require(instance)
        self.guests.update(instance.uuid, power=guest_state.RUNNING)

    def reboot(self, context, instance, network_info, reboot_type,
               block_device_info=None, bad_volumes_callback=None,
               accel_info=None, share_info=None):
        self._require(instance)
        self.guests.update(instance.uuid, power=guest_state.RUNNING)

    def destroy(self, context, instance, network_info, block_device_info=None,
                destroy_disks=True, destroy_secrets=True):
        self.guests.remove(instance.uuid)
        if destroy_disks:
            shutil.rmtree(self._folder(instance.uuid), ignore_errors=True)

    def cleanup(self, context, instance, network_info, block_device_info=None,
                destroy_disks=True, migrate_data=None, destroy_vifs=True,
                destroy_secrets=True):
        if destroy_disks:
            shutil.rmtree(self._folder(instance.uuid), ignore_errors=True)

    # -- the disk exchange -------------------------------------------------

    def export_disks(self, context, instance, block_device_info=None):
        guest = self._require(instance)
        if guest['power'] != guest_state.SHUTOFF:
            _fail('Cannot export the disks of instance %s: it is %s; stop '
                  'it first.' % (instance.uuid, guest['power']))
        bus = guest['hardware'].get(family.DISK_BUS)
        disks = []
        for n, name in enumerate(guest['disks']):
            path = self._folder(instance.uuid, name)
            info = translate.inspect_image(
                path, claimed_format=FAMILY.native_format,
                max_virtual_size=self._options().max_virtual_size)
            disks.append(xhv_disk.DiskDescriptor(
                format=FAMILY.native_format, subformat=info.subformat,
                virtual_size=info.virtual_size, path=path, bus=bus,
                boot_index=0 if n == 0 else None, handle=name))
        return disks

    def check_stageable(self, context, instance, disks):
        if not disks or disks[0].boot_index != 0:
            _fail('A fake guest needs its boot disk (boot_index 0) first.')

    def stage_disks(self, context, instance, disks):
        folder = self._folder(STAGED_PREFIX + instance.uuid)
        if os.path.exists(folder):
            _fail('Disks of instance %s are already staged.' % instance.uuid)
        os.makedirs(folder, mode=0o700)
        staged = []
        try:
            for n, disk in enumerate(disks):
                if disk.format != FAMILY.native_format or not disk.path:
                    _fail('Disk %s of instance %s is %s; the fake family '
                          'stages local %s files.' % (
                              disk.path or disk.url, instance.uuid,
                              disk.format, FAMILY.native_format))
                name = 'disk-%d.%s' % (n, FAMILY.native_format)
                target = os.path.join(folder, name)
                shutil.move(disk.path, target)
                staged.append(xhv_disk.DiskDescriptor(
                    format=disk.format, subformat=disk.subformat,
                    virtual_size=disk.virtual_size, path=target,
                    bus=disk.bus, boot_index=disk.boot_index,
                    device_name=disk.device_name, checksum=disk.checksum,
                    handle='%s/%s' % (STAGED_PREFIX + instance.uuid, name)))
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return staged

    def discard_staged_disks(self, context, instance, disks):
        for disk in disks:
            if disk.path and os.path.dirname(disk.path) == self._folder(
                    STAGED_PREFIX + instance.uuid):
                _remove(disk.path)
        shutil.rmtree(self._folder(STAGED_PREFIX + instance.uuid),
                      ignore_errors=True)

    def spawn_from_disks(self, context, instance, disks, network_info,
                         image_meta, block_device_info=None, hardware=None,
                         power_on=True):
        if self.guests.get(instance.uuid) is not None:
            raise exception.InstanceExists(name=instance.uuid)
        nics = self.nics(network_info)
        staged = self._folder(STAGED_PREFIX + instance.uuid)
        for disk in disks:
            if not disk.path or os.path.dirname(disk.path) != staged \
                    or not os.path.exists(disk.path):
                _fail('Staged disk %s of instance %s is missing.'
                      % (disk.path or disk.url, instance.uuid))
        folder = self._folder(instance.uuid)
        os.rename(staged, folder)
        chosen = dict(self._hardware_from_image(image_meta))
        chosen.update(hardware or {})
        self._record(instance, [os.path.basename(d.path) for d in disks],
                     chosen, power_on, nics)


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
