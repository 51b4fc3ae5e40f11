"""Remote failures become Nova exceptions naming the call and the cloud."""

from keystoneauth1 import exceptions as ks_exc
from nova import exception
from openstack import exceptions as sdk_exc
import pytest
import requests

from nova_xhv.backends.cloud import errors


def _http(status, message):
    response = requests.Response()
    response.status_code = status
    response._content = b''
    return sdk_exc.HttpException(message=message, response=response,
                                 details=message)


def _raised(exc, call='POST /servers'):
    with pytest.raises(Exception) as raised:
        with errors.remote_call('east', call):
            raise exc
    return raised.value


@pytest.mark.parametrize('status,message', [
    (403, 'Quota exceeded for cores: Requested 4, but already used 8 of 8 '
          'cores'),
    (403, "Maximum number of ports exceeded (OverQuota)"),
    (413, 'Over limit'),
    # Neutron's OverQuota (a remote port).
    (409, "Quota exceeded for resources: ['port']."),
])
def test_a_quota_refusal_makes_nova_reschedule(status, message):
    mapped = _raised(_http(status, message))
    assert isinstance(mapped, errors.RemoteQuotaExceeded)
    # What Nova's compute manager turns into RescheduledException.
    assert isinstance(mapped, exception.ComputeResourcesUnavailable)
    assert 'east' in str(mapped) and 'POST /servers' in str(mapped)
    assert 'quota' in str(mapped).lower()


def test_a_forbidden_call_that_is_no_quota_does_not_reschedule():
    mapped = _raised(_http(403, 'Policy does not allow compute:servers:'
                                'create to be performed.'))
    assert type(mapped) is errors.RemoteCloudError
    assert not isinstance(mapped, exception.ComputeResourcesUnavailable)
    assert 'HTTP 403' in str(mapped) and 'Policy does not allow' in \
        str(mapped)


@pytest.mark.parametrize('exc,cls', [
    (ks_exc.ConnectFailure('Unable to establish connection to '
                           'https://east:5000'),
     errors.RemoteCloudUnreachable),
    (ks_exc.SSLError('certificate verify failed'),
     errors.RemoteCloudUnreachable),
    (ks_exc.Unauthorized('The request you have made requires '
                         'authentication.'), errors.RemoteCloudAuthFailed),
    (_http(401, 'unauthorized'), errors.RemoteCloudAuthFailed),
    (sdk_exc.ResourceTimeout('Timeout waiting for the server'),
     errors.RemoteCloudTimeout),
    (_http(500, 'Unexpected API Error'), errors.RemoteCloudError),
    (_http(409, 'Cannot stop while the instance is in this state'),
     errors.RemoteCloudError),
    (sdk_exc.SDKException('something else'), errors.RemoteCloudError),
])
def test_remote_failures_are_nova_exceptions_naming_call_and_cloud(exc, cls):
    mapped = _raised(exc, call='POST /servers/abc/action os-stop')
    assert type(mapped) is cls
    assert isinstance(mapped, exception.NovaException)
    assert 'east' in str(mapped)
    assert 'os-stop' in str(mapped)
    assert mapped.__cause__ is exc


def test_a_long_remote_message_is_cut_short():
    mapped = _raised(_http(500, 'x' * 5000))
    assert len(str(mapped)) < errors.MAX_REASON + 200


def test_bugs_are_not_disguised():
    with pytest.raises(KeyError):
        with errors.remote_call('east', 'GET /limits'):
            raise KeyError('ours')


def test_nova_exceptions_pass_unchanged():
    original = exception.InstanceNotFound(instance_id='x')
    assert _raised(original) is original


class _Server(object):
    id = 'abc'

    def __init__(self, message):
        self.fault = {'message': message}


def test_a_remote_no_valid_host_makes_nova_reschedule():
    mapped = errors.server_fault('east', 'POST /servers', _Server(
        'No valid host was found. There are not enough hosts available.'))
    assert isinstance(mapped, exception.ComputeResourcesUnavailable)
    assert 'east' in str(mapped)


def test_another_remote_fault_is_named():
    mapped = errors.server_fault('east', 'POST /servers',
                                 _Server('Build of instance x aborted'))
    assert type(mapped) is errors.RemoteCloudError
    assert 'aborted' in str(mapped)


class _Flaky(object):
    """A remote read that fails ``failures`` times with ``exc``."""

    def __init__(self, failures, exc):
        self.failures = failures
        self.exc = exc
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return 'answer'


def _reader():
    from nova_xhv.backends.cloud import backend
    reader = backend.CloudBackend.__new__(backend.CloudBackend)
    reader.cloud = 'east'
    return reader


def test_a_read_is_repeated_after_a_transient_failure():
    read = _Flaky(2, _http(500, 'Unexpected API Error'))
    assert _reader()._read('GET /servers/x', read) == 'answer'
    assert read.calls == 3


def test_a_read_that_keeps_failing_raises_the_mapped_error():
    from nova_xhv.backends.cloud import backend
    read = _Flaky(99, ks_exc.ConnectFailure('reset by peer'))
    with pytest.raises(errors.RemoteCloudUnreachable):
        _reader()._read('GET /servers/x', read)
    assert read.calls == backend.READ_ATTEMPTS


def test_a_read_refused_for_good_is_not_repeated():
    read = _Flaky(99, _http(403, 'Policy does not allow'))
    with pytest.raises(errors.RemoteCloudError):
        _reader()._read('GET /servers/x', read)
    assert read.calls == 1
