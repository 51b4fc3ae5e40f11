"""nova-api's admission filter: the host classes it reads, and when.

The real filter and policy; only the database read of the cloud's host
classes (nova_xhv.api.admission.host_classes, which Nova's harness covers
in tests/functional/migration/test_policy.py) is replaced by a list the
test changes, counting the reads.
"""

import types

import pytest

from nova_xhv.api import admission
from nova_xhv.policy import enforcer
from nova_xhv.policy import inputs

POLICY = '''rules:
  - id: pci-to-fake-only
    template: scoped_moves
    match: {tags: [pci]}
    parameters:
      allow: [{from: vmware, to: fake}]
'''


class Cloud(object):
    """The host classes the "database" holds now, and how often read."""

    def __init__(self, *families):
        self.families = list(families)
        self.reads = 0

    def __call__(self, context):
        self.reads += 1
        return [inputs.host(None, family, accepts=['vmware', 'fake'])
                for family in self.families]


@pytest.fixture
def gate(tmp_path, monkeypatch):
    (tmp_path / 'policy.yaml').write_text(POLICY)
    cloud = Cloud('vmware')
    monkeypatch.setattr(admission, 'host_classes', cloud)
    # Every refusal reads again (test_refusals_read_at_most_once_a_second
    # sets it back).
    monkeypatch.setattr(admission, 'REFUSAL_FRESHNESS', 0.0)
    filter_ = admission.PolicyAdmission.__new__(admission.PolicyAdmission)
    filter_.application = None
    filter_.policy = enforcer.Enforcer(str(tmp_path / 'policy.yaml'),
                                       str(tmp_path / 'policy.d'),
                                       point='api')
    filter_._classes = None
    filter_._classes_at = 0.0
    filter_._lock = admission.threading.Lock()
    filter_.classes_read = 0
    return filter_, cloud


CONTEXT = types.SimpleNamespace(roles=['member'], project_id='p',
                                user_id='u', request_id='req-1')


def move(filter_, tags):
    return filter_._decide_anywhere(
        CONTEXT, 'move', inputs.server('uuid-1', 'p', tags),
        inputs.host('src', 'vmware'), None)


def test_allowed_requests_reuse_the_classes(gate):
    filter_, cloud = gate
    cloud.families.append('fake')
    for _ in range(5):
        assert move(filter_, ['pci']) is None
        assert move(filter_, []) is None
    assert cloud.reads == 1


def test_a_refusal_reads_the_classes_again(gate):
    filter_, cloud = gate
    assert move(filter_, []) is None  # read once, cached
    refusal = move(filter_, ['pci'])
    assert 'pci-to-fake-only' in refusal
    assert 'wherever it would go' in refusal
    assert cloud.reads == 2


def test_a_compute_added_a_moment_ago_is_seen(gate):
    filter_, cloud = gate
    assert move(filter_, ['pci']) is not None  # only vmware: refused
    assert cloud.reads == 1
    cloud.families.append('fake')  # a fake-family compute joins
    assert move(filter_, ['pci']) is None  # cached list denied: re-read
    assert cloud.reads == 2
    assert move(filter_, ['pci']) is None  # the new list lets it through
    assert cloud.reads == 2


def test_stale_classes_are_read_again(gate, monkeypatch):
    filter_, cloud = gate
    assert move(filter_, []) is None
    monkeypatch.setattr(admission, 'CLASSES_TTL', 0.0)
    assert move(filter_, []) is None
    assert cloud.reads == 2


def test_refusals_read_at_most_once_a_second(gate, monkeypatch):
    filter_, cloud = gate
    monkeypatch.setattr(admission, 'REFUSAL_FRESHNESS', 3600.0)
    for _ in range(5):
        assert move(filter_, ['pci']) is not None
    assert cloud.reads == 1  # the first read was fresh enough for all
    cloud.families.append('fake')
    assert move(filter_, ['pci']) is not None  # within the window
    monkeypatch.setattr(admission, 'REFUSAL_FRESHNESS', 0.0)
    assert move(filter_, ['pci']) is None  # after it: read, and seen
    assert cloud.reads == 2
