"""Guests on the pool: find, build from the template, power, take apart.

An instance's VM is named by the instance uuid and carries it in
``other_config:nova_uuid`` (the proof: a VM someone else named so is not
ours); its VDIs carry the same key.  Disks staged for a move carry
``other_config:xhv_staged`` instead until a VM adopts them.
"""

from nova.compute import power_state
from nova import exception
from oslo_log import log as logging

from nova_xhv.backends.xenapi import session as xsession

LOG = logging.getLogger(__name__)
MiB = 1024 * 1024
NOVA_UUID = 'nova_uuid'
STAGED = 'xhv_staged'
DISK_BUS_KEY = 'xhv_disk_bus'
NIC_MODEL_KEY = 'xhv_nic_model'
NEUTRON_PORT = 'neutron_port_id'
HALTED, RUNNING, PAUSED, SUSPENDED = 'Halted', 'Running', 'Paused', \
    'Suspended'
POWER_STATES = {
    RUNNING: power_state.RUNNING,
    HALTED: power_state.SHUTDOWN,
    PAUSED: power_state.PAUSED,
    SUSPENDED: power_state.SUSPENDED,
}
NULL = 'OpaqueRef:NULL'


def is_instance(record):
    return (not record['is_a_template'] and not record['is_control_domain']
            and bool(record['other_config'].get(NOVA_UUID)))


def _ours(record, instance):
    return is_instance(record) and \
        record['other_config'][NOVA_UUID] == instance.uuid


def find(xapi, instance):
    """The instance's VM ref, or None."""
    for ref in xapi.call('VM.get_by_name_label', instance.uuid):
        try:
            record = xapi.call('VM.get_record', ref)
        except xsession.XapiError as exc:
            if xsession.error_code(exc) == 'HANDLE_INVALID':
                continue  # destroyed meanwhile
            raise
        if _ours(record, instance):
            return ref
    # Renamed in XenCenter: other_config still says whose it is.
    for ref, record in xapi.call('VM.get_all_records').items():
        if _ours(record, instance):
            return ref
    return None


def get(xapi, instance):
    ref = find(xapi, instance)
    if ref is None:
        raise exception.InstanceNotFound(instance_id=instance.uuid)
    return ref


def state(xapi, ref, instance):
    return xapi.call('VM.get_power_state', ref, instance=instance)


def build(xapi, instance, template, hardware):
    """A halted VM cloned from ``template`` with the flavor's size.

    ``hardware``: the family's own names {disk_bus, nic_model, firmware}.
    """
    ref = xapi.call('VM.clone', template, instance.uuid)
    try:
        memory = str(instance.flavor.memory_mb * MiB)
        vcpus = str(instance.flavor.vcpus)
        xapi.call('VM.set_is_a_template', ref, False)
        xapi.call('VM.set_name_description', ref,
                  'OpenStack instance %s' % instance.uuid)
        xapi.call('VM.set_memory_limits', ref, memory, memory, memory,
                  memory)
        xapi.call('VM.set_VCPUs_max', ref, vcpus)
        xapi.call('VM.set_VCPUs_at_startup', ref, vcpus)
        xapi.call('VM.set_HVM_boot_policy', ref, 'BIOS order')
        xapi.call('VM.set_HVM_boot_params', ref, {
            'order': 'c', 'firmware': hardware.get('firmware', 'bios')})
        platform = xapi.call('VM.get_platform', ref)
        platform.pop('nic_type', None)
        if hardware.get('nic_model') == 'e1000':
            platform['nic_type'] = 'e1000'
        xapi.call('VM.set_platform', ref, platform)
        other = xapi.call('VM.get_other_config', ref)
        other.update({NOVA_UUID: instance.uuid,
                      DISK_BUS_KEY: hardware.get('disk_bus', 'xvd'),
                      NIC_MODEL_KEY: hardware.get('nic_model', 'netfront')})
        xapi.call('VM.set_other_config', ref, other)
    except Exception:
        _destroy_quietly(xapi, ref)
        raise
    return ref


