"""Which volumes may follow a server to another family (before power-off)."""

import pytest

from nova_xhv.migration import volumes


class Backend(object):
    """Records calls; fails the n-th attach/detach when told to."""

    def __init__(self, fail_detach_at=None):
        self.calls = []
        self.fail_detach_at = fail_detach_at

    def detach_volume(self, context, info, instance, mountpoint):
        if len([c for c in self.calls if c[0] == 'detach']) == \
                self.fail_detach_at:
            raise RuntimeError('detach failed')
        self.calls.append(('detach', info['serial']))

    def attach_volume(self, context, info, instance, mountpoint,
                      disk_bus=None, device_type=None):
        self.calls.append(('attach', info['serial']))


class Instance(object):
    uuid = 'inst-1'


def bdi(*infos):
    return {'block_device_mapping': [
        {'connection_info': info, 'mount_device': '/dev/sd%s' % chr(98 + n)}
        for n, info in enumerate(infos)]}


def nfs(serial, fmt='raw', **extra):
    info = {'driver_volume_type': 'nfs', 'serial': serial,
            'data': {'export': 'h:/e', 'name': 'volume-' + serial,
                     'format': fmt}}
    info.update(extra)
    return info


def test_raw_nfs_volumes_follow_to_both_families():
    volumes.check_can_follow(bdi(nfs('a'), nfs('b')), 'vmware')
    volumes.check_can_follow(bdi(nfs('a', 'qcow2')), 'kvm')
    volumes.check_can_follow(None, 'vmware')


@pytest.mark.parametrize('info, dest, words', [
    (nfs('a', 'qcow2'), 'vmware', ['volume a', 'stored as qcow2',
                                   'retype it']),
    ({'driver_volume_type': 'iscsi', 'serial': 'b', 'data': {}}, 'kvm',
     ['volume b', 'block', 'detach it first']),
    (nfs('c', multiattach=True), 'kvm', ['volume c is multiattach']),
    (nfs('d'), 'no-such-family', ['no-such-family']),
])
def test_what_cannot_follow_is_refused_with_the_reason(info, dest, words):
    with pytest.raises(volumes.VolumeCannotFollow) as caught:
        volumes.check_can_follow(bdi(nfs('ok'), info), dest)
    for word in words:
        assert word in str(caught.value)
    assert 'volume ok' not in str(caught.value)


def test_detach_all_then_attach_again():
    backend = Backend()
    done = volumes.detach_all(backend, None, Instance(),
                              bdi(nfs('a'), nfs('b')))
    assert backend.calls == [('detach', 'a'), ('detach', 'b')]
    volumes.attach_again(backend, None, Instance(), done)
    assert backend.calls[2:] == [('attach', 'a'), ('attach', 'b')]


def test_a_failed_detach_gives_back_what_was_detached():
    backend = Backend(fail_detach_at=1)
    with pytest.raises(RuntimeError):
        volumes.detach_all(backend, None, Instance(),
                           bdi(nfs('a'), nfs('b')))
    assert backend.calls == [('detach', 'a'), ('attach', 'a')]
