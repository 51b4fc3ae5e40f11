"""The destination's exchange endpoint re-checks a move against its policy.

A real endpoint (plain HTTP on 127.0.0.1) with a DestinationStager, and
the signed client a source uses: the policy claim travels in the signed
body, so a compute whose policy differs refuses with 409 before anything
is staged, and a move its policy denies gets 403 with the rule id.
"""

import pytest

from nova_xhv.migration import client as exchange_client
from nova_xhv.migration import destination_side
from nova_xhv.migration import exchange
from nova_xhv.policy import enforcer
from nova_xhv.policy import inputs
from tests.unit.migration import test_destination_side as dest_tests

SECRET = 'policy-test-secret'


def _policy(tmp_path, name, rules_yaml):
    folder = tmp_path / name
    folder.mkdir()
    (folder / 'policy.yaml').write_text(rules_yaml)
    return enforcer.Enforcer(str(folder / 'policy.yaml'),
                             str(folder / 'policy.d'), point='exchange')


PCI = '''rules:
- id: pci-admin-only
  template: scoped_moves
  match: {tags: [pci]}
  parameters:
    allow: [{from: vmware, to: kvm, roles: [admin]}]
'''


@pytest.fixture
def endpoint(tmp_path):
    policy = _policy(tmp_path, 'dest', PCI)
    backend = dest_tests.RecordingBackend(str(tmp_path))
    stager = destination_side.DestinationStager(
        backend, str(tmp_path / 'state'), {}, {}, policy=policy)
    server = exchange.ExchangeServer(SECRET, bind_host='127.0.0.1', port=0,
                                     use_tls=False, control_handler=stager)
    server.start()
    yield server, policy, stager
    server.stop()


def _claim(policy, roles, tags=()):
    document = inputs.document(
        'move', inputs.caller(roles, 'p'), inputs.server('u-1', 'p', tags),
        inputs.host('src', 'vmware'), inputs.host('dst', 'kvm', accepts=[
            'vmware']), point='driver')
    return {'digest': policy.digest, 'input': document}


def _stage(server, claim):
    request = {'key': 'move-1', 'instance_uuid': 'u-1',
               'source_family': 'vmware', 'disks': [{}]}
    if claim is not None:
        request['policy'] = claim
    client = exchange_client.ExchangeClient(SECRET)
    return client.stage_start(server.url, request)


def test_a_different_digest_is_refused_409(endpoint, tmp_path):
    server, policy, stager = endpoint
    other = _policy(tmp_path, 'source', PCI + '- id: extra\n'
                    '  template: move_matrix\n  enforcement: warn\n'
                    '  parameters: {allow: []}\n')
    assert other.digest != policy.digest
    with pytest.raises(exchange_client.ExchangeError) as caught:
        _stage(server, _claim(other, ['admin']))
    assert caught.value.status == 409
    assert 'digest mismatch' in str(caught.value)
    assert policy.digest[:16] in str(caught.value)
    assert stager.journal.find('destination', 'u-1') == []


def test_no_claim_is_refused_409(endpoint):
    server, _policy_, _stager = endpoint
    with pytest.raises(exchange_client.ExchangeError) as caught:
        _stage(server, None)
    assert caught.value.status == 409


def test_a_denied_move_is_refused_403_with_the_rule(endpoint):
    server, policy, _stager = endpoint
    with pytest.raises(exchange_client.ExchangeError) as caught:
        _stage(server, _claim(policy, ['member'], tags=['pci']))
    assert caught.value.status == 403
    assert 'pci-admin-only' in str(caught.value)


def test_a_claim_for_another_family_is_refused(endpoint):
    server, policy, _stager = endpoint
    claim = _claim(policy, ['admin'])
    claim['input']['destination']['family'] = 'xen'
    with pytest.raises(exchange_client.ExchangeError) as caught:
        _stage(server, claim)
    assert caught.value.status == 403


def test_an_allowed_claim_is_staged(endpoint):
    server, policy, stager = endpoint
    reply = _stage(server, _claim(policy, ['admin'], tags=['pci']))
    assert reply['key'] == 'move-1'
    dest_tests._wait(stager, 'move-1')
    stager.stage_discard('move-1')
