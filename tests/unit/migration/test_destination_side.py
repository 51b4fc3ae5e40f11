"""Destination staging jobs: real exchange, real qemu-img, a recording backend.

The Nova instance lookup is the only mock; the disk really travels over
HTTP from a published file through qemu's curl driver into the engine.
"""

import os
import time
from unittest import mock

from nova import objects
import pytest

from nova_xhv import disk as xhv_disk
from nova_xhv.migration import client as exchange_client
from nova_xhv.migration import destination_side
from nova_xhv.migration import exchange
from nova_xhv import translate
from tests.fixtures import disks

SECRET = 'unit-test-secret'
objects.register_all()


class RecordingBackend(object):
    """Stages into a folder, like a backend's storage."""

    family = 'kvm'
    native_format = 'qcow2'
    native_subformat = None

    def __init__(self, storage, fail=False):
        self.storage = storage
        self.fail = fail
        self.discarded = []
        self.checked = []

    def check_stageable(self, context, instance, disks_):
        # Before any data moves: the source's own descriptors.
        self.checked.append([d.url for d in disks_])

    def stage_disks(self, context, instance, disks_):
        staged = []
        for n, disk in enumerate(disks_):
            target = os.path.join(self.storage, '%s-%d' % (instance.uuid, n))
            os.rename(disk.path, target)
            staged.append(xhv_disk.DiskDescriptor(
                format=disk.format, virtual_size=disk.virtual_size,
                path=target, bus=disk.bus, boot_index=disk.boot_index,
                handle=target))
        if self.fail:
            # Placed, then failed: the stager never learns of them, so the
            # backend must take them back itself.
            self.discard_staged_disks(context, instance, staged)
            raise OSError('storage full (injected)')
        return staged

    def discard_staged_disks(self, context, instance, disks_):
        for disk in disks_:
            self.discarded.append(disk.path)
            if os.path.exists(disk.path):
                os.unlink(disk.path)


def _instance(uuid):
    flavor = objects.Flavor(name='tiny', root_gb=1, ephemeral_gb=0, swap=0)
    return objects.Instance(uuid=uuid, flavor=flavor, new_flavor=None,
                            system_metadata={'image_disk_format': 'vmdk'})


@pytest.fixture
def source(tmp_path):
    raw = str(tmp_path / 'guest.raw')
    disks.make_raw_disk(raw, 8 * disks.MiB, seed=5)
    vmdk = str(tmp_path / 'guest.vmdk')
    translate.convert(raw, vmdk, to_format='vmdk', from_format='raw',
                      subformat='streamOptimized')
    server = exchange.ExchangeServer(SECRET, bind_host='127.0.0.1', port=0,
                                     use_tls=False)
    server.start()
    yield server, raw, vmdk
    server.stop()


@pytest.fixture
def lookup():
    with mock.patch.object(objects.Instance, 'get_by_uuid',
                           side_effect=lambda ctx, uuid, **kw:
                           _instance(uuid)) as patched:
        yield patched


def _request(server, vmdk, key='move-1'):
    disk_id, token = server.publisher.publish(vmdk)
    offer = xhv_disk.DiskDescriptor(
        format='vmdk', subformat='streamOptimized',
        virtual_size=8 * disks.MiB, url=server.disk_url(disk_id),
        bus='lsiLogic', boot_index=0)
    return {'key': key, 'instance_uuid': 'f3a4c1de-0000-4000-8000-00000000000'
            '1', 'source_family': 'vmware',
            'source_hardware': {'disk_bus': 'lsiLogic'},
            'disks': [{'disk': offer.to_dict(), 'disk_id': disk_id,
                       'token': token}]}


