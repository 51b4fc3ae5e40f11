"""Loading the policy: v1 only, parameters checked, digest, fail closed."""

import os

import pytest

from nova_xhv.policy import enforcer
from nova_xhv.policy import engine
from nova_xhv.policy import inputs
from nova_xhv.policy import regov1

V0_MODULES = [
    ('partial set', 'package xhv\ndeny[msg] {\n  msg := "x"\n}\n'),
    ('boolean rule', 'package xhv\nallow {\n  true\n}\n'),
    ('value rule', 'package xhv\np = 1 { input.a }\n'),
    ('assigned value rule', 'package xhv\np := x { x := 1 }\n'),
    ('function', 'package xhv\nf(x) = y { y := x }\n'),
    ('else without if', 'package xhv\nimport rego.v1\n'
                        'p := 1 if { input.a } else { true }\n'),
    ('second body', 'package xhv\nimport rego.v1\np if { 1 } { 2 }\n'),
    ('partial object', 'package xhv\np[k] = v { k := 1; v := 2 }\n'),
    ('no package', 'import rego.v1\np if { true }\n'),
    ('unbalanced', 'package xhv\nimport rego.v1\np if { true \n'),
    ('with in an enforcement module',
     'package xhv\nimport rego.v1\np if { q with input as {} }\n'),
]

V1_MODULES = [
    ('contains', 'package xhv\nimport rego.v1\n'
                 'deny contains {"rule": "r", "msg": "m"} if input.a\n'),
    ('literal values', 'package xhv.mine\nimport rego.v1\np := {"a": 1}\n'
                       's := {1, 2} | {3}\nq := [x | some x in [1]]\n'),
    ('else chain', 'package xhv.mine\nimport rego.v1\n'
                   'p := 1 if { input.a } else := 2\n'),
    ('function', 'package xhv.mine\nimport rego.v1\n'
                 'f(x) := y if { y := x }\n'),
    ('braces in strings and comments',
     'package xhv.mine\nimport rego.v1\n# deny[x] { }\n'
     'p := "deny[x] { }" if { true }\nr := `a { b }`\n'),
]


@pytest.mark.parametrize('name,text', V0_MODULES,
                         ids=[m[0] for m in V0_MODULES])
def test_non_v1_modules_are_refused(name, text):
    with pytest.raises(regov1.NotRegoV1):
        regov1.check('m.rego', text)
    with pytest.raises(engine.PolicyError, match='m.rego'):
        engine.Policy([], {'m.rego': text})


@pytest.mark.parametrize('name,text', V1_MODULES,
                         ids=[m[0] for m in V1_MODULES])
def test_v1_modules_load(name, text):
    assert regov1.check('m.rego', text).startswith('xhv')
    engine.Policy([], {'m.rego': text})


BAD_POLICIES = [
    ('unknown template', {'rules': [{'id': 'a', 'template': 'nope'}]},
     'unknown template'),
    ('misspelt parameter', {'rules': [{
        'id': 'a', 'template': 'project_placement',
        'parameters': {'familes': ['kvm']}}]}, "no parameter 'familes'"),
    ('missing parameter', {'rules': [{'id': 'a', 'template': 'move_matrix'}]},
     "needs parameter 'allow'"),
    ('wrong type', {'rules': [{'id': 'a', 'template': 'project_placement',
                               'parameters': {'families': 'kvm'}}]},
     'list of non-empty strings'),
    ('bad edge', {'rules': [{'id': 'a', 'template': 'move_matrix',
                             'parameters': {'allow': [{'form': 'kvm'}]}}]},
     'from, to, roles'),
    ('bad enforcement', {'rules': [{
        'id': 'a', 'template': 'move_matrix', 'enforcement': 'block',
        'parameters': {'allow': []}}]}, 'enforcement must be'),
    ('duplicate id', {'rules': [
        {'id': 'a', 'template': 'move_matrix', 'parameters': {'allow': []}},
        {'id': 'a', 'template': 'move_matrix', 'parameters': {'allow': []}}]},
     'used twice'),
    ('default id reused', {'rules': [{
        'id': 'xhv-new-boot-families', 'template': 'pinned_image_boot'}]},
     'used twice'),
    ('bad id', {'rules': [{'id': 'a b', 'template': 'move_matrix'}]},
     '"id" must be'),
    ('unknown match key', {'rules': [{
        'id': 'a', 'template': 'move_matrix', 'match': {'tag': ['x']},
        'parameters': {'allow': []}}]}, "unknown match key 'tag'"),
    ('unknown action', {'rules': [{
        'id': 'a', 'template': 'move_matrix', 'match': {'actions': ['fly']},
        'parameters': {'allow': []}}]}, "unknown action 'fly'"),
    ('scoped without scope', {'rules': [{
        'id': 'a', 'template': 'scoped_moves', 'parameters': {'allow': []}}]},
     'needs a match block'),
    ('unknown top key', {'rule': []}, "unknown top-level key 'rule'"),
    ('not a mapping', ['rules'], 'must be a mapping'),
]


