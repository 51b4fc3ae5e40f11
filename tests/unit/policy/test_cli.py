"""xhv-policy check and test, as an operator runs them (a child process)."""

import os
import subprocess
import sys

CHECK_OK = '''rules:
  - id: pci-admin-only
    template: scoped_moves
    enforcement: warn
    match: {tags: [pci]}
    parameters:
      allow: [{from: kvm, to: vmware, roles: [admin]}]
'''

OPERATOR_TEST = '''package xhv.mine_test

import rego.v1

import data.xhv.mine

test_helper if mine.is_gpu({"resources:VGPU": "1"})

test_wrong if mine.is_gpu({})
'''

OPERATOR_MODULE = '''package xhv.mine

import rego.v1

is_gpu(specs) if specs["resources:VGPU"]
'''

CASES = '''cases:
  - name: member move of a pci server warns
    input:
      action: move
      caller: {roles: [member]}
      server: {tags: [pci], metadata: {}, flavor: {extra_specs: {}},
               image: {properties: {}}}
      source: {family: kvm}
      destination: {family: vmware, accepts: [kvm]}
    warn: [pci-admin-only]
    deny: []
  - name: admin move passes (wrongly expected to warn)
    input:
      action: move
      caller: {roles: [admin]}
      server: {tags: [pci], metadata: {}, flavor: {extra_specs: {}},
               image: {properties: {}}}
      source: {family: kvm}
      destination: {family: vmware, accepts: [kvm]}
    warn: [pci-admin-only]
'''

CRASHING_TEST = '''package xhv.crash_test

import rego.v1

p contains x if {
    some x in data.xhv.rules.move_matrix
    x > input.min
}

test_crash if {
    p == {5} with input as {"min": 0} with data.xhv.rules.move_matrix as [5]
}
'''


def run(*args):
    return subprocess.run(
        [sys.executable, '-m', 'nova_xhv.cmd.policy'] + list(args),
        capture_output=True, text=True, timeout=120)


def files(tmp_path, policy_text, modules=None):
    policy_file = tmp_path / 'policy.yaml'
    policy_file.write_text(policy_text)
    policy_dir = tmp_path / 'policy.d'
    policy_dir.mkdir()
    for name, text in (modules or {}).items():
        (policy_dir / name).write_text(text)
    return ['--policy-file', str(policy_file), '--policy-dir',
            str(policy_dir)]


def test_check_prints_the_digest_and_the_rules(tmp_path):
    result = run(*files(tmp_path, CHECK_OK), 'check')
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith('valid policy ') and len(lines[0]) == 13 + 64
    assert 'pci-admin-only' in result.stdout


def test_check_lists_every_error(tmp_path):
    result = run(*files(tmp_path, 'rules:\n- {id: a, template: nope}\n', {
        'old.rego': 'package xhv\ndeny[msg] { msg := "x" }\n'}), 'check')
    assert result.returncode == 1
    assert "unknown template 'nope'" in result.stdout
    assert 'old.rego line 2: a rule body without "if"' in result.stdout


def test_test_runs_the_operators_rules_and_cases(tmp_path):
    result = run(*files(tmp_path, CHECK_OK, {
        'mine.rego': OPERATOR_MODULE, 'mine_test.rego': OPERATOR_TEST,
        'pci_test.yaml': CASES}), 'test')
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'PASS data.xhv.mine_test.test_helper' in result.stdout
    assert 'FAIL data.xhv.mine_test.test_wrong' in result.stdout
    assert 'PASS member move of a pci server warns' in result.stdout
    assert ("FAIL admin move passes (wrongly expected to warn) "
            "(pci_test.yaml): warn: want ['pci-admin-only'], got []"
            in result.stdout)
    assert '2 passed, 2 failed' in result.stdout


def test_an_engine_crash_is_reported_not_shared(tmp_path):
    # rego-cpp 1.5 segfaults on this "with"; only the child dies.
    result = run(*files(tmp_path, CHECK_OK, {
        'crash_test.rego': CRASHING_TEST}), 'test')
    assert result.returncode == 2
    assert 'the Rego engine crashed (signal 11)' in result.stdout


def test_test_without_tests_fails(tmp_path):
    result = run(*files(tmp_path, CHECK_OK), 'test')
    assert result.returncode == 1
    assert 'no tests found' in result.stdout


def test_console_script_is_installed():
    script = os.path.join(os.path.dirname(sys.executable), 'xhv-policy')
    assert os.access(script, os.X_OK), 'reinstall: pip install .'


def test_the_sample_policy_is_valid_and_its_cases_pass():
    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))))
    paths = ['--policy-file', os.path.join(root, 'etc', 'xhv',
                                           'policy.yaml'),
             '--policy-dir', os.path.join(root, 'etc', 'xhv', 'policy.d')]
    result = run(*paths, 'check')
    assert result.returncode == 0, result.stdout
    result = run(*paths, 'test')
    assert result.returncode == 0, result.stdout
    assert '0 failed' in result.stdout
