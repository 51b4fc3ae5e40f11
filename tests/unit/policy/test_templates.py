"""Every shipped template, table-driven, through the real Rego engine.

Each case is one input document and the rule ids the policy must name
under each enforcement.  The documents are built with
nova_xhv.policy.inputs, as the enforcement points build them.
"""

import pytest

from nova_xhv.policy import engine
from nova_xhv.policy import inputs

P1, P2, P3 = 'project-one', 'project-two', 'project-three'

RULES = [
    {'id': 'p1-kvm-only', 'template': 'project_placement',
     'match': {'projects': [P1]}, 'parameters': {'families': ['kvm']}},
    {'id': 'p2-gold-aggregate', 'template': 'project_placement',
     'enforcement': 'warn', 'match': {'projects': [P2]},
     'parameters': {'aggregates': ['gold'],
                    'availability_zones': ['az1']}},
    {'id': 'matrix', 'template': 'move_matrix', 'parameters': {'allow': [
        {'from': 'vmware', 'to': 'kvm'},
        {'from': 'kvm', 'to': 'vmware', 'roles': ['admin']},
        {'from': '*', 'to': 'fake', 'roles': ['admin', 'migrator']}]}},
    {'id': 'pci-admin-kvm-to-vmware', 'template': 'scoped_moves',
     'match': {'tags': ['pci']}, 'parameters': {'allow': [
         {'from': 'kvm', 'to': 'vmware', 'roles': ['admin']}]}},
    {'id': 'secure-boot-kept', 'template': 'required_capabilities',
     'match': {'image_properties': {'os_secure_boot': 'required'}},
     'parameters': {'capabilities': ['secure_boot', 'uefi']}},
    {'id': 'tls-exchange', 'template': 'required_capabilities',
     'enforcement': 'dryrun', 'match': {'actions': ['move']},
     'parameters': {'capabilities': ['exchange_tls_verified'],
                    'families': ['vmware']}},
    {'id': 'gpu-flavors', 'template': 'scoped_moves', 'enforcement': 'warn',
     'match': {'flavor_extra_specs': {'resources:VGPU': 1}},
     'parameters': {'allow': []}},
]


@pytest.fixture(scope='module')
def policy():
    return engine.Policy(engine.normalize_rules({'rules': RULES}), {})


def host(name, family, aggregates=(), az='az1', caps=(), accepts=None,
         new_boot=()):
    return inputs.host(name, family, [{'name': a, 'metadata': {}}
                                      for a in aggregates], az, caps,
                       accepts if accepts is not None else
                       ['kvm', 'vmware', 'fake', 'hyperv', 'xen'], new_boot)


def doc(action, project=P1, roles=('member',), tags=(), props=None,
        specs=None, source=None, dest=None):
    return inputs.document(
        action, inputs.caller(roles, project),
        inputs.server('uuid-1', project, tags, {'k': 'v'}, 'm1', specs,
                      props), source, dest, point='driver')


KVM = host('k1', 'kvm', caps=['uefi', 'secure_boot'])
VMW = host('v1', 'vmware', aggregates=['gold'], caps=['uefi'])
VMW_TLS = host('v2', 'vmware', aggregates=['gold'],
               caps=['uefi', 'secure_boot', 'exchange_tls_verified'])
FAKE = host('f1', 'fake', az='az2')

