"""xhv-status: is this XHV nova-compute ready for its first move?

    xhv-status [--config-file /etc/nova/nova.conf ...] [--json]

Checks, in the style of ``nova-status upgrade check`` (oslo.upgradecheck),
one line each: Success, Warning or Failure, the reason and the fix.  Exit
status: 0 all Success, 1 a Warning, 2 a Failure.  Secrets are never
printed.  See doc/source/status.rst.
"""

import datetime
import errno
import importlib.metadata
import json
import os
import re
import shutil
import socket
import ssl
import sys
import tempfile
import warnings

from oslo_config import cfg
from oslo_upgradecheck import upgradecheck

from nova_xhv.backends import family as backend_family
from nova_xhv import guest_probe
from nova_xhv.translate import exceptions as translate_exceptions
from nova_xhv.translate import qemu_img

Code = upgradecheck.Code
Result = upgradecheck.Result
NEEDED_BLOCK_DRIVERS = ('qcow2', 'vmdk', 'vpc', 'vhdx')
LOW_FREE_BYTES = 2 * 1024 ** 3
CERT_WARN_DAYS = 30
GiB = 1024 ** 3
NAMES = {Code.SUCCESS: 'Success', Code.WARNING: 'Warning',
         Code.FAILURE: 'Failure'}


def _fix(reason, fix=None):
    return reason if not fix else '%s Fix: %s' % (reason, fix)


def success(reason):
    return Result(Code.SUCCESS, reason)


def warning(reason, fix=None):
    return Result(Code.WARNING, _fix(reason, fix))


def failure(reason, fix=None):
    return Result(Code.FAILURE, _fix(reason, fix))


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# -- backend ----------------------------------------------------------------

def check_backend(conf):
    name = conf.xhv.backend
    entry_points = {ep.name: ep for ep in importlib.metadata.entry_points(
        group=backend_family.BACKEND_NAMESPACE)}
    entry_point = entry_points.get(name)
    if entry_point is None:
        return failure(
            '[xhv] backend = %s is not an installed backend (installed: %s).'
            % (name, ', '.join(sorted(entry_points)) or 'none'),
            'set [xhv] backend to one of the installed backends.')
    try:
        entry_point.load()
    except ImportError as error:
        missing = getattr(error, 'name', None) or str(error)
        return failure(
            '[xhv] backend = %s needs the Python module %r, which is not '
            'installed.' % (name, missing),
            backend_family.install_hint(name) +
            ', or choose another [xhv] backend.')
    except Exception as error:
        return failure('[xhv] backend = %s (%s) fails to load: %s: %s'
                       % (name, entry_point.value, type(error).__name__,
                          _first_line(error)),
                       'reinstall %s.' % backend_family.DISTRIBUTION)
    return success('[xhv] backend = %s loads (%s).'
                   % (name, entry_point.value))


# -- hypervisor -------------------------------------------------------------

def libvirt_uri(conf):
    uri = conf.libvirt.connection_uri
    if uri:
        return uri
    return {'kvm': 'qemu:///system', 'qemu': 'qemu:///system'}.get(
        conf.libvirt.virt_type, '%s:///system' % conf.libvirt.virt_type)


def check_hypervisor(conf):
    backend = conf.xhv.backend
    if backend == 'libvirt':
        return _check_libvirt(conf)
    if backend == 'vmware':
        return _check_vmware(conf)
    if backend == 'hyperv':
        return _check_hyperv(conf)
    return warning('[xhv] backend = %s: xhv-status has no hypervisor check '
                   'for it.' % backend)


def _check_libvirt(conf):
    uri = libvirt_uri(conf)
    try:
        libvirt = _libvirt()
    except ImportError:
        return failure('the libvirt Python binding is missing.',
                       'pip install libvirt-python (Nova\'s libvirt driver '
                       'needs it).')
    try:
        conn = libvirt.openReadOnly(uri)
        try:
            qemu, lib = conn.getVersion(), conn.getLibVersion()
        finally:
            conn.close()
    except libvirt.libvirtError as error:
        return failure('libvirt at %s does not answer: %s'
                       % (uri, _first_line(error)),
                       'start libvirtd, or set [libvirt] connection_uri.')
    return success('libvirt %s at %s answers (hypervisor version %s).'
                   % (_version(lib), uri, _version(qemu)))


