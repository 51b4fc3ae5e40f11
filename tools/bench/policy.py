#!/usr/bin/env python3
"""XHV policy decision latency: one decision, and one scheduling request.

    python tools/bench/policy.py [--hosts 1000] [--classes 10] [--repeat 30]
                                 [--policy policy.yaml [--policy-dir DIR]]

Runs the real XHVPolicyFilter (nova_xhv.scheduler.policy_filter) over
stand-in HostStates -- ``--hosts`` computes in ``--classes`` classes
(family x aggregate) -- for each policy: ``templates`` (the two default
rules plus one instance of most shipped templates, 7 rules) and ``large``
(tools/bench/policy-large: 22 template rules and 5 operator rules in 3
modules), or the one ``--policy`` names.  Measured in the same run:

* one decision (``Policy.decide``): cold (the decision memo off) and warm
  (a memo hit);
* one scheduling request (a boot), median ms, three ways:
  - ``before``: the baseline, what the filter did before (one complete
    query per class, no memo);
  - ``cold``: the filter now with the memo off (which rules apply asked
    once per request, then one query per class);
  - ``warm``: the filter now, a request like the one before it (the memo
    answers);
  and the same with one host of each class (``ms a class``: that
  request / classes, host views left out); the ratios are against
  ``before``; the three take turns, so a neighbour's load falls on all;
* a sanity baseline: the same decisions once per HOST;
* growth: the cold filter at 1/10, 1 and 10 times ``--hosts``.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

LARGE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                     'policy-large')
POLICY = '''rules:
  - id: p1-kvm-only
    template: project_placement
    match: {projects: [project-one]}
    parameters: {families: [kvm]}
  - id: gold-aggregates
    template: project_placement
    enforcement: warn
    match: {projects: [bench]}
    parameters: {aggregates: [agg-0, agg-1, agg-2, agg-3]}
  - id: matrix
    template: move_matrix
    parameters:
      allow:
        - {from: vmware, to: kvm}
        - {from: kvm, to: vmware, roles: [admin]}
  - id: pci-admin-only
    template: scoped_moves
    match: {tags: [pci]}
    parameters:
      allow: [{from: kvm, to: vmware, roles: [admin]}]
  - id: secure-boot
    template: required_capabilities
    match: {image_properties: {os_secure_boot: required}}
    parameters: {capabilities: [secure_boot, uefi]}
'''
FAMILIES = ('kvm', 'vmware')


class HostState(object):
    """What XHVPolicyFilter reads of a nova HostState."""

    def __init__(self, name, family, aggregate):
        from nova import objects

        self.host = name
        self.hypervisor_type = 'QEMU' if family == 'kvm' else 'VMware'
        self.stats = {'xhv_family': family, 'xhv_accepts': ','.join(
            f for f in FAMILIES if f != family),
            'xhv_capabilities': 'exchange,uefi',
            'xhv_policy_digest': 'bench'}
        self.aggregates = [objects.Aggregate(name=aggregate, metadata={
            'availability_zone': 'az-%s' % aggregate})]


def hosts(count, classes):
    # classes = families x aggregates; hosts spread evenly over them.
    aggregates = max(1, classes // len(FAMILIES))
    return [HostState('host-%05d' % n, FAMILIES[n % len(FAMILIES)],
                      'agg-%d' % ((n // len(FAMILIES)) % aggregates))
            for n in range(count)]


def request_spec():
    from nova import objects

    flavor = objects.Flavor(name='m1', flavorid='1', extra_specs={},
                            memory_mb=512, vcpus=1, root_gb=1,
                            ephemeral_gb=0, swap=0)
    image = objects.ImageMeta.from_dict({
        'disk_format': 'qcow2', 'properties': {'hw_firmware_type': 'uefi'}})
    return objects.RequestSpec(project_id='bench', flavor=flavor,
                               image=image)


class PerHostFilter(object):
    """Sanity baseline: the same decisions, once per host."""

    def __init__(self, policy_filter):
        self.inner = policy_filter

    def filter_all(self, host_states, spec_obj):
        from nova_xhv.policy import nova_input

        request = self.inner._request(spec_obj)
        for host_state in host_states:
            destination = nova_input.host_of_state(host_state)
            destination['host'] = host_state.host
            decision = self.inner.policy.decide(
                dict(request, destination=destination), report=False,
                log=False)
            if decision.allowed:
                yield host_state


class BeforeFilter(object):
    """The baseline: one complete query per class (the filter before)."""

    def __init__(self, policy_filter):
        self.inner = policy_filter

    def filter_all(self, host_states, spec_obj):
        from nova_xhv.policy import inputs
        from nova_xhv.policy import nova_input

        request = self.inner._request(spec_obj)
        verdicts = {}
        for host_state in host_states:
            destination = nova_input.host_of_state(host_state)
            key = inputs.host_class(destination)
            decision = verdicts.get(key)
            if decision is None:
                decision = verdicts[key] = self.inner.policy.decide(
                    dict(request, destination=destination), report=False,
                    log=False)
            if decision.allowed:
                yield host_state


def timed(policy_filter, host_states, spec, repeat):
    times = []
    passed = 0
    for _ in range(repeat):
        start = time.perf_counter()
        passed = len(list(policy_filter.filter_all(host_states, spec)))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, passed


def interleaved(filters, host_states, spec, repeat):
    """{label: (median ms, hosts passed)}, the filters taking turns."""
    times = {label: [] for label in filters}
    passed = {}
    for _ in range(repeat):
        for label, policy_filter in filters.items():
            start = time.perf_counter()
            passed[label] = len(list(policy_filter.filter_all(host_states,
                                                              spec)))
            times[label].append(time.perf_counter() - start)
    return {label: (statistics.median(times[label]) * 1000, passed[label])
            for label in filters}


def median_ms(function, count):
    for _ in range(min(50, count)):
        function()
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    samples.sort()
    return (statistics.median(samples) * 1000,
            samples[int(len(samples) * 0.95)] * 1000)


def use_policy(folder, name, policy_file, policy_dir):
    """Point [xhv_policy] at a copy of the policy's files."""
    import shutil

    from oslo_config import cfg

    target = os.path.join(folder, name)
    os.makedirs(os.path.join(target, 'policy.d'))
    if policy_file:
        shutil.copy(policy_file, os.path.join(target, 'policy.yaml'))
    else:
        with open(os.path.join(target, 'policy.yaml'), 'w') as f:
            f.write(POLICY)
    if policy_dir:
        for entry in sorted(os.listdir(policy_dir)):
            if entry.endswith('.rego'):
                shutil.copy(os.path.join(policy_dir, entry),
                            os.path.join(target, 'policy.d'))
    cfg.CONF.set_override('policy_file', os.path.join(target, 'policy.yaml'),
                          group='xhv_policy')
    cfg.CONF.set_override('policy_dir', os.path.join(target, 'policy.d'),
                          group='xhv_policy')