CASES = [
    # project_placement: families
    ('p1 boots on kvm', doc('boot', dest=KVM), [], [], []),
    ('p1 cannot boot on vmware', doc('boot', dest=VMW),
     ['p1-kvm-only'], [], []),
    ('p1 cannot unshelve on vmware', doc('unshelve', dest=VMW),
     ['p1-kvm-only'], [], []),
    ('p1 audit finds a server on vmware', doc('audit', dest=VMW),
     ['p1-kvm-only'], [], []),
    ('no destination yet: nothing to say', doc('boot'), [], [], []),
    ('p2 is not confined to kvm', doc('boot', project=P2, dest=VMW),
     [], [], []),
    # project_placement: aggregates and zones (a warn rule)
    ('p2 outside gold warns', doc('boot', project=P2, dest=KVM),
     [], ['p2-gold-aggregate'], []),
    ('p2 in gold but wrong zone warns',
     doc('boot', project=P2, dest=host('v9', 'vmware', ['gold'], 'az2')),
     [], ['p2-gold-aggregate'], []),
    # move_matrix
    ('member moves vmware -> kvm', doc('move', project=P3, source=VMW,
                                       dest=KVM), [], [], []),
    ('member may not move kvm -> vmware',
     doc('move', project=P3, source=KVM, dest=VMW_TLS), ['matrix'], [], []),
    ('admin moves kvm -> vmware',
     doc('move', project=P3, roles=['admin'], source=KVM, dest=VMW_TLS),
     [], [], []),
    ('resize counts as a move',
     doc('resize', project=P3, source=KVM, dest=VMW_TLS), ['matrix'], [],
     []),
    ('evacuate counts as a move',
     doc('evacuate', project=P3, source=KVM, dest=VMW_TLS), ['matrix'],
     [], []),
    ('wildcard source, role list', doc('move', project=P3,
                                       roles=['migrator'], source=KVM,
                                       dest=FAKE), [], [], []),
    ('no edge at all: vmware -> fake by member',
     doc('move', project=P3, source=VMW, dest=FAKE), ['matrix'], [], []),
    ('same family moves are not the matrix\'s business',
     doc('move', project=P3, source=KVM, dest=host('k2', 'kvm')), [], [],
     []),
    # scoped_moves
    ('pci: member refused even where the matrix allows',
     doc('move', project=P3, tags=['pci'], source=VMW, dest=KVM),
     ['pci-admin-kvm-to-vmware'], [], []),
    ('pci: admin kvm -> vmware passes',
     doc('move', project=P3, roles=['admin'], tags=['pci'], source=KVM,
         dest=VMW_TLS), [], [], []),
    ('pci: admin inside kvm is off its edges',
     doc('move', project=P3, roles=['admin'], tags=['pci'], source=KVM,
         dest=host('k2', 'kvm')), ['pci-admin-kvm-to-vmware'], [], []),
    ('scoped by flavor extra spec (warn)',
     doc('move', project=P3, specs={'resources:VGPU': '1'}, source=VMW,
         dest=KVM), [], ['gpu-flavors'], []),
    ('boots are not moves', doc('boot', project=P3, tags=['pci'],
                                dest=VMW), [], [], []),
    # required_capabilities
    ('secure boot kept on kvm',
     doc('boot', project=P3, props={'os_secure_boot': 'required'},
         dest=KVM), [], [], []),
    ('secure boot not on plain vmware',
     doc('boot', project=P3, props={'os_secure_boot': 'required'},
         dest=VMW), ['secure-boot-kept'], [], []),
    ('tls exchange dryrun on a move to vmware',
     doc('move', project=P3, roles=['admin'], source=KVM, dest=VMW),
     [], [], ['tls-exchange']),
    ('tls exchange only checked for vmware',
     doc('move', project=P3, source=VMW, dest=KVM), [], [], []),
]


@pytest.mark.parametrize('name,document,deny,warn,dryrun', CASES,
                         ids=[c[0] for c in CASES])
def test_template_case(policy, name, document, deny, warn, dryrun):
    decision = policy.decide(document)
    assert sorted({v.rule for v in decision.deny}) == sorted(deny)
    assert sorted({v.rule for v in decision.warn}) == sorted(warn)
    assert sorted({v.rule for v in decision.dryrun}) == sorted(dryrun)
    assert decision.allowed is (not deny)
    for violation in decision.deny + decision.warn + decision.dryrun:
        assert violation.msg and '"' not in violation.msg


def test_messages_say_what_and_who(policy):
    decision = policy.decide(doc('move', project=P2, tags=['pci'],
                                 source=VMW, dest=KVM))
    (violation,) = decision.deny
    assert violation.msg == ('this server (tags pci) may not move vmware -> '
                             'kvm by a caller with roles: member')
    decision = policy.decide(doc('boot', dest=VMW))
    assert decision.deny[0].msg == ('project project-one may run on kvm '
                                    'only, not on vmware (host v1)')
    assert decision.reason().startswith('refused by XHV policy rule '
                                        'p1-kvm-only: ')