def _libvirt():
    import libvirt

    return libvirt


def _version(number):
    return '%d.%d.%d' % (number // 1000000, number // 1000 % 1000,
                         number % 1000)


def _check_vmware(conf):
    try:
        from nova_xhv.backends.vmware import errors
        from nova_xhv.backends.vmware import inventory
        from nova_xhv.backends.vmware import session as vsession
    except ImportError as error:
        return failure('the vSphere backend cannot load: %s'
                       % _first_line(error),
                       backend_family.install_hint('vmware') + '.')
    vmw = conf.xhv_vmware
    try:
        session = vsession.VSphereSession(
            vmw.host, vmw.port, vmw.username, vmw.password,
            ca_file=vmw.ca_file, insecure=vmw.insecure, retries=0,
            api_timeout=min(vmw.api_timeout, 30))
        session.connect()
    except (errors.VSphereConfigError,
            errors.VSphereConnectionError) as error:
        return failure(_vmware_message(error))
    try:
        try:
            compute = inventory.discover(session, vmw.cluster_name,
                                         vmw.datacenter, vmw.vm_folder)
        except Exception as error:
            return failure(_vmware_message(error))
        try:
            found = inventory.resources(session, compute,
                                        vmw.datastore_regex)
        except re.error as error:
            return failure('[xhv_vmware] datastore_regex %r is not a valid '
                           'regular expression: %s'
                           % (vmw.datastore_regex, error),
                           'fix [xhv_vmware] datastore_regex.')
        if not found['datastores']:
            return failure(
                'no accessible datastore of %s matches [xhv_vmware] '
                'datastore_regex %r.' % (compute.name, vmw.datastore_regex),
                'set [xhv_vmware] datastore_regex to match a datastore of '
                'the cluster.')
        found_text = ('vSphere %s: logged in as %s, %s %s found with %d '
                      'host(s), datastores %s.' % (
                          session.endpoint, vmw.username,
                          'cluster' if compute.is_cluster else 'host',
                          compute.name, len(found['hosts']),
                          ', '.join(d['name']
                                    for d in found['datastores'])))
        if vmw.insecure:
            return warning(found_text + ' [xhv_vmware] insecure = True: the'
                           ' vCenter certificate is not verified.',
                           'set [xhv_vmware] ca_file and insecure = False.')
        return success(found_text)
    finally:
        session.disconnect()


def _check_hyperv(conf):
    try:
        from nova_xhv.backends.hyperv import backend as hyperv_backend
    except ImportError as error:
        return failure('the Hyper-V backend cannot load: %s'
                       % _first_line(error),
                       backend_family.install_hint('hyperv') + '.')
    hv = conf.xhv_hyperv
    try:
        # What nova-compute does at start: WinRM login, the host, its
        # vSwitches against the mappings, the storage volume, the share.
        backend = hyperv_backend.HyperVBackend(None, options=hv)
        backend.init_host(None)
    except Exception as error:  # noqa: BLE001 - each names its cause
        return failure('Hyper-V: %s' % _first_line(error),
                       'check [xhv_hyperv] host, port, username, password, '
                       'ca_file, vswitch_mappings, vm_path and smb_share.')
    try:
        winrm_url, share = backend.endpoint
        text = ('Hyper-V host %s answers at %s as %s; share %s '
                'reachable.' % (backend.get_available_nodes()[0], winrm_url,
                                hv.username, share))
        if hv.insecure:
            return warning(text + ' [xhv_hyperv] insecure = True: the '
                           'WinRM certificate is not verified.',
                           'set [xhv_hyperv] ca_file and insecure = False.')
        return success(text)
    finally:
        backend.cleanup_host(None)


def _vmware_message(error):
    text = _first_line(getattr(error, 'kwargs', {}).get('detail')
                       or error)
    # inventory names bare options ("set cluster_name ..."): name the group.
    for option in ('cluster_name', 'datacenter', 'vm_folder',
                   'datastore_regex'):
        text = text.replace('set %s' % option,
                            'set [xhv_vmware] %s' % option)
    return text


# -- libvirt CPU ------------------------------------------------------------

