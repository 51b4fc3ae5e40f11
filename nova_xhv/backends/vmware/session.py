"""One authenticated pyvmomi session with verified TLS, retries and
re-login.

Every API call of the backend goes through ``VSphereSession.run`` (or
``run_task``): transient transport errors are retried with backoff, an
expired session (NotAuthenticated) triggers a fresh login on the same SOAP
stub, so managed-object references held by callers stay usable, and vSphere
faults come out as Nova exceptions naming the fault.
"""

import http.client
import socket
import ssl
import threading
import time

from oslo_log import log as logging
from pyVim import connect
from pyVmomi import vim
from pyVmomi import vmodl

from nova_xhv.backends.vmware import errors

LOG = logging.getLogger(__name__)

# Errors after which the same call may succeed on a new connection.
TRANSIENT_ERRORS = (ConnectionError, socket.timeout, http.client.HTTPException,
                    ssl.SSLEOFError, TimeoutError)


class VSphereSession:

    def __init__(self, host, port=443, username=None, password=None,
                 ca_file=None, insecure=False, retries=3, retry_interval=2.0,
                 api_timeout=120, task_timeout=1800, poll_interval=0.5):
        if not host:
            raise errors.VSphereConfigError(
                detail='host is not set: set [xhv_vmware] host to the '
                       'vCenter or ESXi address')
        if not username or password is None:
            raise errors.VSphereConfigError(
                detail='username and password must be set in '
                       '[xhv_vmware]')
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.ca_file = ca_file
        self.insecure = insecure
        self.retries = retries
        self.retry_interval = retry_interval
        self.api_timeout = api_timeout
        self.task_timeout = task_timeout
        self.poll_interval = poll_interval
        self._si = None
        self._ssl_context = None
        self._lock = threading.Lock()

    @property
    def endpoint(self):
        return '%s:%s' % (self.host, self.port)

    # -- connection -------------------------------------------------------

    def ssl_context(self):
        """The TLS context of every connection (API and disk transfers)."""
        if self._ssl_context is None:
            if self.insecure:
                LOG.warning('[xhv_vmware] insecure = True: the certificate '
                            'of vCenter %s is NOT verified', self.endpoint)
                self._ssl_context = ssl._create_unverified_context()
            else:
                self._ssl_context = ssl.create_default_context(
                    cafile=self.ca_file or None)
        return self._ssl_context

    def connect(self):
        """Log in, retrying transient errors.

        Raises a clear error if the endpoint, the certificate or the
        credentials are wrong.
        """
        attempt = 0
        while True:
            try:
                self._si = connect.SmartConnect(
                    host=self.host, port=self.port, user=self.username,
                    pwd=self._password, sslContext=self.ssl_context(),
                    httpConnectionTimeout=self.api_timeout)
                break
            except vim.fault.InvalidLogin:
                raise errors.VSphereConnectionError(
                    endpoint=self.endpoint,
                    detail='vSphere rejected the login of user %r (fault '
                           'InvalidLogin): check [xhv_vmware] username and '
                           'password' % self.username)
            except ssl.SSLCertVerificationError as exc:
                raise errors.VSphereConnectionError(
                    endpoint=self.endpoint,
                    detail='TLS certificate verification failed (%s): set '
                           '[xhv_vmware] ca_file to the CA that signed the '
                           'vCenter certificate' % exc.verify_message)
            except (OSError,) + TRANSIENT_ERRORS as exc:
                if attempt >= self.retries:
                    raise errors.VSphereConnectionError(
                        endpoint=self.endpoint,
                        detail='cannot connect after %d attempt(s) (%s: %s): '
                               'check [xhv_vmware] host and port and that '
                               'vCenter is running'
                               % (attempt + 1, type(exc).__name__, exc))
                self._backoff(attempt, 'connect', exc)
                attempt += 1
        about = self._si.content.about
        LOG.info('Connected to %s (%s, API %s) as %s', self.endpoint,
                 about.fullName, about.apiVersion, self.username)
        return self._si

    def _relogin(self):
        with self._lock:
            LOG.info('vSphere session to %s expired; logging in again',
                     self.endpoint)
            # Same stub: references handed out earlier keep working.
            self._si.content.sessionManager.Login(self.username,
                                                  self._password)

    def disconnect(self):
        if self._si is not None:
            try:
                connect.Disconnect(self._si)
            except Exception:  # logging out is best effort
                LOG.debug('Logout from %s failed', self.endpoint,
                          exc_info=True)
            self._si = None

    @property
    def si(self):
        if self._si is None:
            self.connect()
        return self._si

    @property
    def content(self):
        return self.si.content

    @property
    def cookie(self):
        """The SOAP session cookie, for the datastore and NFC HTTP paths."""
        return self.si._stub.cookie

    def _backoff(self, attempt, what, exc):
        delay = self.retry_interval * (2 ** attempt)
        LOG.warning('vSphere %s on %s failed (%s: %s); retry %d/%d in '
                    '%.1f s', what, self.endpoint, type(exc).__name__, exc,
                    attempt + 1, self.retries, delay)
        time.sleep(delay)

    # -- calls ------------------------------------------------------------

    def run(self, what, func, *args, instance=None, **kwargs):
        """Call ``func`` with retries; faults become Nova exceptions.

        ``func`` is a pyvmomi method or any callable using the stub.
        """
        attempt = 0
        relogged = False
        while True:
            try:
                return func(*args, **kwargs)
            except vim.fault.NotAuthenticated as exc:
                if relogged:
                    raise errors.translate(exc, what, instance)
                self._relogin()
                relogged = True
            except vmodl.MethodFault as exc:
                raise errors.translate(exc, what, instance)
            except TRANSIENT_ERRORS as exc:
                if attempt >= self.retries:
                    raise errors.VSphereConnectionError(
                        endpoint=self.endpoint,
                        detail='%s failed after %d attempt(s): %s: %s'
                               % (what, attempt + 1, type(exc).__name__,
                                  exc))
                self._backoff(attempt, what, exc)
                attempt += 1

    def wait_for_task(self, task, what, instance=None, timeout=None):
        """Poll a task until it ends; never waits longer than the timeout."""
        timeout = timeout or self.task_timeout
        deadline = time.monotonic() + timeout
        while True:
            info = self._task_info(task, what, instance)
            if info['info.state'] == vim.TaskInfo.State.success:
                return info.get('info.result')
            if info['info.state'] == vim.TaskInfo.State.error:
                raise errors.task_error(info.get('info.error'), what,
                                        instance)
            if time.monotonic() >= deadline:
                try:
                    task.CancelTask()
                except Exception:  # cancelling is best effort
                    LOG.debug('Cancelling %s failed', what, exc_info=True)
                raise errors.VSphereTaskTimeout(what=what, timeout=timeout,
                                                fault='Timeout', detail='')
            time.sleep(self.poll_interval)

    def _task_info(self, task, what, instance):
        # Only the fields we need: some servers put non-entities (e.g. the
        # FileManager) in info.entity, which pyvmomi refuses to parse.
        pc = vmodl.query.PropertyCollector
        spec = pc.FilterSpec(
            objectSet=[pc.ObjectSpec(obj=task)],
            propSet=[pc.PropertySpec(type=vim.Task, pathSet=[
                'info.state', 'info.error', 'info.result'])])
        collector = self.content.propertyCollector
        result = self.run(what, collector.RetrievePropertiesEx, [spec],
                          pc.RetrieveOptions(), instance=instance)
        return {p.name: p.val for p in result.objects[0].propSet}

    def run_task(self, what, func, *args, instance=None, timeout=None,
                 **kwargs):
        """Start a *_Task method and wait for its result."""
        task = self.run(what, func, *args, instance=instance, **kwargs)
        return self.wait_for_task(task, what, instance=instance,
                                  timeout=timeout)
