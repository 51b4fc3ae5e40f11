"""XHV meta volume driver: a real Cinder driver plus format awareness.

``volume_driver = cinder_xhv.driver.XHVVolumeDriver`` with
``xhv_inner_volume_driver`` naming the real backend in the same section.
Every method the volume manager calls is forwarded explicitly (Cinder's
base classes define stubs for all of them, so ``__getattr__`` alone would
never be reached).  XHV adds, on top of the inner driver:

* ``xhv_*`` capabilities for the scheduler (attaching hypervisor families,
  stored format);
* image upload and download in the right format (images.py);
* format-aware generic migration (migration.py);
* the volume's format recorded in its metadata (volume_format.py).
"""

from oslo_log import log as logging
from oslo_utils import units

from cinder import exception
from cinder.image import image_utils
from cinder.message import api as message_api
from cinder.message import message_field
from cinder.objects import fields
from cinder.volume import driver

from cinder_xhv import attach
from cinder_xhv import images
from cinder_xhv import inner as inner_drivers
from cinder_xhv import migration
from cinder_xhv import opts
from cinder_xhv import volume_format

LOG = logging.getLogger(__name__)


class XHVVolumeDriver(driver.VolumeDriver):
    """Wraps one real Cinder volume driver (see module docstring)."""

    VERSION = '1.0.0'
    CI_WIKI_NAME = 'XHV'

    def __init__(self, *args, **kwargs):
        if args:
            message = 'XHVVolumeDriver takes keyword arguments only'
            raise TypeError(message)
        configuration = kwargs['configuration']
        configuration.append_config_values(opts.xhv_volume_opts)
        # The inner driver is built first so its own checks (replication,
        # options) run before ours and our replication answer can defer to
        # it.
        self._inner = inner_drivers.build(
            configuration.safe_get('xhv_inner_volume_driver'),
            XHVVolumeDriver, **kwargs)
        super(XHVVolumeDriver, self).__init__(**kwargs)
        self.SUPPORTS_ACTIVE_ACTIVE = self._inner.SUPPORTS_ACTIVE_ACTIVE
        self._stager = migration.Stager()

    @staticmethod
    def get_driver_options():
        return list(opts.xhv_volume_opts)

    # -- attributes the manager reads

    def __getattr__(self, name):
        # Only reached for names this class and its bases lack (vendor
        # extras): defer to the inner driver.
        inner = self.__dict__.get('_inner')
        if inner is None or name.startswith('__'):
            raise AttributeError(name)
        return getattr(inner, name)

    @property
    def inner_driver(self):
        return self._inner

    @property
    def supported(self):
        return self._inner.supported

    def supports_replication_feature(self, feature):
        inner = self.__dict__.get('_inner')
        return bool(inner) and inner.supports_replication_feature(feature)

    @property
    def stored_format(self):
        return volume_format.derive_stored_format(self._inner,
                                                  self.configuration)

    # -- setup

    def do_setup(self, context):
        return self._inner.do_setup(context)

    def check_for_setup_error(self):
        self._inner.check_for_setup_error()
        LOG.info('XHV wraps %(inner)s storing %(fmt)s volumes, attachable '
                 'by %(fam)s.',
                 {'inner': type(self._inner).__name__,
                  'fmt': self.stored_format,
                  'fam': ', '.join(self._attach_families(
                      self._inner_protocol())) or 'no known hypervisor'})
        # What Glance's web server accepts is invisible from here: the API
        # does not expose it, and testing it would mean uploading data to
        # an image at start-up.  Say what it must accept instead.
        LOG.info('XHV uploads volumes to Glance as HTTP chunks of %d bytes '
                 '(glanceclient); a Glance served by uWSGI without a proxy '
                 'in front must accept them (chunked-input-limit above %d, '
                 'uWSGI\'s default is 1 MiB), which this driver cannot '
                 'check from here.',
                 images.upload_chunk_size(), images.upload_chunk_size() + 2)

    def set_initialized(self):
        self._inner.set_initialized()
        super(XHVVolumeDriver, self).set_initialized()

    def set_throttle(self):
        return self._inner.set_throttle()

    def get_version(self):
        return '%s (XHV %s)' % (self._inner.get_version(), self.VERSION)

    def init_capabilities(self):
        self._inner.init_capabilities()
        self.capabilities = self._with_xhv(dict(self._inner.capabilities))

    def secure_file_operations_enabled(self):
        return self._inner.secure_file_operations_enabled()

    # -- stats and capabilities

    def _inner_protocol(self):
        stats = getattr(self._inner, '_stats', None) or {}
        return (stats.get('storage_protocol') or
                getattr(self._inner, 'driver_volume_type', None) or
                getattr(self._inner, 'protocol', None))

    def _attach_families(self, protocol):
        configured = self.configuration.safe_get('xhv_attach_families')
        if configured:
            return sorted(configured)
        return attach.attach_families(protocol, self.stored_format)

    def _xhv_capabilities(self, protocol):
        return {
            'xhv_version': self.VERSION,
            'xhv_attach_families': self._attach_families(protocol),
            'xhv_volume_format': self.stored_format,
            'xhv_image_formats': list(images.handled_formats()),
        }

    def _with_xhv(self, stats):
        extra = self._xhv_capabilities(stats.get('storage_protocol') or
                                       self._inner_protocol())
        stats.update(extra)
        if stats.get('pools'):
            # Copies: the inner driver keeps its own pool dicts.
            stats['pools'] = [dict(pool, **extra) for pool in stats['pools']]
        return stats

    def get_volume_stats(self, refresh=False):
        stats = self._inner.get_volume_stats(refresh=refresh)
        if stats is None:
            return None
        self._stats = self._with_xhv(dict(stats))
        return self._stats

    def _update_volume_stats(self):
        self.get_volume_stats(refresh=True)

    def get_filter_function(self):
        return self._inner.get_filter_function()

    def get_goodness_function(self):
        return self._inner.get_goodness_function()

    def get_default_filter_function(self):
        return self._inner.get_default_filter_function()

    def get_default_goodness_function(self):
        return self._inner.get_default_goodness_function()

    def get_pool(self, volume):
        return self._inner.get_pool(volume)

    def update_provider_info(self, volumes, snapshots):
        return self._inner.update_provider_info(volumes, snapshots)

    # -- volume lifecycle (format recorded after each creation) --------------

    def _record(self, volume, fmt=None):
        volume_format.record_format(volume, fmt or self.stored_format)

    def create_volume(self, volume):
        model_update = self._inner.create_volume(volume)
        self._apply(volume, model_update)
        self._record(volume)
        return model_update

    def create_volume_from_snapshot(self, volume, snapshot):
        model_update = self._inner.create_volume_from_snapshot(volume,
                                                               snapshot)
        self._apply(volume, model_update)
        self._record(volume)
        return model_update

    def create_cloned_volume(self, volume, src_vref):
        model_update = self._inner.create_cloned_volume(volume, src_vref)
        self._apply(volume, model_update)
        # Same-backend clones keep the source's container (NFS copies the
        # file as it is).
        source_format = volume_format.recorded_format(src_vref)
        self._record(volume, source_format)
        return model_update

    def create_volume_from_backup(self, volume, backup):
        model_update = self._inner.create_volume_from_backup(volume, backup)
        self._apply(volume, model_update)
        self._record(volume)
        return model_update

    @staticmethod
    def _apply(volume, model_update):
        # Location fields the inner driver returns are needed to find the
        # volume's data before the manager saves them.
        for key in ('provider_location', 'provider_id'):
            if model_update and key in model_update:
                setattr(volume, key, model_update[key])

    def delete_volume(self, volume):
        self._stager.discard(volume.id)
        return self._inner.delete_volume(volume)

    def extend_volume(self, volume, new_size):
        return self._inner.extend_volume(volume, new_size)

    def create_snapshot(self, snapshot):
        return self._inner.create_snapshot(snapshot)

    def delete_snapshot(self, snapshot):
        return self._inner.delete_snapshot(snapshot)

    def revert_to_snapshot(self, context, volume, snapshot):
        return self._inner.revert_to_snapshot(context, volume, snapshot)

    def snapshot_revert_use_temp_snapshot(self):
        return self._inner.snapshot_revert_use_temp_snapshot()

    def local_path(self, volume):
        return self._inner.local_path(volume)

    def clear_download(self, context, volume):
        return self._inner.clear_download(context, volume)

    def accept_transfer(self, context, volume, new_user, new_project):
        return self._inner.accept_transfer(context, volume, new_user,
                                           new_project)

    # -- exports and connections

    def ensure_export(self, context, volume):
        return self._inner.ensure_export(context, volume)

    def create_export(self, context, volume, connector):
        return self._inner.create_export(context, volume, connector)

    def remove_export(self, context, volume):
        return self._inner.remove_export(context, volume)

    def create_export_snapshot(self, context, snapshot, connector):
        return self._inner.create_export_snapshot(context, snapshot,
                                                  connector)

    def remove_export_snapshot(self, context, snapshot):
        return self._inner.remove_export_snapshot(context, snapshot)

    def validate_connector(self, connector):
        return self._inner.validate_connector(connector)

    def initialize_connection(self, volume, connector, **kwargs):
        staged = self._stager.connection_info(volume)
        if staged:
            return staged
        info = self._inner.initialize_connection(volume, connector,
                                                 **kwargs)
        # The family attaching (XHV computes name it in the connector)
        # must be able to open this volume as it is stored.
        return attach.for_connector(
            volume, connector, info,
            volume_format.recorded_format(volume)
            if attach.connector_family(connector) else None)

    def terminate_connection(self, volume, connector, **kwargs):
        if self._stager.discard(volume.id):
            # The copy is over: the inner driver never exported anything
            # beyond create_export, which remove_export undoes.
            return None
        return self._inner.terminate_connection(volume, connector, **kwargs)

    def initialize_connection_snapshot(self, snapshot, connector, **kwargs):
        return self._inner.initialize_connection_snapshot(snapshot, connector,
                                                          **kwargs)

    def terminate_connection_snapshot(self, snapshot, connector, **kwargs):
        return self._inner.terminate_connection_snapshot(snapshot, connector,
                                                         **kwargs)

    def _attach_volume(self, context, volume, properties, remote=False):
        return self._inner._attach_volume(context, volume, properties,
                                          remote=remote)

    def _detach_volume(self, context, attach_info, volume, properties,
                       force=False, remote=False, ignore_errors=False):
        return self._inner._detach_volume(context, attach_info, volume,
                                          properties, force=force,
                                          remote=remote,
                                          ignore_errors=ignore_errors)

    # -- images

    def clone_image(self, context, volume, image_location, image_meta,
                    image_service):
        model_update, cloned = self._inner.clone_image(
            context, volume, image_location, image_meta, image_service)
        if cloned:
            self._apply(volume, model_update)
            self._record(volume)
            return model_update, cloned
        if volume.encryption_key_id or not images.handles(image_meta):
            return model_update, cloned
        # XHV's own path replaces Cinder's download flow, whose qemu-img
        # calls break on vhd: the image is inspected before the volume even
        # exists, so a refused image leaves nothing behind.
        image_utils.check_image_conversion_disable(
            image_meta.get('disk_format'), self.stored_format,
            image_meta['id'])
        with images.fetched_image(context, image_service, image_meta['id'],
                                  volume.size * units.Gi,
                                  volume=volume) as info:
            model_update = self.create_volume(volume) or {}
            try:
                images.write_into_volume(self._inner, context, volume, info,
                                         self.stored_format)
            except Exception:
                LOG.exception('Writing image %(img)s into volume %(vol)s '
                              'failed; deleting the volume\'s data.',
                              {'img': image_meta['id'], 'vol': volume.id})
                self._inner.delete_volume(volume)
                raise
        return model_update, True

    def copy_image_to_volume(self, context, volume, image_service, image_id,
                             disable_sparse=False):
        image_meta = image_service.show(context, image_id)
        if not images.handles(image_meta):
            return self._inner.copy_image_to_volume(
                context, volume, image_service, image_id,
                disable_sparse=disable_sparse)
        fmt = volume_format.require_format(volume, 'write an image into')
        image_utils.check_image_conversion_disable(
            image_meta.get('disk_format'), fmt, image_id)
        with images.fetched_image(context, image_service, image_id,
                                  volume.size * units.Gi) as info:
            images.write_into_volume(self._inner, context, volume, info, fmt)
        self._record(volume, fmt)

    def copy_image_to_encrypted_volume(self, context, volume, image_service,
                                       image_id, disable_sparse=False):
        # Encrypted volumes hold LUKS containers: the inner driver's own
        # path (which writes LUKS) applies.
        return self._inner.copy_image_to_encrypted_volume(
            context, volume, image_service, image_id,
            disable_sparse=disable_sparse)

    def copy_volume_to_image(self, context, volume, image_service,
                             image_meta):
        if not images.handles(image_meta) or volume.encryption_key_id:
            return self._inner.copy_volume_to_image(context, volume,
                                                    image_service, image_meta)
        fmt = volume_format.require_format(volume, 'upload')
        try:
            images.upload_volume(
                self._inner, context, volume, fmt, image_service, image_meta,
                self.configuration.safe_get('xhv_vmdk_adapter_type'))
        except exception.ImageConversionNotAllowed as err:
            # The manager records every failure as "Failed to upload volume
            # to image at backend."; a conversion refused by policy
            # (image_conversion_disable) has its own detail in Cinder's
            # fixed list, which cinder-api renders: record it too.
            message_api.API().create(
                context, message_field.Action.COPY_VOLUME_TO_IMAGE,
                resource_uuid=volume.id, exception=err,
                detail=message_field.Detail.IMAGE_FORMAT_UNACCEPTABLE)
            raise

    # -- migration and retype

    def migrate_volume(self, context, volume, host):
        capabilities = (host or {}).get('capabilities') or {}
        dest_format = capabilities.get('xhv_volume_format')
        source_format = volume_format.recorded_format(volume)
        if dest_format and dest_format != source_format:
            # Only the generic path (with XHV's conversion) moves guest
            # data between formats.
            return False, None
        return self._inner.migrate_volume(context, volume, host)

    def before_volume_copy(self, context, src_vol, dest_vol, remote=None):
        self._inner.before_volume_copy(context, src_vol, dest_vol,
                                       remote=remote)
        source_format = volume_format.require_format(src_vol, 'migrate')
        self._stager.prepare(self._inner, context, src_vol, dest_vol,
                             source_format)

    def after_volume_copy(self, context, src_vol, dest_vol, remote=None):
        self._stager.discard(src_vol.id)
        return self._inner.after_volume_copy(context, src_vol, dest_vol,
                                             remote=remote)

    def update_migrated_volume(self, ctxt, volume, new_volume,
                               original_volume_status):
        model_update = self._inner.update_migrated_volume(
            ctxt, volume, new_volume, original_volume_status) or {}
        new_format = volume_format.recorded_format(new_volume)
        if new_format:
            volume_format.adopt_records(volume, new_volume, new_format)
        return model_update

    def retype(self, context, volume, new_type, diff, host):
        return self._inner.retype(context, volume, new_type, diff, host)

    # -- manage / unmanage

    def manage_existing(self, volume, existing_ref):
        return self._inner.manage_existing(volume, existing_ref)

    def manage_existing_get_size(self, volume, existing_ref):
        return self._inner.manage_existing_get_size(volume, existing_ref)

    def get_manageable_volumes(self, cinder_volumes, marker, limit, offset,
                               sort_keys, sort_dirs):
        return self._inner.get_manageable_volumes(
            cinder_volumes, marker, limit, offset, sort_keys, sort_dirs)

    def unmanage(self, volume):
        return self._inner.unmanage(volume)

    def manage_existing_snapshot(self, snapshot, existing_ref):
        return self._inner.manage_existing_snapshot(snapshot, existing_ref)

    def manage_existing_snapshot_get_size(self, snapshot, existing_ref):
        return self._inner.manage_existing_snapshot_get_size(snapshot,
                                                             existing_ref)

    def get_manageable_snapshots(self, cinder_snapshots, marker, limit,
                                 offset, sort_keys, sort_dirs):
        return self._inner.get_manageable_snapshots(
            cinder_snapshots, marker, limit, offset, sort_keys, sort_dirs)

    def unmanage_snapshot(self, snapshot):
        return self._inner.unmanage_snapshot(snapshot)

    # -- backup

    def backup_use_temp_snapshot(self):
        return self._inner.backup_use_temp_snapshot()

    def get_backup_device(self, context, backup):
        return self._inner.get_backup_device(context, backup)

    def _create_temp_volume_from_snapshot(
            self, context, volume, snapshot, volume_options=None,
            status=fields.VolumeStatus.AVAILABLE):
        return self._inner._create_temp_volume_from_snapshot(
            context, volume, snapshot, volume_options=volume_options,
            status=status)

    # -- replication and backend state

    def freeze_backend(self, context):
        return self._inner.freeze_backend(context)

    def thaw_backend(self, context):
        return self._inner.thaw_backend(context)

    def failover_host(self, context, volumes, secondary_id=None, groups=None):
        return self._inner.failover_host(context, volumes,
                                         secondary_id=secondary_id,
                                         groups=groups)

    def failover(self, context, volumes, secondary_id=None, groups=None):
        return self._inner.failover(context, volumes,
                                    secondary_id=secondary_id, groups=groups)

    def failover_completed(self, context, active_backend_id=None):
        return self._inner.failover_completed(
            context, active_backend_id=active_backend_id)

    def enable_replication(self, context, group, volumes):
        return self._inner.enable_replication(context, group, volumes)

    def disable_replication(self, context, group, volumes):
        return self._inner.disable_replication(context, group, volumes)

    def failover_replication(self, context, group, volumes,
                             secondary_backend_id=None):
        return self._inner.failover_replication(
            context, group, volumes,
            secondary_backend_id=secondary_backend_id)

    def get_replication_error_status(self, context, groups):
        return self._inner.get_replication_error_status(context, groups)

    # -- groups and consistency groups

    def create_group(self, context, group):
        return self._inner.create_group(context, group)

    def delete_group(self, context, group, volumes):
        return self._inner.delete_group(context, group, volumes)

    def update_group(self, context, group, add_volumes=None,
                     remove_volumes=None):
        return self._inner.update_group(context, group,
                                        add_volumes=add_volumes,
                                        remove_volumes=remove_volumes)

    def create_group_from_src(self, context, group, volumes,
                              group_snapshot=None, snapshots=None,
                              source_group=None, source_vols=None):
        return self._inner.create_group_from_src(
            context, group, volumes, group_snapshot=group_snapshot,
            snapshots=snapshots, source_group=source_group,
            source_vols=source_vols)

    def create_group_snapshot(self, context, group_snapshot, snapshots):
        return self._inner.create_group_snapshot(context, group_snapshot,
                                                 snapshots)

    def delete_group_snapshot(self, context, group_snapshot, snapshots):
        return self._inner.delete_group_snapshot(context, group_snapshot,
                                                 snapshots)

    def create_consistencygroup(self, context, group):
        return self._inner.create_consistencygroup(context, group)

    def create_consistencygroup_from_src(self, context, group, volumes,
                                         cgsnapshot=None, snapshots=None,
                                         source_cg=None, source_vols=None):
        return self._inner.create_consistencygroup_from_src(
            context, group, volumes, cgsnapshot=cgsnapshot,
            snapshots=snapshots, source_cg=source_cg,
            source_vols=source_vols)

    def delete_consistencygroup(self, context, group, volumes):
        return self._inner.delete_consistencygroup(context, group, volumes)

    def update_consistencygroup(self, context, group, add_volumes=None,
                                remove_volumes=None):
        return self._inner.update_consistencygroup(
            context, group, add_volumes=add_volumes,
            remove_volumes=remove_volumes)

    def create_cgsnapshot(self, context, cgsnapshot, snapshots):
        return self._inner.create_cgsnapshot(context, cgsnapshot, snapshots)

    def delete_cgsnapshot(self, context, cgsnapshot, snapshots):
        return self._inner.delete_cgsnapshot(context, cgsnapshot, snapshots)