def configured_cpu(conf):
    lv = conf.libvirt
    return guest_probe.CpuConfig(
        lv.virt_type, lv.cpu_mode, tuple(lv.cpu_models or ()),
        tuple(lv.cpu_model_extra_flags or ()))


def check_libvirt_cpu(conf, uri=None):
    if conf.xhv.backend != 'libvirt':
        return success('not a libvirt compute ([xhv] backend = %s).'
                       % conf.xhv.backend)
    config = configured_cpu(conf)
    if config.virt_type not in ('kvm', 'qemu'):
        return warning('[libvirt] virt_type = %s: only kvm and qemu guests '
                       'are checked.' % config.virt_type)
    uri = uri or libvirt_uri(conf)
    try:
        with guest_probe.marker_disk() as disk:
            error = guest_probe.try_config(config, disk, uri=uri)
    except Exception as exc:
        return failure('cannot start a test guest with %s: %s'
                       % (_describe(config), _first_line(exc)),
                       'start libvirtd, or set [libvirt] connection_uri.')
    if error is None:
        return success('a test guest started with [libvirt] %s.'
                       % _describe(config))
    reason = ('a test guest does not start with [libvirt] %s: %s'
              % (_describe(config), error))
    try:
        choice = guest_probe.choose(uri=uri, environ={})
    except Exception as exc:
        return failure(reason, 'no candidate setting starts a guest on this '
                       'host either (%s); check KVM and QEMU.'
                       % _first_line(exc))
    return failure(reason, 'set in [libvirt]: %s (a test guest starts with '
                   'it on this host).' % _settings(choice.config))


def _describe(config):
    return guest_probe.CpuConfig.describe(config).replace(
        'cpu_mode=(default)', 'cpu_mode unset')


def _settings(config):
    parts = []
    for option, value in config.nova_options().items():
        if isinstance(value, list):
            value = ','.join(value)
        parts.append('%s = %s' % (option, value if value else '<unset>'))
    return ', '.join(parts)


# -- translation ------------------------------------------------------------

def check_translation_tools(conf):
    missing = qemu_img.missing_tools()
    if missing:
        return failure('%s not found on PATH.' % ' and '.join(missing),
                       'install qemu-utils (Debian/Ubuntu) or '
                       'qemu-img (RHEL).')
    try:
        formats = qemu_img.block_drivers(timeout=30)
    except translate_exceptions.TranslationError as error:
        return failure(_first_line(error), 'reinstall qemu-utils.')
    absent = [d for d in NEEDED_BLOCK_DRIVERS if d not in formats]
    if absent:
        return failure('qemu-img lacks the block driver(s) %s.'
                       % ', '.join(absent),
                       'install a qemu-img built with %s.'
                       % ', '.join(NEEDED_BLOCK_DRIVERS))
    return success('qemu-img and qemu-nbd found; block drivers %s present.'
                   % ', '.join(NEEDED_BLOCK_DRIVERS))


def staging_folders(conf):
    folders = [('[xhv] migration_state_dir', conf.xhv.migration_state_dir)]
    if conf.xhv.backend == 'vmware':
        folders.append(('[xhv_vmware] staging_dir',
                        conf.xhv_vmware.staging_dir))
    return folders


def check_staging(conf):
    notes, worst, fixes = [], Code.SUCCESS, []
    for option, path in staging_folders(conf):
        # The compute creates the folder on start: check its nearest
        # existing ancestor then.
        probe_dir = path
        while probe_dir and not os.path.exists(probe_dir):
            probe_dir = os.path.dirname(probe_dir)
        if not os.path.isdir(probe_dir or ''):
            worst = Code.FAILURE
            notes.append('%s = %s: %s is not a folder'
                         % (option, path, probe_dir))
            fixes.append('set %s to a writable folder' % option)
            continue
        try:
            fd, name = tempfile.mkstemp(prefix='.xhv-status-', dir=probe_dir)
            os.close(fd)
            os.unlink(name)
        except OSError as error:
            worst = Code.FAILURE
            notes.append('%s = %s is not writable (%s)'
                         % (option, path, error.strerror))
            fixes.append('make %s writable by nova-compute\'s user, or set '
                         '%s elsewhere' % (probe_dir, option))
            continue
        free = shutil.disk_usage(probe_dir).free
        notes.append('%s = %s writable, %.1f GiB free'
                     % (option, path, free / GiB))
        if free < LOW_FREE_BYTES:
            worst = max(worst, Code.WARNING)
            fixes.append('free space under %s: a move stages whole disks '
                         'there' % probe_dir)
    details = '; '.join(notes) + '.'
    if fixes:
        details += ' Fix: %s.' % '; '.join(fixes)
    return Result(worst, details)