def _wait(stager, key, states=('done', 'failed', 'discarded'), timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = stager.stage_status(key)
        if report['state'] in states:
            return report
        time.sleep(0.05)
    raise AssertionError('job %s still %s' % (key, report))


def _stager(backend, tmp_path, **kwargs):
    return destination_side.DestinationStager(
        backend, str(tmp_path / 'state'), translate.ConvertOptions(), {},
        **kwargs)


def test_stage_pulls_translates_and_journals(source, lookup, tmp_path):
    server, raw, vmdk = source
    storage = tmp_path / 'storage'
    storage.mkdir()
    backend = RecordingBackend(str(storage))
    stager = _stager(backend, tmp_path)
    request = _request(server, vmdk)
    report = stager.stage_start(request)
    assert report['state'] == 'running'
    report = _wait(stager, 'move-1')
    assert report['state'] == 'done', report
    assert backend.checked == [[d['disk']['url'] for d in request['disks']]]
    assert report['hardware'] == {'disk_bus': 'sata', 'nic_model': 'e1000',
                                  'firmware': 'bios'}
    [staged] = report['staged']
    assert staged['format'] == 'qcow2' and staged['bus'] == 'sata'
    assert translate.compare(staged['path'], 'qcow2', raw, 'raw')
    # Journaled until finish_migration consumes it.
    assert [k for k, _ in stager.journal.records()] == ['move-1']
    stager.consumed('move-1')
    assert stager.journal.records() == []
    assert os.path.exists(staged['path'])


def test_leftovers_are_removed_at_the_next_start(source, lookup, tmp_path):
    server, _raw, vmdk = source
    storage = tmp_path / 'storage'
    storage.mkdir()
    backend = RecordingBackend(str(storage))
    stager = _stager(backend, tmp_path)
    stager.stage_start(_request(server, vmdk))
    staged = _wait(stager, 'move-1')['staged'][0]['path']
    # The compute dies before finish_migration; a new one starts.
    os.makedirs(stager.journal.workdir('move-2'))
    restarted = _stager(backend, tmp_path)
    assert restarted.cleanup_leftovers() == ['move-1']
    assert not os.path.exists(staged)
    assert backend.discarded == [staged]
    assert os.listdir(str(tmp_path / 'state')) == []


def test_failed_upload_discards_and_reports(source, lookup, tmp_path):
    server, _raw, vmdk = source
    storage = tmp_path / 'storage'
    storage.mkdir()
    stager = _stager(RecordingBackend(str(storage), fail=True), tmp_path)
    stager.stage_start(_request(server, vmdk))
    report = _wait(stager, 'move-1')
    assert report['state'] == 'failed'
    assert 'storage full' in report['error']
    assert os.listdir(str(storage)) == []
    assert stager.journal.records() == []
    assert os.listdir(str(tmp_path / 'state')) == []


def test_discard_after_done_removes_staged_disks(source, lookup, tmp_path):
    server, _raw, vmdk = source
    storage = tmp_path / 'storage'
    storage.mkdir()
    stager = _stager(RecordingBackend(str(storage)), tmp_path)
    stager.stage_start(_request(server, vmdk))
    _wait(stager, 'move-1')
    assert stager.stage_discard('move-1')['state'] == 'discarded'
    assert os.listdir(str(storage)) == []
    assert stager.journal.records() == []


def test_refused_source_family_and_bad_requests(tmp_path):
    stager = _stager(RecordingBackend(str(tmp_path)), tmp_path,
                     accepted_families=['xen'])
    with pytest.raises(exchange.ControlError) as error:
        stager.stage_start({'key': 'm', 'instance_uuid': 'u',
                            'source_family': 'vmware', 'disks': [{}]})
    assert error.value.status == 403
    stager = _stager(RecordingBackend(str(tmp_path)), tmp_path)
    with pytest.raises(exchange.ControlError, match='move key'):
        stager.stage_start({'key': '../etc', 'instance_uuid': 'u',
                            'disks': [{}]})
    with pytest.raises(exchange.ControlError, match='at least one disk'):
        stager.stage_start({'key': 'm', 'instance_uuid': 'u', 'disks': []})
    with pytest.raises(exchange.ControlError) as error:
        stager.stage_status('nope')
    assert error.value.status == 404


class _OfferingReader(xhv_disk.LocalFileReader):
    def __init__(self, path, answer):
        super().__init__(path)
        self._answer = answer

    def direct_read(self):
        return self._answer


class _Job(object):
    key = 'k1'


@pytest.mark.parametrize('offer,insecure_peers,taken', [
    (translate.DirectRead('https://vc.example/folder/d.vmdk',
                          {'Cookie': 'vmware_cgi_ticket=t'}, 'PEM'),
     False, True),
    (translate.DirectRead('https://vc.example/folder/d.vmdk',
                          {'Cookie': 'vmware_cgi_ticket=t'}, insecure=True),
     False, False),
    (translate.DirectRead('https://vc.example/folder/d.vmdk',
                          {'Cookie': 'vmware_cgi_ticket=t'}, insecure=True),
     True, True),
    (translate.DirectRead('ftp://vc.example/d.vmdk', {}), False, False),
    (translate.DirectRead('http://vc.example/folder/d.vmdk', {}), False,
     False),
    (None, False, False),
])
def test_direct_read_is_asked_for_and_checked(tmp_path, offer,
                                              insecure_peers, taken):
    path = str(tmp_path / 'disk.raw')
    with open(path, 'wb') as f:
        f.write(b'x' * 4096)
    server = exchange.ExchangeServer(
        SECRET, bind_host='127.0.0.1', port=0, advertise_host='127.0.0.1',
        use_tls=False)
    server.start()
    try:
        disk_id, token = server.publisher.publish(
            _OfferingReader(path, offer))
        stager = destination_side.DestinationStager(
            RecordingBackend(str(tmp_path)), str(tmp_path / 'state'),
            translate.ConvertOptions(), {'insecure': insecure_peers})
        source = translate.RemoteSource(server.disk_url(disk_id), 'raw',
                                        username=disk_id, password=token)
        direct = stager._direct_read(_Job(), source)
        assert (direct == offer) if taken else direct is None
        # A wrong token gets nothing, and the exchange path stays.
        source.password = 'wrong'
        assert stager._direct_read(_Job(), source) is None
    finally:
        server.stop()


def test_probe_of_the_original_has_its_own_route(tmp_path):
    kept = {'u-1': 'migration-1.source'}
    stager = destination_side.DestinationStager(
        RecordingBackend(str(tmp_path)), str(tmp_path / 'state'),
        translate.ConvertOptions(), {}, original_lookup=kept.get)
    server = exchange.ExchangeServer(
        SECRET, bind_host='127.0.0.1', port=0, advertise_host='127.0.0.1',
        use_tls=False, control_handler=stager)
    server.start()
    try:
        client = exchange_client.ExchangeClient(SECRET, timeout=10)
        assert client.probe_original(server.url, 'u-1', 'kvm') == \
            'migration-1.source'
        assert client.probe_original(server.url, 'u-2', 'kvm') is None
        # A source of an older XHV asks through POST /stage.
        assert client.stage_start(server.url, {
            'probe_original': True, 'instance_uuid': 'u-1',
            'key': 'probe-u-1'}) == {'original_key': 'migration-1.source'}
        # Nothing was staged by either question.
        assert stager.journal.records() == [] or \
            list(stager.journal.records()) == []
    finally:
        server.stop()


class StreamingBackend(RecordingBackend):
    """A vSphere-like backend that takes disks as streams (no local copy)."""

    family = 'vmware'
    native_format = 'vmdk'
    native_subformat = 'streamOptimized'

    def __init__(self, storage, fail_after=None):
        super().__init__(storage)
        self.fail_after = fail_after
        self.workdirs_seen = []

    def accepts_disk_streams(self):
        return True

    def stage_disks(self, context, instance, disks_):
        raise AssertionError('a streaming backend gets streams')

    def stage_disk_streams(self, context, instance, disks_, streams):
        staged, results = [], []
        for n, (disk, stream) in enumerate(zip(disks_, streams)):
            assert disk.path is None and disk.url
            target = os.path.join(self.storage, '%s-%d' % (instance.uuid, n))

            def consume(reader, _target=target):
                with open(_target, 'wb') as f:
                    while True:
                        data = reader.read(65536)
                        if not data:
                            return
                        if self.fail_after is not None and \
                                f.tell() >= self.fail_after:
                            raise OSError('upload cut (injected)')
                        f.write(data)
            try:
                result, _ = stream.run(consume)
            except BaseException:
                if os.path.exists(target):
                    os.unlink(target)
                self.discard_staged_disks(context, instance, staged)
                raise
            results.append(result)
            staged.append(xhv_disk.DiskDescriptor(
                format='vmdk', subformat='streamOptimized',
                virtual_size=disk.virtual_size, path=target, bus=disk.bus,
                boot_index=disk.boot_index, handle=target))
        return staged, results


def test_a_streaming_backend_gets_the_disk_as_it_is_written(
        source, lookup, tmp_path):
    server, raw, vmdk = source
    storage = tmp_path / 'storage'
    storage.mkdir()
    stager = _stager(StreamingBackend(str(storage)), tmp_path)
    stager.stage_start(_request(server, vmdk))
    report = _wait(stager, 'move-1')
    assert report['state'] == 'done', report
    [staged] = report['staged']
    assert translate.compare(staged['path'], 'vmdk', raw, 'raw')
    assert list(report['timings']) == ['translate+upload']
    assert report['bytes'] > 0
    # Nothing went through the move's work folder.
    assert not os.path.exists(stager.journal.workdir('move-1'))


def test_a_stream_cut_mid_upload_leaves_nothing(source, lookup, tmp_path):
    server, _raw, vmdk = source
    storage = tmp_path / 'storage'
    storage.mkdir()
    stager = _stager(StreamingBackend(str(storage), fail_after=65536),
                     tmp_path)
    stager.stage_start(_request(server, vmdk))
    report = _wait(stager, 'move-1')
    assert report['state'] == 'failed'
    assert 'upload cut' in report['error']
    assert os.listdir(str(storage)) == []
    assert stager.journal.records() == []
    assert os.listdir(str(tmp_path / 'state')) == []