DEFAULT_CASES = [
    # accepted_source_families: the destination's own list
    ('accepted', doc('move', source=VMW,
                     dest=host('k1', 'kvm', accepts=['vmware'])), []),
    ('not accepted', doc('move', source=VMW,
                         dest=host('k1', 'kvm', accepts=['xen'])),
     ['xhv-accepted-source-families']),
    ('no exchange: accepts nothing', doc('move', source=VMW,
                                         dest=host('k1', 'kvm', accepts=[])),
     ['xhv-accepted-source-families']),
    ('unknown acceptance (nova-api judging a class) is not a refusal',
     doc('move', source=VMW, dest=dict(host('k1', 'kvm'), accepts=None)),
     []),
    ('same family needs no acceptance',
     doc('move', source=KVM, dest=host('k2', 'kvm', accepts=[])), []),
    # pinned_image_boot: new boots of pinned images
    ('pinned boot on its family', doc('boot', props={
        'hypervisor_type': 'vmware'}, dest=VMW), []),
    ('pinned boot elsewhere', doc('boot', props={
        'hypervisor_type': 'vmware'}, dest=KVM), ['xhv-new-boot-families']),
    ('pinned boot elsewhere, listed by type', doc('boot', props={
        'hypervisor_type': 'VMware'}, dest=host('k1', 'kvm',
                                                new_boot=['vmware'])), []),
    ('pinned boot elsewhere, listed by family', doc('boot', props={
        'hypervisor_type': 'qemu'}, dest=host('v1', 'vmware',
                                              new_boot=['kvm'])), []),
    ('a pinned server may move', doc('move', props={
        'hypervisor_type': 'vmware'}, source=VMW, dest=KVM), []),
    ('unpinned boots anywhere', doc('boot', dest=KVM), []),
]


@pytest.fixture(scope='module')
def defaults_only():
    return engine.Policy(engine.normalize_rules({}), {})


@pytest.mark.parametrize('name,document,deny', DEFAULT_CASES,
                         ids=[c[0] for c in DEFAULT_CASES])
def test_default_rule_case(defaults_only, name, document, deny):
    decision = defaults_only.decide(document)
    assert sorted({v.rule for v in decision.deny}) == deny
    assert not decision.warn and not decision.dryrun


def test_defaults_can_be_dropped():
    policy = engine.Policy(engine.normalize_rules({'defaults': False}), {})
    assert policy.rules == []
    assert policy.decide(DEFAULT_CASES[1][1]).allowed


@pytest.mark.parametrize('document', [
    doc('boot', dest=dict(VMW, host=None)),
    doc('boot', dest=dict(VMW, host=None, family='vmware',
                          availability_zone=None)),
], ids=['no host name', 'no zone'])
def test_violations_survive_missing_names(policy, document):
    # The scheduler decides per host class, without host names: a message
    # must never turn undefined (and drop its violation) for want of one.
    decision = policy.decide(document)
    assert [v.rule for v in decision.deny] == ['p1-kvm-only']
    assert '(host ?)' in decision.deny[0].msg


def test_hostile_strings_are_data_not_syntax(policy):
    # Quotes, backslashes, Rego-looking text and non-ASCII in everything
    # a server's owner controls.
    nasty = 'x" } deny contains "y\\\\u00e9\u00e9\n'
    document = doc('move', project=nasty, tags=[nasty, 'pci'],
                   props={nasty: nasty}, specs={nasty: nasty}, source=VMW,
                   dest=KVM)
    decision = policy.decide(document)
    assert [v.rule for v in decision.deny] == ['pci-admin-kvm-to-vmware']
    document = doc('boot', project=P1, tags=[nasty], dest=VMW)
    document['destination']['host'] = nasty
    decision = policy.decide(document)
    assert decision.deny[0].msg.endswith('(host %s)' % nasty)
