"""A move asks the destination whether it attaches the volumes, first.

Real exchange endpoint and client over loopback, a real DestinationStager,
the Xen attacher's check on real folders, the Hyper-V share map; only the
backend behind the stager is a stand-in (it answers from a dict).
"""

import os

import pytest

from nova_xhv.backends import base
from nova_xhv.backends import family
from nova_xhv.backends.hyperv import volumes as hv_volumes
from nova_xhv.backends.xenapi import volumes as xen_volumes
from nova_xhv.migration import client as exchange_client
from nova_xhv.migration import destination_side
from nova_xhv.migration import exchange
from nova_xhv.migration import source_side
from nova_xhv.migration import volumes
from nova_xhv import translate

SECRET = 'unit-test-secret'


def nfs(serial, export='nas:/vol', fmt='raw', **data):
    info = {'driver_volume_type': 'nfs', 'serial': serial,
            'data': dict({'export': export, 'name': 'volume-' + serial,
                          'format': fmt, 'options': '-o vers=4'}, **data)}
    return info


def bdi(*infos):
    return {'block_device_mapping': [
        {'connection_info': info, 'mount_device': '/dev/sd%s' % chr(98 + n)}
        for n, info in enumerate(infos)]}


class ExportBackend(object):
    """Attaches volumes of the exports it was given, like Hyper-V/Xen."""

    family = 'xen'

    def __init__(self, exports):
        self.exports = exports
        self.asked = []

    def check_volume_attachable(self, info):
        self.asked.append(info)
        export = info['data'].get('export')
        if export not in self.exports:
            raise xen_volumes.XenVolumeError(
                reason='no mount of the NFS export %s: add it to '
                       '[xhv_xenapi] volume_exports' % export)


@pytest.fixture
def destination(tmp_path):
    backend = ExportBackend({'nas:/vol'})
    stager = destination_side.DestinationStager(
        backend, str(tmp_path / 'state'), translate.ConvertOptions(), {})
    server = exchange.ExchangeServer(
        SECRET, bind_host='127.0.0.1', port=0, advertise_host='127.0.0.1',
        use_tls=False, control_handler=stager)
    server.start()
    dest = source_side.Destination(host='xen1', node='pool', family='xen',
                                   url=server.url, migration=None)
    yield backend, dest
    server.stop()


def test_volumes_the_destination_attaches_pass(destination):
    backend, dest = destination
    client = exchange_client.ExchangeClient(SECRET)
    volumes.check_destination_attaches(client, dest,
                                       bdi(nfs('a'), nfs('b')))
    assert [i['data']['name'] for i in backend.asked] == ['volume-a',
                                                          'volume-b']
    # Where the volume is and how it is stored; nothing else crosses.
    assert backend.asked[0] == {'driver_volume_type': 'nfs', 'data': {
        'export': 'nas:/vol', 'name': 'volume-a', 'format': 'raw'}}


def test_a_volume_on_an_unmapped_export_is_refused_naming_it(destination):
    backend, dest = destination
    client = exchange_client.ExchangeClient(SECRET)
    with pytest.raises(volumes.VolumeCannotFollow) as caught:
        volumes.check_destination_attaches(
            client, dest, bdi(nfs('a'), nfs('b', export='other:/x')))
    message = str(caught.value)
    assert 'the destination xen1 cannot attach volume b' in message
    assert 'other:/x' in message and '[xhv_xenapi] volume_exports' in message
    assert 'volume a' not in message


def test_no_volumes_asks_nothing(destination):
    backend, dest = destination
    volumes.check_destination_attaches(None, dest, None)
    volumes.check_destination_attaches(None, dest, bdi())
    assert backend.asked == []


def test_an_unreachable_destination_refuses_the_move():
    dest = source_side.Destination(host='gone', node='n', family='xen',
                                   url='http://127.0.0.1:9', migration=None)
    with pytest.raises(volumes.VolumeCannotFollow) as caught:
        volumes.check_destination_attaches(
            exchange_client.ExchangeClient(SECRET), dest, bdi(nfs('a')))
    assert 'the destination gone could not say' in str(caught.value)


def test_an_older_destination_without_the_route_is_not_asked_again():
    class OldClient(object):
        def check_volumes(self, url, checked):
            return None  # what check_volumes answers on a 404
    dest = source_side.Destination(host='old', node='n', family='xen',
                                   url='http://x', migration=None)
    volumes.check_destination_attaches(OldClient(), dest, bdi(nfs('a')))


@pytest.mark.parametrize('body', [
    {}, {'volumes': []}, {'volumes': 'x'}, {'volumes': [1]},
    {'volumes': [{'id': 'a', 'connection_info': 'x'}]},
    {'volumes': [{'id': 'a', 'connection_info': {'data': 'x'}}]},
    {'volumes': [{'id': 'a', 'connection_info': {}}] * 257},
])
def test_malformed_checks_get_a_400(destination, body):
    _backend, dest = destination
    client = exchange_client.ExchangeClient(SECRET)
    with pytest.raises(exchange_client.ExchangeError) as caught:
        client.call(dest.url, 'POST', '/volumes', body)
    assert caught.value.status == 400


def test_the_default_check_answers_from_the_family_facts():
    class Stub(object):
        facts = family.lookup('vmware')
        family = 'vmware'
    base.Backend.check_volume_attachable(Stub(), nfs('a'))
    with pytest.raises(base.VolumeNotAttachable) as caught:
        base.Backend.check_volume_attachable(Stub(), nfs('a', fmt='qcow2'))
    assert 'stored as qcow2' in str(caught.value)
    assert 'nfs (raw)' in str(caught.value)
    with pytest.raises(base.VolumeNotAttachable):
        base.Backend.check_volume_attachable(
            Stub(), {'driver_volume_type': 'iscsi', 'data': {}})


def test_xen_checks_the_mapping_and_the_file_on_its_mount(tmp_path):
    mount = tmp_path / 'mnt'
    mount.mkdir()
    (mount / 'volume-a').write_bytes(b'\0' * 512)
    attacher = xen_volumes.VolumeAttacher(None, xen_volumes.parse_exports(
        ['nas:/vol=%s' % mount]))
    attacher.check(nfs('a'))
    with pytest.raises(xen_volumes.XenVolumeError) as caught:
        attacher.check(nfs('a', export='other:/x'))
    assert ('add other:/x=/<its mount point> to [xhv_xenapi] '
            'volume_exports') in str(caught.value)
    with pytest.raises(xen_volumes.XenVolumeError) as caught:
        attacher.check(nfs('missing'))
    assert os.path.join(str(mount), 'volume-missing') in str(caught.value)
    with pytest.raises(xen_volumes.XenVolumeError):
        attacher.check(nfs('a', fmt='qcow2'))
    # Nothing was made: no SR folder, no link.
    assert sorted(os.listdir(mount)) == ['volume-a']


def test_hyperv_names_the_export_and_the_option_to_set():
    shares = hv_volumes.VolumeShares(
        hv_volumes.parse_mappings(['nas:/vol=\\\\filer\\vols']), 445,
        'u', 'p')
    assert shares.unc_of(nfs('a'))[0] == '\\\\filer\\vols\\volume-a'
    with pytest.raises(hv_volumes.HyperVVolumeError) as caught:
        shares.check(nfs('a', export='other:/x'))
    assert ('add other:/x=\\\\<smb host>\\<share> to [xhv_hyperv] '
            'volume_shares') in str(caught.value)
