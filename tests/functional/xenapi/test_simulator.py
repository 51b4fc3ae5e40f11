"""The xapi simulator speaks xapi: what the SDK and raw clients see.

The unmodified ``XenAPI.Session`` over HTTPS and HTTP; raw XML-RPC for the
envelope itself; raw HTTP for the VDI handlers and malformed requests
(each a 4xx or a xapi failure, never a traceback or a hang).
"""

import http.client
import json
import os
import ssl
import subprocess
import xmlrpc.client

import pytest
import XenAPI

from tests.fixtures import disks
from tests.fixtures import xapi

pytestmark = pytest.mark.timeout(120)
MiB = disks.MiB


@pytest.fixture(scope='module')
def sim():
    server = xapi.XapiSimulator().start()
    yield server
    server.stop()


@pytest.fixture
def session(sim):
    s = sim.session()
    yield s
    s.xenapi.session.logout()


def _proxy(sim):
    return xmlrpc.client.ServerProxy(
        sim.url, context=ssl.create_default_context(cafile=sim.ca_file))


def _http(sim):
    return http.client.HTTPSConnection(
        '127.0.0.1', sim.port, timeout=30,
        context=ssl.create_default_context(cafile=sim.ca_file))


def _request(sim, method, path, body=None, headers=None):
    conn = _http(sim)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _new_vm(x, name='sim-test'):
    template = x.VM.get_by_name_label('Other install media')[0]
    vm = x.VM.clone(template, name)
    x.VM.set_is_a_template(vm, False)
    return vm


def _new_vdi(x, size=8 * MiB):
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    return x.VDI.create({'name_label': 'sim-disk', 'SR': sr,
                         'virtual_size': str(size), 'type': 'user',
                         'sharable': False, 'read_only': False,
                         'other_config': {}})


# -- the envelope and the generic calls -------------------------------------

def test_raw_envelope_refs_and_int64_as_strings(sim):
    proxy = _proxy(sim)
    login = proxy.session.login_with_password(sim.username, sim.password,
                                              '2.21', 'raw')
    assert login['Status'] == 'Success'
    handle = login['Value']
    assert handle.startswith('OpaqueRef:')
    vms = proxy.VM.get_all_records(handle)['Value']
    template = [r for r, rec in vms.items()
                if rec['name_label'] == 'Other install media'][0]
    size = proxy.VM.get_memory_static_max(handle, template)
    assert size == {'Status': 'Success', 'Value': str(256 << 20)}
    assert vms[template]['VCPUs_max'] == '1'
    # dom0 is there, as on every host, and is no template.
    assert any(rec['is_control_domain'] for rec in vms.values())
    failure = proxy.VM.get_record(handle, 'OpaqueRef:nope')
    assert failure == {'Status': 'Failure', 'ErrorDescription': [
        'HANDLE_INVALID', 'VM', 'OpaqueRef:nope']}
    assert proxy.VM.get_all('OpaqueRef:forged')['ErrorDescription'] == [
        'SESSION_INVALID', 'OpaqueRef:forged']
    assert proxy.session.logout(handle)['Status'] == 'Success'
    assert proxy.VM.get_all(handle)['ErrorDescription'][0] == \
        'SESSION_INVALID'


def test_sdk_login_failures_and_unknown_calls(sim, session):
    with pytest.raises(XenAPI.Failure) as caught:
        XenAPI.Session(sim.url, transport=xapi._Transport(
            context=ssl.create_default_context(cafile=sim.ca_file))
        ).xenapi.login_with_password('root', 'wrong', '2.21', 't')
    assert caught.value.details[0] == 'SESSION_AUTHENTICATION_FAILED'
    x = session.xenapi
    for call, args, code in (
            (x.VM.frobnicate, (), 'MESSAGE_METHOD_UNKNOWN'),
            (x.Nothing.get_all, (), 'MESSAGE_METHOD_UNKNOWN'),
            (x.VM.get_all, ('extra',), 'MESSAGE_PARAMETER_COUNT_MISMATCH'),
            (x.VM.get_by_uuid, ('no-such-uuid',), 'UUID_INVALID'),
            (x.VM.set_power_state, ('x', 'Running'),
             'MESSAGE_METHOD_UNKNOWN'),  # read-only field
            (x.session.get_all_records, (), 'MESSAGE_METHOD_UNKNOWN')):
        with pytest.raises(XenAPI.Failure) as caught:
            call(*args)
        assert caught.value.details[0] == code, call


def test_plain_http_works_too(tmp_path):
    server = xapi.XapiSimulator(tls=False).start()
    try:
        assert server.url.startswith('http://')
        session = server.session()
        assert session.xenapi.pool.get_all()
    finally:
        server.stop()


