"""The fast paths give the engine's own answers, never another input's.

Two fast paths (nova_xhv.policy.memo, Policy.decide_each): decisions
remembered by what the policy reads, and which rules apply asked once per
request.  Every test compares them with a policy deciding each document
from scratch (memo off), through the real Rego engine.
"""

import itertools
import json
import random

import pytest

from nova_xhv.policy import enforcer
from nova_xhv.policy import engine
from nova_xhv.policy import inputs
from nova_xhv.policy import memo
from tests.unit.policy import test_templates as tables

ALL_CASES = [c[1] for c in tables.CASES] + [
    c[1] for c in tables.DEFAULT_CASES]

# An operator module reading what no template reads (the request id, the
# server's uuid) and the whole input (walk): those must key the memo too.
OPERATOR = '''package xhv

import rego.v1

deny contains {"rule": "no-bad-requests", "msg": "the bad request"} if {
    input.request_id == "req-bad"
}

warn contains {"rule": "uuid-watch", "msg": "watched server"} if {
    input.server.uuid == "uuid-watched"
}

warn contains {"rule": "deep-secret", "msg": "a secret anywhere"} if {
    walk(input, [_, "s3cret"])
}
'''


def fresh(rules=tables.RULES, modules=None, size=engine.MEMO_SIZE):
    return engine.Policy(engine.normalize_rules({'rules': rules}),
                         modules or {}, memo_size=size)


def summary(decision):
    return (decision.digest, [(v.rule, v.enforcement, v.msg) for v in
                              decision.deny + decision.warn +
                              decision.dryrun])


@pytest.fixture(scope='module')
def pair():
    """(memoised policy, the same policy deciding from scratch)."""
    return (fresh(modules={'mine.rego': OPERATOR}),
            fresh(modules={'mine.rego': OPERATOR}, size=0))


def test_paths_are_static_or_the_whole_input():
    assert memo.input_paths({'a': 'x := input.server.tags[i]\n'
                                  'y := input["caller"].roles\n'
                                  'z := object.get(input, ["a", "b"], 1)'}) \
        == {('server', 'tags'), ('caller', 'roles'), ('a', 'b')}
    for text in ('some k, v in input', 'x := input[k]', 'f(input)',
                 'import input as i', '# the input document',
                 'x := object.get(input, k, 1)'):
        assert memo.input_paths({'m': text}) == {memo.WHOLE}, text
    assert memo.input_paths({'m': 'x := input.a\ny := input.a.b'}) == {
        ('a',)}


def test_projection_tells_absent_null_and_value_apart():
    paths = {('destination', 'family')}
    keys = {str(memo.projection(document, paths)) for document in (
        {}, {'destination': None}, {'destination': {}},
        {'destination': {'family': None}},
        {'destination': {'family': 'kvm'}}, {'destination': ['kvm']})}
    assert len(keys) == 6


def test_nondeterministic_builtins_turn_the_memo_off():
    policy = fresh(modules={'clock.rego': '''package xhv

import rego.v1

warn contains "late" if time.now_ns() > 0
'''})
    assert not policy.memo.enabled
    assert fresh().memo.enabled


@pytest.mark.parametrize('index', range(len(ALL_CASES)))
def test_each_table_case_same_with_memo_and_split(pair, index):
    cached, scratch = pair
    document = ALL_CASES[index]
    want = summary(scratch.decide(document))
    assert summary(cached.decide(document)) == want
    assert summary(cached.decide(document)) == want  # a hit now
    # The same request among other destinations, decided per request.
    others = [tables.KVM, tables.VMW, None, document['destination']]
    each = cached.decide_each(document, others)
    each_scratch = scratch.decide_each(document, others)
    assert summary(each[3]) == want
    for got, destination in zip(each, others):
        alone = scratch.decide(dict(document, destination=destination))
        assert summary(got) == summary(alone)
    assert [summary(d) for d in each] == [summary(d) for d in each_scratch]


def test_no_input_ever_gets_another_inputs_decision():
    """Every combination of what the rules read, in a shuffled order."""
    cached = fresh(modules={'mine.rego': OPERATOR})
    scratch = fresh(modules={'mine.rego': OPERATOR}, size=0)
    hosts = [tables.KVM, tables.VMW, tables.VMW_TLS, tables.FAKE, None,
             tables.host('k1', 'kvm', accepts=[])]
    documents = []
    for action, project, roles, tags, props, request_id, uuid in \
            itertools.product(
                ('boot', 'move'), (tables.P1, tables.P2, tables.P3),
                (('member',), ('admin',)), ((), ('pci',)),
                (None, {'os_secure_boot': 'required'},
                 {'note': 's3cret'}),
                ('req-ok', 'req-bad'), ('uuid-1', 'uuid-watched')):
        for source, destination in ((None, random.Random(len(documents))
                                     .choice(hosts)),
                                    (tables.KVM, tables.VMW)):
            document = inputs.document(
                action, inputs.caller(roles, project),
                inputs.server(uuid, project, tags, {}, 'm1', {}, props),
                source, destination, point='scheduler',
                request_id=request_id)
            documents.append(document)
    order = list(range(len(documents))) * 2
    random.Random(23).shuffle(order)
    for index in order:
        assert summary(cached.decide(documents[index])) == summary(
            scratch.decide(documents[index])), documents[index]
    assert cached.memo.hits > 0 and cached.memo.misses > 0
    # Every kind of answer came up, so the comparison meant something.
    rules = {rule for index in order for rule in
             cached.decide(documents[index]).rule_ids}
    assert {'no-bad-requests', 'uuid-watch', 'deep-secret', 'matrix',
            'p1-kvm-only', 'pci-admin-kvm-to-vmware'} <= rules


