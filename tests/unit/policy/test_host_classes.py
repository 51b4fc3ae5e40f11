"""The scheduler filter's host classes.

The shortcut keys give the same class as building each host's view, and
never an earlier host's; the filter passes what per-host decisions pass.
"""

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


def test_filter_passes_what_deciding_each_host_passes(tmp_path):
    """XHVPolicyFilter against the engine deciding each host on its own.

    Classes and the per-request applicability, over many mixed hosts.
    """
    from oslo_config import cfg
    from oslo_config import fixture as config_fixture

    import nova_xhv.conf  # noqa: F401  registers [xhv_policy]
    from nova_xhv.policy import engine
    from nova_xhv.scheduler import policy_filter
    from tests.unit.policy import test_templates as tables

    (tmp_path / 'policy.yaml').write_text(__import__('yaml').safe_dump(
        {'rules': tables.RULES}))
    conf = config_fixture.Config(cfg.CONF)
    conf.setUp()
    try:
        conf.config(group='xhv_policy', policy_file=str(
            tmp_path / 'policy.yaml'), policy_dir=str(tmp_path / 'none'))
        scheduler_filter = policy_filter.XHVPolicyFilter()
    finally:
        conf.cleanUp()
    scratch = engine.Policy.from_files(str(tmp_path / 'policy.yaml'), None,
                                       memo_size=0)
    states = []
    for index, (hv_type, family, caps, aggregate) in enumerate(
            itertools.product(('QEMU', 'VMware'), ('kvm', 'vmware', 'fake'),
                              ('uefi', 'uefi,secure_boot'),
                              ('gold', 'silver'))):
        state = HostState(hv_type, {'xhv_family': family,
                                    'xhv_accepts': 'kvm,vmware,fake',
                                    'xhv_capabilities': caps},
                          [(aggregate, {'availability_zone': 'az1'})])
        state.host = 'host-%d' % index
        states.append(state)
    split = []
    for project, props in ((tables.P1, {}), (tables.P2, {}),
                           (tables.P3, {'os_secure_boot': 'required'})):
        request = inputs.document(
            'boot', inputs.caller(['member'], project),
            inputs.server(None, project, (), {}, 'm1', {}, props),
            point='scheduler')
        scheduler_filter._request = lambda spec, request=request: request
        before = scheduler_filter.decisions
        passed = [s.host for s in scheduler_filter.filter_all(states, None)]
        want = [s.host for s in states if scratch.decide(dict(
            request, destination=nova_input.host_of_state(s))).allowed]
        assert passed == want
        split.append(0 < len(want) < len(states))
        # One query per class (hypervisor_type is not in the view when
        # the compute names its family: two hosts a class here).
        classes = {inputs.host_class(nova_input.host_of_state(s))
                   for s in states}
        assert scheduler_filter.decisions - before == len(classes) == 12
    assert split == [True, False, True]  # P2's rule only warns
