"""Remote failures as Nova exceptions naming the remote call and the cloud.

Every call to the remote cloud runs inside ``remote_call(cloud, call)``:
openstacksdk and keystoneauth exceptions leave it as one of the classes
below.  A refusal for quota (HTTP 403/409/413 naming a quota; Neutron's
OverQuota is a 409) and a remote
"no valid host" become ``ComputeResourcesUnavailable``, which Nova's
compute manager turns into ``RescheduledException``: the build goes to
another host.  Messages carry the remote status and reason, cut short,
never the request's credentials.
"""

import contextlib
import re

from nova import exception

# What remote services say when a quota refuses a request (Nova's
# OverQuota / "Quota exceeded", Glance's and Cinder's wording alike).
_QUOTA = re.compile(r'quota|over ?limit|limit exceeded', re.IGNORECASE)
_NO_VALID_HOST = re.compile(r'no valid host', re.IGNORECASE)
MAX_REASON = 400


class RemoteCloudError(exception.NovaException):
    msg_fmt = ('Remote cloud %(cloud)s failed %(call)s: %(reason)s')


class RemoteCloudUnreachable(RemoteCloudError):
    msg_fmt = ('Remote cloud %(cloud)s could not be reached for '
               '%(call)s: %(reason)s')


class RemoteCloudAuthFailed(RemoteCloudError):
    msg_fmt = ('Remote cloud %(cloud)s refused the credentials of its '
               'clouds.yaml entry for %(call)s: %(reason)s')


class RemoteCloudTimeout(RemoteCloudError):
    msg_fmt = ('Remote cloud %(cloud)s did not finish %(call)s in time: '
               '%(reason)s')


class RemoteQuotaExceeded(exception.ComputeResourcesUnavailable):
    # A subclass of what makes Nova reschedule a build.
    msg_fmt = ('Remote cloud %(cloud)s refused %(call)s for quota: '
               '%(reason)s')


class RemoteNoCapacity(exception.ComputeResourcesUnavailable):
    msg_fmt = ('Remote cloud %(cloud)s has no room for %(call)s: '
               '%(reason)s')


class RemoteConfigError(exception.NovaException):
    msg_fmt = ('The XHV cloud backend cannot use remote cloud %(cloud)s: '
               '%(reason)s')


def _short(text):
    text = ' '.join(str(text or '').split())
    return text if len(text) <= MAX_REASON else text[:MAX_REASON] + '...'


def status_of(exc):
    for name in ('status_code', 'http_status'):
        value = getattr(exc, name, None)
        if isinstance(value, int):
            return value
    return None


def _remote_message(exc):
    """The remote's own explanation: the body's message when there is one."""
    details = getattr(exc, 'details', None)
    message = details if details else str(exc)
    return _short(message)


def translate(exc, cloud, call):
    """The Nova exception for ``exc``, raised by ``call`` on ``cloud``.

    ``exc`` is an openstacksdk or keystoneauth exception; anything else is
    returned unchanged (bugs stay visible).
    """
    from keystoneauth1 import exceptions as ks_exc
    from openstack import exceptions as sdk_exc

    if isinstance(exc, exception.NovaException):
        return exc
    kwargs = {'cloud': cloud, 'call': call}
    if isinstance(exc, sdk_exc.ResourceTimeout):
        return RemoteCloudTimeout(reason=_short(exc), **kwargs)
    if isinstance(exc, (ks_exc.ConnectionError, ks_exc.DiscoveryFailure,
                        ks_exc.EndpointNotFound)):
        return RemoteCloudUnreachable(reason=_short(exc), **kwargs)
    if isinstance(exc, ks_exc.Unauthorized):
        return RemoteCloudAuthFailed(reason=_short(exc), **kwargs)
    status = status_of(exc)
    if isinstance(exc, (sdk_exc.HttpException, ks_exc.HttpError)) or \
            status is not None:
        message = _remote_message(exc)
        if status == 401:
            return RemoteCloudAuthFailed(reason=message, **kwargs)
        if status in (403, 409, 413) and _QUOTA.search(message):
            return RemoteQuotaExceeded(reason=message, **kwargs)
        return RemoteCloudError(reason='HTTP %s: %s' % (status, message),
                                **kwargs)
    if isinstance(exc, (sdk_exc.SDKException, ks_exc.ClientException)):
        return RemoteCloudError(reason=_short(exc), **kwargs)
    return exc


def server_fault(cloud, call, server):
    """The exception for a remote server that went to ERROR."""
    fault = getattr(server, 'fault', None) or {}
    message = _short(fault.get('message') or 'no fault recorded')
    if _NO_VALID_HOST.search(message):
        return RemoteNoCapacity(cloud=cloud, call=call, reason=message)
    return RemoteCloudError(cloud=cloud, call=call,
                            reason='the remote server went to ERROR: %s'
                                   % message)


def is_not_found(exc):
    from openstack import exceptions as sdk_exc
    return isinstance(exc, sdk_exc.NotFoundException) or \
        status_of(exc) == 404


@contextlib.contextmanager
def remote_call(cloud, call):
    """Run a remote call; its failures leave as Nova exceptions."""
    try:
        yield
    except Exception as exc:
        mapped = translate(exc, cloud, call)
        if mapped is exc:
            raise
        raise mapped from exc
