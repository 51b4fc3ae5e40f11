"""Pure parts of the Xen backend: error mapping, redaction, hardware."""

from nova import exception
from nova import objects
from oslo_utils import uuidutils
import XenAPI

from nova_xhv.backends import family
from nova_xhv.backends.xenapi import backend as xen_backend
from nova_xhv.backends.xenapi import session as xsession

objects.register_all()


def _instance():
    return objects.Instance(uuid=uuidutils.generate_uuid())


def test_failures_become_nova_exceptions_keeping_the_code():
    inst = _instance()
    mapped = xsession.translate(
        XenAPI.Failure(['HANDLE_INVALID', 'VM', 'OpaqueRef:x']), 'VM.start',
        inst)
    assert isinstance(mapped, exception.InstanceNotFound)
    mapped = xsession.translate(
        XenAPI.Failure(['VM_BAD_POWER_STATE', 'OpaqueRef:x', 'halted',
                        'running']), 'VM.start', inst)
    assert isinstance(mapped, exception.InstanceInvalidState)
    assert 'running' in str(mapped) and 'VM_BAD_POWER_STATE' in str(mapped)
    mapped = xsession.translate(
        XenAPI.Failure(['SR_FULL', '100', '10']), 'VDI.create')
    assert xsession.error_code(mapped) == 'SR_FULL'
    assert str(mapped) == 'xapi call VDI.create failed with SR_FULL: 100, 10'
    # Without an instance a HANDLE_INVALID stays a xapi error.
    mapped = xsession.translate(
        XenAPI.Failure(['HANDLE_INVALID', 'VM', 'OpaqueRef:x']), 'VM.start')
    assert xsession.error_code(mapped) == 'HANDLE_INVALID'
    assert 'OpaqueRef' not in str(mapped)


def test_session_refs_never_reach_messages():
    text = ("HTTPSConnectionPool: Max retries with url: /import_raw_vdi?"
            "session_id=OpaqueRef%3Asecret&vdi=x&format=vhd")
    assert 'secret' not in xsession._redact(text)
    assert 'session_id=***' in xsession._redact(text)


def test_image_properties_choose_xen_hardware():
    choose = xen_backend.XenAPIBackend._hardware_from_image
    meta = objects.ImageMeta.from_dict({'properties': {}})
    assert choose(meta) == {'disk_bus': 'xvd', 'nic_model': 'netfront',
                            'firmware': 'bios'}
    meta = objects.ImageMeta.from_dict({'properties': {
        'hw_disk_bus': 'ide', 'hw_vif_model': 'e1000',
        'hw_firmware_type': 'uefi'}})
    assert choose(meta) == {'disk_bus': 'hd', 'nic_model': 'e1000',
                            'firmware': 'uefi'}
    assert choose(meta, {'disk_bus': 'ahci'})['disk_bus'] == 'ahci'


def test_operators_names_find_the_family():
    for name in ('xen', 'xenapi', 'XenServer', 'xcp-ng'):
        assert family.lookup(name).name == 'xen'
    assert family.family_of_hv_type('xen') == 'xen'
    assert family.native_format('xen') == ('vhd', 'dynamic')