# -- migration --------------------------------------------------------------

def check_exchange_secret(conf):
    if not conf.xhv.exchange_secret:
        return failure('[xhv] exchange_secret is not set: this compute '
                       'refuses cross-hypervisor moves.',
                       'set [xhv] exchange_secret to the same random value '
                       'on every XHV compute (e.g. openssl rand -hex 32).')
    if len(conf.xhv.exchange_secret) < 16:
        return warning('[xhv] exchange_secret is set but shorter than 16 '
                       'characters.',
                       'use a long random value (openssl rand -hex 32).')
    return success('[xhv] exchange_secret is set (not shown).')


def check_exchange_port(conf):
    host, port = conf.xhv.exchange_bind_host, conf.xhv.exchange_port
    if port == 0:
        return success('[xhv] exchange_port = 0: the kernel chooses a port.')
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            return failure('cannot listen on %s:%d ([xhv] exchange_bind_host'
                           ' / exchange_port): %s'
                           % (host, port, error.strerror),
                           'set [xhv] exchange_bind_host to an address of '
                           'this host and exchange_port to a free port.')
        owner = port_owner(port)
        if owner and 'nova-compute' in owner:
            return success('[xhv] exchange_port %d is served by %s (ours).'
                           % (port, owner))
        return failure('[xhv] exchange_port %d on %s is used by %s.'
                       % (port, host, owner or 'another process'),
                       'stop that process or set [xhv] exchange_port to a '
                       'free port (the same on every compute).')
    finally:
        sock.close()
    return success('[xhv] exchange_port %d on %s is free.' % (port, host))


def port_owner(port):
    """'name (pid N)' of the process listening on TCP ``port``, or None."""
    try:
        import psutil
        for conn in psutil.net_connections(kind='tcp'):
            if (conn.status == psutil.CONN_LISTEN and conn.laddr
                    and conn.laddr.port == port and conn.pid):
                proc = psutil.Process(conn.pid)
                cmdline = ' '.join(proc.cmdline()[:3])
                return '%s (pid %d)' % (cmdline or proc.name(), conn.pid)
    except Exception:  # psutil missing or no permission: owner unknown
        return None
    return None


def check_exchange_tls(conf, now=None):
    xhv = conf.xhv
    if not xhv.exchange_use_tls:
        return warning('[xhv] exchange_use_tls = False: disks cross the '
                       'network unencrypted.',
                       'turn exchange_use_tls on with exchange_cert_file '
                       'and exchange_key_file, unless the migration network'
                       ' is trusted and isolated.')
    unset = [o for o in ('exchange_cert_file', 'exchange_key_file')
             if not getattr(xhv, o)]
    if unset:
        return failure('[xhv] exchange_use_tls is on but %s %s not set.'
                       % (' and '.join('[xhv] %s' % o for o in unset),
                          'is' if len(unset) == 1 else 'are'),
                       'set [xhv] exchange_cert_file and exchange_key_file '
                       '(PEM), or exchange_use_tls = False on a trusted '
                       'network.')
    for option in ('exchange_cert_file', 'exchange_key_file',
                   'exchange_ca_file'):
        path = getattr(xhv, option)
        if path and not os.access(path, os.R_OK):
            return failure('[xhv] %s = %s is not readable.' % (option, path),
                           'make it readable by nova-compute\'s user.')
    try:
        from cryptography import x509
        with open(xhv.exchange_cert_file, 'rb') as f:
            cert = x509.load_pem_x509_certificate(f.read())
    except (OSError, ValueError) as error:
        return failure('[xhv] exchange_cert_file = %s is not a PEM '
                       'certificate: %s' % (xhv.exchange_cert_file,
                                            _first_line(error)),
                       'point [xhv] exchange_cert_file at the PEM '
                       'certificate.')
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(xhv.exchange_cert_file,
                                xhv.exchange_key_file)
    except (OSError, ssl.SSLError) as error:
        return failure('[xhv] exchange_key_file = %s does not go with '
                       'exchange_cert_file: %s'
                       % (xhv.exchange_key_file, _first_line(error)),
                       'set [xhv] exchange_key_file to the certificate\'s '
                       'private key.')
    now = now or datetime.datetime.now(datetime.timezone.utc)
    not_after = cert.not_valid_after_utc
    if not_after <= now:
        return failure('[xhv] exchange_cert_file expired on %s.'
                       % not_after.date(), 'renew the certificate.')
    if cert.not_valid_before_utc > now:
        return failure('[xhv] exchange_cert_file is valid only from %s.'
                       % cert.not_valid_before_utc,
                       'check the clock of this host or the certificate.')
    days = (not_after - now).days
    if days < CERT_WARN_DAYS:
        return warning('[xhv] exchange_cert_file expires in %d day(s), on '
                       '%s.' % (days, not_after.date()),
                       'renew the certificate.')
    if xhv.exchange_insecure:
        return warning('TLS certificate and key are valid until %s, but '
                       '[xhv] exchange_insecure = True: other computes\' '
                       'certificates are not verified.' % not_after.date(),
                       'set [xhv] exchange_ca_file and exchange_insecure ='
                       ' False.')
    return success('TLS certificate and key valid until %s.'
                   % not_after.date())


