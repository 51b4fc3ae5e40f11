"""XHVDriver: one Nova compute driver in front of any hypervisor backend.

``compute_driver = xhv.XHVDriver`` (see ``nova/virt/xhv``) builds this
class.  It loads ONE backend, named by ``[xhv] backend``, from the
stevedore namespace ``nova_xhv.backends`` and passes every ComputeDriver
call to it (``nova_xhv.forwarding``), so a compute behaves exactly like its
backend.  What XHV adds around the backend -- moving a server between
hypervisor families (export -> transfer -> translate -> import) -- belongs
here, as overrides of the forwarded calls.
"""

import importlib.metadata
import warnings

from nova import exception
from oslo_log import log as logging
import stevedore
from stevedore import exception as stevedore_exception

from nova_xhv.backends import base
import nova_xhv.conf
from nova_xhv import forwarding

CONF = nova_xhv.conf.CONF
LOG = logging.getLogger(__name__)

BACKEND_NAMESPACE = 'nova_xhv.backends'
DISTRIBUTION = 'openstack-xhv'


class BackendError(exception.NovaException):
    """The configured backend cannot be loaded or cannot start."""

    msg_fmt = '%(reason)s'


def _fail(message, cause=None):
    """Log the one line an operator needs, and raise it."""
    LOG.error(message)
    raise BackendError(reason=message) from cause


def _available_backends():
    # Names only: loading every backend would import their dependencies.
    names = {ep.name for ep in
             importlib.metadata.entry_points(group=BACKEND_NAMESPACE)}
    return ', '.join(sorted(names)) or 'none installed'


def _install_hint(name):
    """How to get a backend's Python dependencies, from our extras."""
    try:
        extras = importlib.metadata.metadata(DISTRIBUTION).get_all(
            'Provides-Extra') or []
    except importlib.metadata.PackageNotFoundError:
        extras = []
    if name in extras:
        return 'pip install %s[%s]' % (DISTRIBUTION, name)
    return 'install the package that provides it'


def load_backend(name, virtapi, read_only=False):
    """Build the backend registered as ``name``; one clear error if not."""

    def load_failed(manager, entrypoint, error):
        missing = getattr(error, 'name', None) or str(error)
        if (isinstance(error, ImportError)
                and not missing.startswith(('nova_xhv', 'nova.'))):
            # A client library the backend needs, not a bug of ours.
            _fail('XHV backend %r ([xhv] backend) needs the Python module '
                  '%r, which is not installed: %s, or choose another '
                  '[xhv] backend.' % (name, missing, _install_hint(name)),
                  error)
        _fail('XHV backend %r ([xhv] backend, entry point %s) failed to '
              'load: %s: %s' % (name, entrypoint.value,
                                type(error).__name__, error), error)

    try:
        with warnings.catch_warnings():
            # DriverManager cannot take on_missing_entrypoints_callback;
            # the deprecated flag is the way to drop stevedore's own
            # warning, so the operator reads one line, ours.
            warnings.simplefilter('ignore', DeprecationWarning)
            manager = stevedore.DriverManager(
                BACKEND_NAMESPACE, name, invoke_on_load=True,
                invoke_args=(virtapi,), invoke_kwds={'read_only': read_only},
                on_load_failure_callback=load_failed,
                warn_on_missing_entrypoint=False)
    except stevedore_exception.NoMatches:
        _fail('Unknown XHV backend %r in [xhv] backend; installed backends: '
              '%s.' % (name, _available_backends()))
    backend = manager.driver
    if not isinstance(backend, base.Backend):
        _fail('XHV backend %r ([xhv] backend) is a %s, not a '
              'nova_xhv.backends.base.Backend.'
              % (name, type(backend).__name__))
    return backend


class XHVDriver(forwarding.delegating_driver('backend', 'BackendForwarder')):
    """Nova compute driver running one hypervisor backend."""

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi)
        self.backend_name = CONF.xhv.backend
        self.backend = load_backend(self.backend_name, virtapi, read_only)
        LOG.info('XHV runs the %r backend (%s, native disk format %s)',
                 self.backend_name, self.backend.family,
                 self.backend.native_format)

    def init_host(self, host):
        try:
            return self.backend.init_host(host)
        except Exception as error:
            _fail('XHV backend %r ([xhv] backend) could not start on host '
                  '%s: %s: %s. Check that its hypervisor is running and '
                  'reachable, or set [xhv] backend to the hypervisor this '
                  'host runs.' % (self.backend_name, host,
                                  type(error).__name__, error), error)