def attach_disk(xapi, vm_ref, vdi_ref, position):
    return xapi.call('VBD.create', {
        'VM': vm_ref, 'VDI': vdi_ref, 'userdevice': str(position),
        'bootable': position == 0, 'mode': 'RW', 'type': 'Disk',
        'empty': False, 'unpluggable': True, 'other_config': {},
        'qos_algorithm_type': '', 'qos_algorithm_params': {}})


def plug_nic(xapi, vm_ref, position, network_ref, mac, port_id):
    """One VIF: the port's MAC, tied to the port id (other_config)."""
    return xapi.call('VIF.create', {
        'device': str(position), 'network': network_ref, 'VM': vm_ref,
        'MAC': mac, 'MTU': xapi.call('network.get_MTU', network_ref),
        'other_config': {NEUTRON_PORT: port_id or ''},
        'qos_algorithm_type': '', 'qos_algorithm_params': {}})


def nics(xapi, vm_ref):
    """[(port id or None, MAC)] of the VM's VIFs, by device number."""
    found = []
    for ref in xapi.call('VM.get_VIFs', vm_ref):
        record = xapi.call('VIF.get_record', ref)
        found.append((int(record['device']),
                      record['other_config'].get(NEUTRON_PORT) or None,
                      record['MAC']))
    return [(port, mac) for _, port, mac in sorted(found)]


def disks(xapi, vm_ref, instance=None):
    """[(VDI ref, VDI record, userdevice)] of the VM's disks, in order.

    Volumes (VBDs XHV marked ``xhv_volume``) are not the VM's disks.
    """
    found = []
    for vbd in xapi.call('VM.get_VBDs', vm_ref, instance=instance):
        record = xapi.call('VBD.get_record', vbd)
        if record['type'] != 'Disk' or record['VDI'] == NULL or \
                record['other_config'].get('xhv_volume'):
            continue
        vdi = record['VDI']
        found.append((int(record['userdevice']), vdi,
                      xapi.call('VDI.get_record', vdi)))
    return [(vdi, rec, dev) for dev, vdi, rec in sorted(found)]


def start(xapi, ref, instance):
    if state(xapi, ref, instance) == HALTED:
        xapi.call('VM.start', ref, False, False, instance=instance)


def stop(xapi, ref, instance, clean=False):
    """Halt the VM: a clean shutdown first when asked, else hard."""
    current = state(xapi, ref, instance)
    if current == HALTED:
        return
    if clean and current == RUNNING:
        try:
            xapi.call('VM.clean_shutdown', ref, instance=instance)
            return
        except (xsession.XapiError, exception.InstanceInvalidState) as exc:
            LOG.warning('Clean shutdown of %s failed (%s); forcing it',
                        instance.uuid, exc)
    xapi.call('VM.hard_shutdown', ref, instance=instance)


def reboot(xapi, ref, instance, hard):
    current = state(xapi, ref, instance)
    if current == HALTED:
        start(xapi, ref, instance)
        return
    if not hard and current == RUNNING:
        try:
            xapi.call('VM.clean_reboot', ref, instance=instance)
            return
        except (xsession.XapiError, exception.InstanceInvalidState) as exc:
            LOG.warning('Clean reboot of %s failed (%s); forcing it',
                        instance.uuid, exc)
    xapi.call('VM.hard_reboot', ref, instance=instance)


def destroy(xapi, ref, instance, destroy_disks=True):
    """Halt and destroy the VM, its VBDs and VIFs, and its VDIs."""
    stop(xapi, ref, instance)
    vdis = [vdi for vdi, _, _ in disks(xapi, ref, instance)]
    xapi.call('VM.destroy', ref, instance=instance)
    if destroy_disks:
        for vdi in vdis:
            destroy_vdi(xapi, vdi)


def destroy_vdi(xapi, vdi):
    try:
        xapi.call('VDI.destroy', vdi)
    except xsession.XapiError as exc:
        if xsession.error_code(exc) != 'HANDLE_INVALID':
            raise


def _destroy_quietly(xapi, ref):
    """Take apart a VM being built; the first error is the one to see."""
    try:
        if xapi.call('VM.get_power_state', ref) != HALTED:
            xapi.call('VM.hard_shutdown', ref)
        xapi.call('VM.destroy', ref)
    except Exception as exc:
        LOG.warning('Could not remove the half-built VM: %s', exc)