# -- the command ------------------------------------------------------------

CHECKS = (
    ('backend', check_backend),
    ('hypervisor', check_hypervisor),
    ('libvirt CPU', check_libvirt_cpu),
    ('translation tools', check_translation_tools),
    ('staging folder', check_staging),
    ('exchange secret', check_exchange_secret),
    ('exchange port', check_exchange_port),
    ('exchange TLS', check_exchange_tls),
)


class Checks(upgradecheck.UpgradeCommands):
    """XHV's checks as oslo.upgradecheck commands, one line each."""

    display_title = 'XHV status'

    def __init__(self, conf, checks=CHECKS):
        self.conf = conf
        self.checks = checks

    def run_checks(self):
        results = []
        for name, func in self.checks:
            try:
                result = func(self.conf)
            except Exception as error:  # a check must never hide the others
                result = failure('the check itself failed: %s: %s'
                                 % (type(error).__name__, _first_line(error)))
            results.append((name, result))
        return results

    def check(self, as_json=False, out=None):
        out = out or sys.stdout
        results = self.run_checks()
        code = max([r.code for _, r in results], default=Code.SUCCESS)
        if as_json:
            print(json.dumps({'name': self.display_title, 'checks': [
                {'check': name, 'result': int(r.code),
                 'status': NAMES[r.code], 'details': r.details}
                for name, r in results]}), file=out)
        else:
            width = max(len(name) for name, _ in results)
            for name, r in results:
                print('%-7s  %-*s  %s' % (NAMES[r.code], width, name,
                                          ' '.join((r.details or '')
                                                   .split())), file=out)
        return code


def register(conf):
    """Nova's [libvirt] and paths options and XHV's on ``conf``.

    By group name: option groups registered by object keep their values
    in the shared object, which would leak overrides between ConfigOpts.
    """
    from nova.conf import libvirt as nova_libvirt
    from nova.conf import netconf
    from nova.conf import paths

    from nova_xhv.conf import opts

    paths.register_opts(conf)
    netconf.register_opts(conf)
    groups = list(nova_libvirt.list_opts().items()) + opts.list_opts()
    for group, options in groups:
        conf.register_opts(options, group=group.name)


def main(argv=None):
    # Nova's modules warn about eventlet on import: not the operator's news.
    warnings.simplefilter('ignore')
    conf = cfg.ConfigOpts()
    register(conf)
    conf.register_cli_opt(cfg.BoolOpt(
        'json', default=False, help='Print the results as JSON.'))
    argv = sys.argv[1:] if argv is None else argv
    # "xhv-status upgrade check" works too, like nova-status.
    if argv[:2] == ['upgrade', 'check']:
        argv = argv[2:]
    try:
        conf(argv, project='nova', prog='xhv-status')
    except cfg.Error as error:
        print('xhv-status: %s' % error, file=sys.stderr)
        return 2
    return int(Checks(conf).check(as_json=conf.json))


if __name__ == '__main__':
    sys.exit(main())
