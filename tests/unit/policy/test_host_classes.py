"""The scheduler filter's host classes: the shortcut keys give the same
class as building each host's view, and never an earlier host's."""

import itertools

from nova import objects

from nova_xhv.policy import inputs
from nova_xhv.policy import nova_input


class Recording(dict):
    """A stats dict that records which keys are read."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)


objects.register_all()


class HostState(object):

    def __init__(self, hv_type, stats, aggregates):
        self.hypervisor_type = hv_type
        self.stats = stats
        self.aggregates = [objects.Aggregate(name=name, metadata=dict(meta))
                           for name, meta in aggregates]


def test_host_from_stats_reads_only_the_keyed_stats():
    stats = Recording({'xhv_family': 'kvm', 'xhv_accepts': 'vmware',
                       'xhv_capabilities': 'uefi', 'xhv_new_boot': 'kvm',
                       'xhv_policy_digest': 'd', 'num_instances': '3',
                       'io_workload': '1'})
    inputs.host_from_stats(None, stats, 'QEMU')
    assert stats.read <= set(inputs.STAT_KEYS)


def test_shortcut_classes_equal_the_views_classes():
    cache = {}
    states = []
    for hv_type, family, accepts, caps, aggregate, zone in itertools.product(
            ('QEMU', 'VMware'), (None, 'kvm', 'vmware'),
            (None, '', 'kvm', 'kvm,vmware'), ('uefi', 'uefi,secure_boot'),
            ((), ('agg-1',), ('agg-1', 'agg-2')), ('az1', 'az2')):
        stats = {'num_instances': str(len(states))}
        for key, value in (('xhv_family', family), ('xhv_accepts', accepts),
                           ('xhv_capabilities', caps)):
            if value is not None:
                stats[key] = value
        states.append(HostState(hv_type, stats, [
            (name, {'availability_zone': zone, 'tier': name})
            for name in aggregate]))
    for state in states + states[::-1]:
        key, view = nova_input.host_class_of_state(state, cache)
        want = nova_input.host_of_state(state)
        assert (key, view) == (inputs.host_class(want), want)
    assert len(cache) < len(states)  # num_instances is not in the key


def test_a_changed_host_gets_its_new_class():
    cache = {}
    state = HostState('QEMU', {'xhv_family': 'kvm',
                               'xhv_capabilities': 'uefi'},
                      [('agg-1', {'maintenance': 'false'})])
    first, _view = nova_input.host_class_of_state(state, cache)
    state.stats = dict(state.stats, xhv_capabilities='uefi,secure_boot')
    second, view = nova_input.host_class_of_state(state, cache)
    assert second != first and 'secure_boot' in view['capabilities']
    state.aggregates[0].metadata = {'maintenance': 'true'}
    third, view = nova_input.host_class_of_state(state, cache)
    assert third != second
    assert view['aggregates'][0]['metadata'] == {'maintenance': 'true'}