def test_fields_maps_and_name_lookups(session):
    x = session.xenapi
    vm = _new_vm(x, 'lookup-me')
    try:
        assert x.VM.get_by_name_label('lookup-me') == [vm]
        assert x.VM.get_by_uuid(x.VM.get_uuid(vm)) == vm
        x.VM.add_to_other_config(vm, 'k', 'v')
        with pytest.raises(XenAPI.Failure) as caught:
            x.VM.add_to_other_config(vm, 'k', 'again')
        assert caught.value.details[0] == 'MAP_DUPLICATE_KEY'
        x.VM.remove_from_other_config(vm, 'k')
        assert 'k' not in x.VM.get_other_config(vm)
        with pytest.raises(XenAPI.Failure) as caught:
            x.VM.set_VCPUs_max(vm, 'many')
        assert caught.value.details == ['FIELD_TYPE_ERROR', 'VCPUs_max']
        x.VM.set_memory_limits(vm, *[str(512 << 20)] * 4)
        assert x.VM.get_record(vm)['memory_dynamic_max'] == str(512 << 20)
    finally:
        x.VM.destroy(vm)


# -- power-state rules --------------------------------------------------------

def test_power_state_rules(session):
    x = session.xenapi
    vm = _new_vm(x)
    vdi = _new_vdi(x)
    x.VBD.create({'VM': vm, 'VDI': vdi, 'userdevice': '0', 'bootable': True,
                  'mode': 'RW', 'type': 'Disk', 'other_config': {}})
    template = x.VM.get_by_name_label('Other install media')[0]
    with pytest.raises(XenAPI.Failure) as caught:
        x.VM.start(template, False, False)
    assert caught.value.details[0] == 'VM_IS_TEMPLATE'
    with pytest.raises(XenAPI.Failure) as caught:
        x.VM.clean_shutdown(vm)
    assert caught.value.details == ['VM_BAD_POWER_STATE', vm, 'running',
                                    'halted']
    x.VM.start(vm, False, False)
    assert x.VM.get_power_state(vm) == 'Running'
    for call in (lambda: x.VM.start(vm, False, False),
                 lambda: x.VM.destroy(vm),
                 lambda: x.VM.set_memory_limits(vm, *['1'] * 4)):
        with pytest.raises(XenAPI.Failure) as caught:
            call()
        assert caught.value.details[0] == 'VM_BAD_POWER_STATE'
    with pytest.raises(XenAPI.Failure) as caught:
        x.VDI.destroy(vdi)
    assert caught.value.details[0] == 'VDI_IN_USE'
    x.VM.clean_reboot(vm)
    x.VM.hard_shutdown(vm)
    assert x.VM.get_power_state(vm) == 'Halted'
    x.VM.destroy(vm)
    x.VDI.destroy(vdi)


def test_vifs_check_macs_and_devices(session, sim):
    x = session.xenapi
    vm = _new_vm(x)
    net = x.network.get_by_name_label(xapi.NETWORK)[0]
    try:
        vif = x.VIF.create({'device': '0', 'network': net, 'VM': vm,
                            'MAC': 'FA:16:3E:AA:BB:CC', 'MTU': '1500',
                            'other_config': {}})
        assert x.VIF.get_MAC(vif) == 'fa:16:3e:aa:bb:cc'
        assert x.network.get_VIFs(net) == [vif]
        for mac, device, code in (('fa:16:3e:aa:bb', '1', 'MAC_INVALID'),
                                  ('fa:16:3e:aa:bb:cd', '0',
                                   'DEVICE_ALREADY_EXISTS')):
            with pytest.raises(XenAPI.Failure) as caught:
                x.VIF.create({'device': device, 'network': net, 'VM': vm,
                              'MAC': mac, 'other_config': {}})
            assert caught.value.details[0] == code
    finally:
        x.VM.destroy(vm)
    assert x.network.get_VIFs(net) == []


# -- VDI data ---------------------------------------------------------------

def test_import_and_export_raw_and_vhd(session, sim, tmp_path):
    x = session.xenapi
    vdi = _new_vdi(x)
    uuid = x.VDI.get_uuid(vdi)
    raw = str(tmp_path / 'data.raw')
    disks.make_raw_disk(raw, 8 * MiB)
    with open(raw, 'rb') as f:
        data = f.read()
    query = '?session_id=%s&vdi=%s&format=raw' % (session.handle, vdi)
    assert _request(sim, 'PUT', '/import_raw_vdi' + query, data)[0] == 200
    assert disks.sha256_file(sim.vdi_file(uuid)) == \
        disks.sha256_file(raw)
    status, body = _request(sim, 'GET', '/export_raw_vdi' + query)
    assert (status, body) == (200, data)
    # vhd, by uuid: real qemu-img on both sides.
    vhd = str(tmp_path / 'data.vhd')
    status, body = _request(sim, 'GET', '/export_raw_vdi?session_id=%s&vdi='
                            '%s&format=vhd' % (session.handle, uuid))
    assert status == 200
    with open(vhd, 'wb') as f:
        f.write(body)
    info = json.loads(subprocess.run(
        ('qemu-img', 'info', '--output=json', vhd), check=True,
        capture_output=True, text=True).stdout)
    assert (info['format'], info['virtual-size']) == ('vpc', 8 * MiB)
    other = _new_vdi(x)
    status, _ = _request(sim, 'PUT', '/import_raw_vdi?session_id=%s&vdi=%s'
                         '&format=vhd' % (session.handle, other), body)
    assert status == 200
    assert disks.sha256_file(sim.vdi_file(x.VDI.get_uuid(other))) == \
        disks.sha256_file(raw)
    x.VDI.destroy(vdi)
    x.VDI.destroy(other)
    assert not os.path.exists(sim.vdi_file(uuid))