@pytest.mark.parametrize('name,document,message', BAD_POLICIES,
                         ids=[b[0] for b in BAD_POLICIES])
def test_bad_policies_are_refused_with_the_reason(name, document, message):
    with pytest.raises(engine.PolicyError) as caught:
        engine.normalize_rules(document)
    assert message in str(caught.value)


def test_every_error_is_reported_at_once():
    with pytest.raises(engine.PolicyError) as caught:
        engine.normalize_rules({'rules': [
            {'id': 'a', 'template': 'nope'},
            {'id': 'b', 'template': 'move_matrix'}]})
    assert len(caught.value.errors) == 2


def test_reserved_packages_are_refused():
    with pytest.raises(engine.PolicyError, match="XHV's own"):
        engine.Policy([], {'m.rego': 'package xhv.templates.move_matrix\n'
                                     'import rego.v1\nx := 1\n'})


def write(folder, name, text):
    path = os.path.join(folder, name)
    with open(path, 'w') as f:
        f.write(text)
    return path


def test_operator_modules_add_to_deny_and_warn(tmp_path):
    policy_dir = tmp_path / 'policy.d'
    policy_dir.mkdir()
    write(policy_dir, 'mine.rego', '''package xhv
import rego.v1

deny contains {"rule": "no-friday-moves", "msg": "not on friday"} if {
    input.action == "move"
    input.server.metadata.day == "friday"
}

warn contains "plain message" if input.server.metadata.day == "monday"
''')
    policy = engine.Policy.from_files(str(tmp_path / 'absent.yaml'),
                                      str(policy_dir))
    server = inputs.server('u', 'p', metadata={'day': 'friday'})
    decision = policy.decide(inputs.document('move', inputs.caller(),
                                             server))
    assert [v.rule for v in decision.deny] == ['no-friday-moves']
    server = inputs.server('u', 'p', metadata={'day': 'monday'})
    decision = policy.decide(inputs.document('boot', inputs.caller(),
                                             server))
    assert decision.allowed
    assert [(v.rule, v.msg) for v in decision.warn] == [
        (engine.OPERATOR_RULE, 'plain message')]


def test_digest_names_the_content(tmp_path):
    policy_file = write(tmp_path, 'policy.yaml', 'rules:\n- id: a\n'
                        '  template: move_matrix\n  parameters:\n'
                        '    allow: []\n')
    first = engine.Policy.from_files(policy_file, str(tmp_path / 'none'))
    again = engine.Policy.from_files(policy_file, str(tmp_path / 'none'))
    assert first.digest == again.digest and len(first.digest) == 64
    write(tmp_path, 'policy.yaml', 'rules:\n- id: a\n'
          '  template: move_matrix\n  enforcement: warn\n  parameters:\n'
          '    allow: []\n')
    changed = engine.Policy.from_files(policy_file, str(tmp_path / 'none'))
    assert changed.digest != first.digest


def test_operator_tests_run(tmp_path):
    write(tmp_path, 'mine_test.rego', '''package xhv.mine_test
import rego.v1

test_passes if { 1 == 1 }

test_fails if { 1 == 2 }
''')
    policy = engine.Policy.from_files(None, str(tmp_path))
    results = {path: passed for _m, path, passed, _d in policy.run_tests()}
    assert results == {'data.xhv.mine_test.test_passes': True,
                       'data.xhv.mine_test.test_fails': False}
    # Test modules never take part in decisions.
    assert 'mine_test.rego' not in policy.modules


def test_fail_closed_refuses_and_fail_open_warns(tmp_path):
    policy_file = write(tmp_path, 'policy.yaml', 'rules: [oops\n')
    document = inputs.document('boot', inputs.caller(), inputs.server())
    closed = enforcer.Enforcer(policy_file, str(tmp_path), fail_closed=True)
    decision = closed.decide(document)
    assert not decision.allowed
    assert decision.deny[0].rule == engine.UNAVAILABLE
    opened = enforcer.Enforcer(policy_file, str(tmp_path),
                               fail_closed=False)
    decision = opened.decide(document)
    assert decision.allowed and decision.warn[0].rule == engine.UNAVAILABLE


def test_missing_files_mean_the_default_rules(tmp_path):
    loaded = enforcer.Enforcer(str(tmp_path / 'no.yaml'),
                               str(tmp_path / 'no.d'))
    assert loaded.policy is not None
    assert [r['id'] for r in loaded.policy.rules] == [
        'xhv-accepted-source-families', 'xhv-new-boot-families']