def new_filter(cache_size):
    from oslo_config import cfg

    from nova_xhv.scheduler import policy_filter as filter_module

    cfg.CONF.set_override('decision_cache_size', cache_size,
                          group='xhv_policy')
    return filter_module.XHVPolicyFilter()


def bench_policy(name, args):
    from nova_xhv.policy import inputs
    from nova_xhv.policy import nova_input

    cold = new_filter(0)
    warm = new_filter(1024)
    policy = cold.policy.policy
    if policy is None:
        sys.exit('policy %s does not load: %s' % (name, cold.policy.error))
    print('policy %s: %d template rules, %d operator modules, digest %s'
          % (name, len(policy.rules), len(policy.operator_modules),
             policy.short_digest))
    document = inputs.document(
        'move', inputs.caller(['member'], 'bench'),
        inputs.server('u', 'bench', ['pci'], {}, 'm1', {}, {}),
        inputs.host('s', 'kvm'), inputs.host('d', 'vmware', [
            {'name': 'agg-1', 'metadata': {}}], 'az', ['uefi'], ['kvm']))
    cold_ms, cold_p95 = median_ms(lambda: policy.decide(document), 1000)
    warm_policy = warm.policy.policy
    warm_ms, warm_p95 = median_ms(lambda: warm_policy.decide(document), 1000)
    print('  one decision (a move): cold %.3f ms (p95 %.3f), warm %.4f ms '
          '(p95 %.4f)' % (cold_ms, cold_p95, warm_ms, warm_p95))

    spec = request_spec()
    host_states = hosts(args.hosts, args.classes)
    classes = len({inputs.host_class(nova_input.host_of_state(h))
                   for h in host_states})
    # What is not Rego: each host's view and class key, built in Python --
    # before: for every host; now: looked up by what the view is built of.
    view_ms = {}
    cache = {}
    for label, build in (
            ('before', lambda h: inputs.host_class(
                nova_input.host_of_state(h))),
            ('now', lambda h: nova_input.host_class_of_state(h, cache))):
        views = []
        for _ in range(max(3, args.repeat // 3)):
            start = time.perf_counter()
            for host_state in host_states:
                build(host_state)
            views.append(time.perf_counter() - start)
        view_ms[label] = statistics.median(views) * 1000
    filters = {'before': BeforeFilter(new_filter(0)), 'cold': cold,
               'warm': warm}
    # Rounds alternate the three, so a neighbour's load falls on all.
    results = interleaved(filters, host_states, spec, args.repeat)
    one_each = hosts(classes, args.classes)  # one host of each class
    per_class = interleaved(filters, one_each, spec, args.repeat * 3)
    assert len({passed for _ms, passed in results.values()}) == 1, results
    base_ms = results['before'][0]
    base_class_ms = per_class['before'][0]
    print('  one scheduling request, %d hosts in %d classes (%d pass); '
          'host views and class keys: %.2f ms before, %.2f ms now:' % (
              args.hosts, classes, results['cold'][1], view_ms['before'],
              view_ms['now']))
    for label, (request_ms, _passed) in results.items():
        class_ms = per_class[label][0] / classes
        print('    %-6s %7.2f ms a request (ratio %.3f); with one host a '
              'class: %.3f ms a class (ratio %.3f)' % (
                  label, request_ms, request_ms / base_ms, class_ms,
                  per_class[label][0] / base_class_ms))
    if not args.skip_per_host:
        per_host_ms, passed = timed(PerHostFilter(new_filter(0)),
                                    host_states, spec, 3)
        assert passed == results['cold'][1]
        print('    per host (sanity baseline) %.1f ms, cold/per host %.4f'
              % (per_host_ms, results['cold'][0] / per_host_ms))
    for count in (args.hosts // 10, args.hosts, args.hosts * 10):
        growth_ms, _passed = timed(cold, hosts(count, args.classes), spec,
                                   max(3, args.repeat // 3))
        print('    cold, %6d hosts in %d classes: %.2f ms a request '
              '(%.4f ms a host)' % (count, args.classes, growth_ms,
                                    growth_ms / count))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--hosts', type=int, default=1000)
    parser.add_argument('--classes', type=int, default=10)
    parser.add_argument('--repeat', type=int, default=30)
    parser.add_argument('--policy', help='a policy.yaml to use instead of '
                        'the built-in ones')
    parser.add_argument('--policy-dir', help='its folder of .rego modules')
    parser.add_argument('--skip-per-host', action='store_true',
                        help='skip the slow per-host sanity baseline')
    args = parser.parse_args()

    from nova import objects
    from oslo_config import cfg

    import nova_xhv.conf  # noqa: F401

    objects.register_all()
    cfg.CONF([], project='nova', default_config_files=[])
    folder = tempfile.mkdtemp(prefix='xhv-policy-bench-')
    if args.policy:
        chosen = [('given', args.policy, args.policy_dir)]
    else:
        chosen = [('templates', None, None),
                  ('large', os.path.join(LARGE, 'policy.yaml'),
                   os.path.join(LARGE, 'policy.d'))]
    for name, policy_file, policy_dir in chosen:
        use_policy(folder, name, policy_file, policy_dir)
        bench_policy(name, args)


if __name__ == '__main__':
    main()
