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
from nova.virt import driver
from oslo_log import log as logging
import stevedore
from stevedore import exception as stevedore_exception

from nova_xhv.backends import base
from nova_xhv.backends import family as backend_family
import nova_xhv.conf
from nova_xhv import forwarding
from nova_xhv.migration import service
from nova_xhv.policy import enforcer as policy_enforcer
from nova_xhv.policy import inputs as policy_inputs
from nova_xhv.policy import nova_input
from nova_xhv.policy import nova_report

CONF = nova_xhv.conf.CONF
LOG = logging.getLogger(__name__)

BACKEND_NAMESPACE = backend_family.BACKEND_NAMESPACE


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


def load_backend(name, virtapi, read_only=False):
    """Build the backend registered as ``name``; one clear error if not."""

    def load_failed(manager, entrypoint, error):
        missing = getattr(error, 'name', None) or str(error)
        if (isinstance(error, ImportError)
                and not missing.startswith(('nova_xhv', 'nova.'))):
            # A client library the backend needs, not a bug of ours.
            _fail('XHV backend %r ([xhv] backend) needs the Python module '
                  '%r, which is not installed: %s, or choose another '
                  '[xhv] backend.' % (name, missing,
                                      backend_family.install_hint(name)),
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
    """Nova compute driver running one hypervisor backend.

    A cold migration or resize between two computes of the same family is
    the backend's own business.  Between families (see
    doc/source/migration.rst) it is staged so that every failure before
    the source returns rolls back to the untouched original:

    1. source ``migrate_disk_and_power_off``: power off, export, have the
       destination pull, translate and stage the disks, wait; on failure
       power the original back on and raise InstanceFaultRollback;
    2. destination ``finish_migration``: create the server from the staged
       disks with the mapped hardware -- commit only;
    3. source ``confirm_migration``: delete the original; or
       ``finish_revert_migration``: power the original back on (the
       destination's ``destroy`` removed its copy).
    """

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi)
        self.backend_name = CONF.xhv.backend
        self.backend = load_backend(self.backend_name, virtapi, read_only)
        self.moves = service.MoveService(self.backend, CONF.xhv)
        # The policy backstop: forced hosts and moves the scheduler never
        # saw are decided here too (doc/source/policy.rst).
        self.policy = policy_enforcer.Enforcer.from_conf(
            CONF.xhv_policy, 'driver', reporter=nova_report.reporter(
                lambda: self.moves.host or CONF.host)
            if CONF.xhv_policy.notify else None)
        self.moves.policy = self.policy
        self._policy_capabilities = self._find_capabilities()
        self._service_host = None
        LOG.info('XHV runs the %r backend (%s, native disk format %s)',
                 self.backend_name, self.backend.family,
                 self.backend.native_format)

    @property
    def capabilities(self):
        # Images the translation engine reads can boot or move here.
        return self.moves.capabilities(self.backend.capabilities)

    def capabilities_as_traits(self):
        # Nova's own conversion, but from XHV's capabilities above (the
        # forwarded call would read the backend's).
        return driver.ComputeDriver.capabilities_as_traits(self)

    def get_volume_connector(self, instance):
        # The backend's os-brick style connector plus its family, which
        # tells XHV's volume driver what connection info to answer
        # (nova_xhv/backends/base.py, "Volumes").
        connector = dict(self.backend.get_volume_connector(instance) or {})
        connector[backend_family.CONNECTOR_FAMILY_KEY] = self.backend.family
        if self._service_host:
            # Cinder records it as the attachment's host: the compute
            # service's own name (CONF.host is process-wide, and wrong
            # where several computes share a process).
            connector['host'] = self._service_host
        return connector

    def init_host(self, host):
        self._service_host = host
        try:
            started = self.backend.init_host(host)
        except Exception as error:
            _fail('XHV backend %r ([xhv] backend) could not start on host '
                  '%s: %s: %s. Check that its hypervisor is running and '
                  'reachable, or set [xhv] backend to the hypervisor this '
                  'host runs.' % (self.backend_name, host,
                                  type(error).__name__, error), error)
        try:
            # The exchange endpoint; disks staged before a crash go away.
            self.moves.start(host)
        except Exception as error:
            _fail('XHV could not start its exchange endpoint on host %s: '
                  '%s' % (host, error), error)
        return started

    def cleanup_host(self, host):
        self.moves.stop()
        return self.backend.cleanup_host(host)

    def get_available_resource(self, nodename):
        # Publishes this compute's family, exchange URL and the hypervisor
        # types it takes through translation (supported_instances), and
        # what the policy reads: capabilities and the policy digest.
        resources = self.moves.advertise(
            self.backend.get_available_resource(nodename))
        resources['stats'] = self._policy_stats(resources.get('stats'))
        return resources

    # -- policy backstop ---------------------------------------------------

    def _find_capabilities(self):
        found = set(c.strip() for c in CONF.xhv_policy.capabilities
                    if c.strip())
        found.add('uefi')  # every family maps the neutral uefi firmware
        if self.moves.enabled:
            found.add('exchange')
            if CONF.xhv.exchange_use_tls:
                found.add('exchange_tls')
                if not CONF.xhv.exchange_insecure:
                    found.add('exchange_tls_verified')
        return sorted(found)

    def _policy_stats(self, stats):
        stats = dict(stats or {})
        stats[policy_inputs.STAT_CAPABILITIES] = ','.join(
            self._policy_capabilities)
        stats[policy_inputs.STAT_DIGEST] = self.policy.digest or 'unavailable'
        return stats

    def _self_view(self, context):
        """This compute as the policy's HOST."""
        host = self.moves.host or CONF.host
        stats = self._policy_stats(self.moves.advertise(
            {'stats': {}, 'supported_instances': []})['stats'])
        aggregates, zone = nova_input.aggregates_of_host(context, host)
        return policy_inputs.host_from_stats(host, stats, None, aggregates,
                                             zone)

    def _decide(self, context, action, instance, source, destination):
        document = policy_inputs.document(
            action, nova_input.caller_of(context),
            nova_input.server_of_instance(instance), source, destination,
            point='driver', request_id=nova_input.request_id_of(context))
        return document, self.policy.decide(document, context)

    def spawn(self, context, instance, image_meta, injected_files,
              admin_password, allocations, network_info=None,
              block_device_info=None, power_on=True, accel_info=None):
        action = ('unshelve' if instance.vm_state == 'shelved_offloaded'
                  else 'boot')
        _document, decision = self._decide(context, action, instance, None,
                                           self._self_view(context))
        if not decision.allowed:
            # No reschedule: a forced host has no alternative, and the
            # scheduler's filter should have kept the server away.
            raise exception.BuildAbortException(
                instance_uuid=instance.uuid, reason=decision.reason())
        return self.backend.spawn(context, instance, image_meta,
                                  injected_files, admin_password, allocations,
                                  network_info, block_device_info, power_on,
                                  accel_info)

    _MOVE_ACTIONS = {'migration': 'move', 'resize': 'resize',
                     'evacuation': 'evacuate',
                     'live-migration': 'live_migrate'}

    def _enforce_move(self, context, instance, destination):
        """Refuse a move before anything is touched; the claim to sign."""
        migration = destination.migration
        action = self._MOVE_ACTIONS.get(
            getattr(migration, 'migration_type', None), 'move')
        try:
            target = nova_input.host_of_node(context, destination.host,
                                             destination.node)
        except Exception as error:
            LOG.warning('XHV policy: cannot read destination %s: %s',
                        destination.host, error)
            target = policy_inputs.host(destination.host,
                                        destination.family)
        document, decision = self._decide(context, action, instance,
                                          self._self_view(context), target)
        if not decision.allowed:
            raise exception.InstanceFaultRollback(
                inner_exception=nova_report.PolicyRefused(
                    reason=decision.reason()))
        return {'digest': decision.digest, 'input': document}

    # -- cold migration and resize ---------------------------------------

    def migrate_disk_and_power_off(self, context, instance, dest, flavor,
                                   network_info, block_device_info=None,
                                   timeout=0, retry_interval=0):
        destination = self.moves.destination_of(context, instance)
        # Before power-off: a refused move leaves the server running here.
        destination.policy = self._enforce_move(context, instance,
                                                destination)
        if not self.moves.crosses_family(destination):
            return self.backend.migrate_disk_and_power_off(
                context, instance, dest, flavor, network_info,
                block_device_info, timeout, retry_interval)
        try:
            return self.moves.move_out(context, instance, destination,
                                       network_info, block_device_info,
                                       timeout, retry_interval)
        except Exception as error:
            # Original powered on again, nothing left on the destination:
            # Nova puts the server back on this host.
            raise exception.InstanceFaultRollback(inner_exception=error)

    def finish_migration(self, context, migration, instance, disk_info,
                         network_info, image_meta, resize_instance,
                         allocations, block_device_info=None, power_on=True,
                         share_info=None):
        move = self.moves.incoming_move(disk_info)
        if move is None:
            return self.backend.finish_migration(
                context, migration, instance, disk_info, network_info,
                image_meta, resize_instance, allocations, block_device_info,
                power_on, share_info)
        self.moves.finish(context, instance, move, network_info,
                          block_device_info, power_on)

    def confirm_migration(self, context, migration, instance, network_info):
        if self.moves.source_record(migration) is None:
            return self.backend.confirm_migration(context, migration,
                                                  instance, network_info)
        self.moves.confirm(context, migration, instance, network_info)

    def finish_revert_migration(self, context, instance, network_info,
                                migration, block_device_info=None,
                                power_on=True, share_info=None):
        if self.moves.source_record(migration) is None:
            return self.backend.finish_revert_migration(
                context, instance, network_info, migration,
                block_device_info, power_on, share_info)
        self.moves.revert(context, instance, migration, network_info,
                          block_device_info, power_on)

    def destroy(self, context, instance, network_info, block_device_info=None,
                destroy_disks=True, destroy_secrets=True):
        self.moves.guard_destroy(instance)
        return self.backend.destroy(context, instance, network_info,
                                    block_device_info, destroy_disks,
                                    destroy_secrets)

    def check_instance_shared_storage_local(self, context, instance):
        if self.moves.is_moved_copy(instance):
            # A copy made by a move between families never shares storage
            # with its source: a revert must delete it.
            raise NotImplementedError()
        return self.backend.check_instance_shared_storage_local(context,
                                                                instance)