def test_malformed_requests_get_clean_answers(session, sim):
    x = session.xenapi
    vdi = _new_vdi(x)
    uuid = x.VDI.get_uuid(vdi)
    before = disks.sha256_file(sim.vdi_file(uuid))
    good = 'session_id=%s&vdi=%s' % (session.handle, vdi)
    for method, path, body, headers, status in (
            ('POST', '/', b'<not xml', None, 400),
            ('POST', '/', b'<?xml version="1.0"?><methodResponse/>', None,
             400),
            ('POST', '/', b'x', {'Content-Length': '99999999999'}, 413),
            ('POST', '/', b'x', {'Content-Length': 'ten'}, 400),
            ('PUT', '/import_raw_vdi?vdi=%s' % vdi, b'x', None, 401),
            ('PUT', '/import_raw_vdi?session_id=OpaqueRef:x&vdi=%s' % vdi,
             b'x', None, 401),
            ('PUT', '/import_raw_vdi?session_id=%s&vdi=nope'
             % session.handle, b'x', None, 404),
            ('PUT', '/import_raw_vdi?%s&format=qcow2' % good, b'x', None,
             400),
            ('PUT', '/import_raw_vdi?%s&format=vhd' % good,
             b'\0' * 4096, None, 400),
            # Bigger than the VDI: refused before a byte is read.
            ('PUT', '/import_raw_vdi?%s' % good, b'x',
             {'Content-Length': str(100 * MiB)}, 413),
            ('PUT', '/import_raw_vdi?%s' % good, b'zz\r\n',
             {'Transfer-Encoding': 'chunked'}, 400),
            ('GET', '/export_raw_vdi?%s&format=vhd%%' % good, None, None,
             400),
            ('GET', '/nothing-here', None, None, 404),
            ('DELETE', '/', None, None, 405)):
        got, _ = _request(sim, method, path, body, headers)
        assert got == status, (method, path)
    # A call with the wrong types is a xapi failure, not a crash.
    answer = _proxy(sim).VM.get_record(session.handle, 12)
    assert answer['ErrorDescription'][0] == 'HANDLE_INVALID'
    answer = _proxy(sim).VDI.create(session.handle, 'not a record')
    assert answer['ErrorDescription'][0] == 'FIELD_TYPE_ERROR'
    assert disks.sha256_file(sim.vdi_file(uuid)) == before
    assert 'Traceback' not in sim.log_tail()
    x.VDI.destroy(vdi)


def test_any_call_with_any_arguments_gets_an_envelope():
    # Every class, the calls XHV makes and more, every arity up to 4, with
    # values of every wire type (and real refs): a xapi answer each time,
    # never INTERNAL_ERROR, never a traceback.  Its own simulator (plain
    # HTTP, for speed): this destroys what it finds.
    import itertools
    import random

    from tests.simulators.xenapi import model

    server = xapi.XapiSimulator(tls=False).start()
    try:
        proxy = xmlrpc.client.ServerProxy(server.url)
        handle = proxy.session.login_with_password(
            server.username, server.password, '2.21', 'fuzz')['Value']
        refs = [r for cls in ('VM', 'VDI', 'SR', 'network', 'host')
                for r in getattr(proxy, cls).get_all(handle)['Value'][:2]]
        values = [0, -1, True, '', 'x', str(2 ** 70), {}, {'a': 'b'},
                  {'a': 1}, [], ['x'], 1.5, 'OpaqueRef:NULL'] + refs
        ops = ('get_record', 'get_by_uuid', 'get_by_name_label', 'create',
               'destroy', 'clone', 'start', 'hard_shutdown', 'clean_reboot',
               'set_memory_limits', 'set_VCPUs_max', 'set_other_config',
               'add_to_other_config', 'remove_from_other_config',
               'snapshot', 'get_VBDs', 'set_name_label', 'get_virtual_size',
               'introduce', 'forget', 'plug', 'unplug')
        rng = random.Random(22)
        seen = set()
        for cls, op, arity in itertools.product(
                [c for c in model.CLASSES if c != 'session'], ops, range(5)):
            params = [handle] + [rng.choice(values) for _ in range(arity)]
            answer = getattr(getattr(proxy, cls), op)(*params)
            assert answer['Status'] in ('Success', 'Failure'), answer
            if answer['Status'] == 'Failure':
                seen.add(answer['ErrorDescription'][0])
        assert 'INTERNAL_ERROR' not in seen
        assert {'HANDLE_INVALID', 'MESSAGE_PARAMETER_COUNT_MISMATCH',
                'MESSAGE_METHOD_UNKNOWN'} <= seen
        assert 'Traceback' not in server.log_tail(100000)
    finally:
        server.stop()
