"""Finding and building the real Cinder driver that XHV wraps."""

from oslo_log import log as logging
from oslo_utils import importutils
import stevedore

from cinder import exception

LOG = logging.getLogger(__name__)

NAMESPACE = 'cinder_xhv.inner_drivers'


def available_names():
    """Short names registered in the inner-driver entry point namespace."""
    return sorted(stevedore.ExtensionManager(NAMESPACE).names())


def resolve(name):
    """The inner driver class for a dotted path or a short name."""
    if not name:
        raise exception.InvalidConfigurationValue(
            option='xhv_inner_volume_driver', value=name)
    name = name.strip()
    if '.' in name or ':' in name:
        try:
            return importutils.import_class(name.replace(':', '.'))
        except (ImportError, ValueError, AttributeError) as err:
            raise exception.VolumeDriverException(
                message='xhv_inner_volume_driver=%s cannot be imported '
                        '(%s): name a class such as '
                        'cinder.volume.drivers.nfs.NfsDriver' % (name, err))
    try:
        manager = stevedore.driver.DriverManager(NAMESPACE, name,
                                                 invoke_on_load=False)
    except stevedore.exception.NoMatches:
        raise exception.VolumeDriverException(
            message='xhv_inner_volume_driver=%s is neither a dotted class '
                    'path nor a short name in the %s namespace (known: %s)'
                    % (name, NAMESPACE, ', '.join(available_names())
                       or 'none'))
    return manager.driver


def build(name, wrapper_class, **kwargs):
    """Instantiate the inner driver with the manager's keyword arguments.

    Keyword arguments only: inner drivers' first positional parameters
    differ (NfsDriver takes ``execute`` first, others ``*args``).
    """
    cls = resolve(name)
    if isinstance(cls, type) and issubclass(cls, wrapper_class):
        raise exception.VolumeDriverException(
            message='xhv_inner_volume_driver=%s is the XHV driver itself: '
                    'name the real backend driver it should wrap' % name)
    LOG.debug('XHV wraps inner volume driver %s.%s',
              cls.__module__, cls.__name__)
    return cls(**kwargs)