def test_a_forged_applicable_list_is_ignored(pair):
    cached, scratch = pair
    document = tables.doc('boot', dest=tables.VMW)
    forged = dict(document, **{engine.APPLICABLE_KEY: {}})
    assert [v.rule for v in cached.decide(forged).deny] == ['p1-kvm-only']
    # A member's move of a pci server, told only an unrelated rule applies.
    move = tables.doc('move', project=tables.P3, tags=['pci'],
                      source=tables.KVM)
    forged = dict(move, **{engine.APPLICABLE_KEY: {
        'scoped_moves': ['gpu-flavors']}})
    each = cached.decide_each(forged, [tables.KVM, tables.VMW])
    assert [d.rule_ids for d in each] == [
        ['pci-admin-kvm-to-vmware'],
        ['matrix', 'pci-admin-kvm-to-vmware', 'tls-exchange']]
    assert [summary(d) for d in each] == [
        summary(scratch.decide(dict(move, destination=d)))
        for d in (tables.KVM, tables.VMW)]


def test_a_changed_policy_never_answers_from_the_old_memo():
    document = tables.doc('boot', dest=tables.VMW)
    first = fresh()
    assert not first.decide(document).allowed
    relaxed = [dict(r, enforcement='warn') if r['id'] == 'p1-kvm-only'
               else r for r in tables.RULES]
    second = fresh(rules=relaxed)
    assert second.digest != first.digest
    decision = second.decide(document)
    assert decision.allowed and decision.warn[0].rule == 'p1-kvm-only'


def test_callers_cannot_change_a_remembered_decision(pair):
    cached, _scratch = pair
    document = tables.doc('boot', dest=tables.VMW)
    cached.decide(document).deny.clear()
    assert [v.rule for v in cached.decide(document).deny] == ['p1-kvm-only']


def test_the_memo_is_bounded():
    policy = fresh(size=3)
    for project in ('a', 'b', 'c', 'd', 'e'):
        policy.decide(tables.doc('boot', project=project, dest=tables.KVM))
    assert len(policy.memo) == 3


def test_enforcer_decide_each_fails_closed(tmp_path):
    broken = tmp_path / 'policy.yaml'
    broken.write_text('rules: [oops\n')
    checker = enforcer.Enforcer(str(broken), str(tmp_path))
    decisions = checker.decide_each(tables.doc('boot'),
                                    [tables.KVM, tables.VMW])
    assert [d.deny[0].rule for d in decisions] == [engine.UNAVAILABLE] * 2


def test_escaping_fast_path_is_what_json_writes():
    alphabet = ['a', '"', '\\', '\n', '\x00', '\x1f', '\x7f', '\u2028',
                '\u00e9', ' ', '\t', '/']
    chance = random.Random(23)
    for _ in range(5000):
        text = ''.join(chance.choice(alphabet)
                       for _ in range(chance.randint(0, 6)))
        assert engine._escaped(text) == json.dumps(
            text, ensure_ascii=False)[1:-1], repr(text)


def test_match_blocks_on_odd_servers():
    """Null or missing server fields select no rule that asks for them."""
    rules = [{'id': 'meta', 'template': 'required_capabilities',
              'match': {'metadata': {'k': 'v'}},
              'parameters': {'capabilities': ['x']}},
             {'id': 'tagged', 'template': 'required_capabilities',
              'match': {'tags': ['t']}, 'parameters': {'capabilities': ['x']}}]
    policy = fresh(rules=rules)
    for server in ({'metadata': None, 'tags': None}, {}, None,
                   {'metadata': {'k': 'v'}, 'tags': ['t']},
                   {'metadata': ['k'], 'tags': 't'}):
        document = {'action': 'boot', 'server': server,
                    'destination': {'family': 'kvm', 'capabilities': []}}
        got = policy.decide(document).rule_ids
        each = policy.decide_each(document, [document['destination']] * 2)
        assert [d.rule_ids for d in each] == [got, got]
        want = ['meta', 'tagged'] if server and server.get('tags') == [
            't'] else []
        assert got == want, server
