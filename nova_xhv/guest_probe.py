"""Which ``[libvirt]`` CPU settings start a guest on this host, found by
starting one.

Hosts differ: on some (AMD EPYC under nested KVM, QEMU 7.2) KVM refuses the
host-model CPU Nova uses by default (IA32_ARCH_CAPABILITIES, MSR 0x10a), and
some cannot run a Linux kernel under KVM at all.  ``/dev/kvm`` existing says
none of that.  So the probe starts a throwaway libvirt domain from the disk
the caller needs with each candidate in turn, keeps the first whose marker
appears on the serial console, and caches the answer for this boot of the
machine.

The ``<cpu>`` element of a candidate is the one Nova's libvirt driver
(``_get_guest_cpu_model_config``) writes for the same ``[libvirt]``
settings, so the verdict predicts Nova's guests.

Python callers use :func:`choose`; shell scripts the ``xhv-guest-probe``
command (``--output shell`` prints variables to ``eval``).  The environment
variables ``XHV_LIBVIRT_VIRT_TYPE``, ``XHV_LIBVIRT_CPU_MODE``,
``XHV_LIBVIRT_CPU_MODELS`` and ``XHV_LIBVIRT_CPU_MODEL_EXTRA_FLAGS`` win over
any probe.
"""

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
import uuid
from xml.sax import saxutils

from nova_xhv.translate import exceptions as translate_exceptions
from nova_xhv.translate import qemu_img

BOOT_MARKER = b'XHV-BOOT-OK'
DEFAULT_URI = 'qemu:///system'
DEFAULT_TIMEOUT = 30.0
CACHE_DIRS = ('/run/xhv', os.path.join(tempfile.gettempdir(), 'xhv-run'))
# Domains of the probe are named with this prefix and a random suffix.
DOMAIN_PREFIX = 'xhv-probe-'
POLL_INTERVAL = 0.05
OVERLAY_TIMEOUT = 30

ENV_VIRT_TYPE = 'XHV_LIBVIRT_VIRT_TYPE'
ENV_CPU_MODE = 'XHV_LIBVIRT_CPU_MODE'
ENV_CPU_MODELS = 'XHV_LIBVIRT_CPU_MODELS'
ENV_EXTRA_FLAGS = 'XHV_LIBVIRT_CPU_MODEL_EXTRA_FLAGS'
ENV_NAMES = (ENV_VIRT_TYPE, ENV_CPU_MODE, ENV_CPU_MODELS, ENV_EXTRA_FLAGS)

# 16-bit real mode: write DS:SI to COM1 (port 0x3f8) until NUL, then hlt.
_BOOT_CODE = bytes.fromhex('FA31C08ED8BE167CBAF803AC84C07403EEEBF8F4EBFD')


class ProbeError(Exception):
    """No candidate started the guest, or the probe could not run."""


@dataclasses.dataclass(frozen=True)
class CpuConfig:
    """Nova's [libvirt] virt_type, cpu_mode, cpu_models, extra flags.

    ``cpu_mode`` None is Nova's default (host-model on x86).
    """

    virt_type: str
    cpu_mode: str = None
    cpu_models: tuple = ()
    cpu_model_extra_flags: tuple = ()

    def describe(self):
        parts = ['virt_type=%s' % self.virt_type,
                 'cpu_mode=%s' % (self.cpu_mode or '(default)')]
        if self.cpu_models:
            parts.append('cpu_models=%s' % ','.join(self.cpu_models))
        if self.cpu_model_extra_flags:
            parts.append('cpu_model_extra_flags=%s'
                         % ','.join(self.cpu_model_extra_flags))
        return ' '.join(parts)

    def nova_options(self):
        """{option: value} for nova.conf's [libvirt] (None, []: unset)."""
        return {
            'virt_type': self.virt_type,
            'cpu_mode': self.cpu_mode,
            'cpu_models': list(self.cpu_models),
            'cpu_model_extra_flags': list(self.cpu_model_extra_flags),
        }

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data):
        return cls(data['virt_type'], data.get('cpu_mode'),
                   tuple(data.get('cpu_models') or ()),
                   tuple(data.get('cpu_model_extra_flags') or ()))


# In order: Nova's default; host-model without IA32_ARCH_CAPABILITIES (AMD
# hosts whose KVM refuses MSR 0x10a); host-passthrough without it; TCG.
CANDIDATES = (
    CpuConfig('kvm'),
    CpuConfig('kvm', 'host-model', (), ('-arch-capabilities',)),
    CpuConfig('kvm', 'host-passthrough', (), ('-arch-capabilities',)),
    CpuConfig('qemu'),
)


@dataclasses.dataclass
class Choice:
    """The CPU configuration chosen and why (``reason``: one line)."""

    config: CpuConfig
    reason: str
    source: str  # probe | cache | environment
    failures: list = dataclasses.field(default_factory=list)

    def line(self):
        return 'xhv: libvirt CPU: %s (%s)' % (self.config.describe(),
                                              self.reason)

    def to_dict(self):
        return {'config': self.config.to_dict(), 'reason': self.reason,
                'source': self.source, 'failures': self.failures}


# -- the guest -------------------------------------------------------------

def boot_sector(marker=BOOT_MARKER):
    """512 bytes an x86 BIOS boots: prints ``marker`` on COM1 and halts."""
    message = marker + b'\r\n\0'
    body = _BOOT_CODE + message
    if len(body) > 446:
        raise ValueError('marker too long for a boot sector')
    sector = bytearray(512)
    sector[:len(body)] = body
    # One ordinary partition: Nova's image inspection refuses an MBR with an
    # empty partition table; the BIOS ignores it.
    sector[446:462] = (b'\x80\x00\x02\x00\x83\xfe\xff\xff'
                       + (1).to_bytes(4, 'little')
                       + (2047).to_bytes(4, 'little'))
    sector[510:512] = b'\x55\xaa'
    return bytes(sector)


def disk_identity(path):
    """What a cached answer for ``path`` depends on.

    The content of a small disk; else its path, size and modification time.
    """
    st = os.stat(path)
    if st.st_size <= 1024 * 1024:
        with open(path, 'rb') as f:
            return 'sha256:' + hashlib.sha256(f.read()).hexdigest()
    return '%s:%d:%d' % (os.path.realpath(path), st.st_size, st.st_mtime_ns)


def cpu_xml(config, arch=None):
    """The ``<cpu>`` element Nova's libvirt driver writes for ``config``.

    As ``_get_guest_cpu_model_config`` does (x86 and aarch64 defaults), with
    the one-vCPU topology Nova adds.
    """
    arch = arch or os.uname().machine
    mode = config.cpu_mode
    if mode is None:
        mode = 'host-passthrough' if arch == 'aarch64' else 'host-model'
    if mode == 'none':
        return "<cpu match='exact'/>"
    models = list(config.cpu_models)
    if mode == 'custom' and not models and arch == 'aarch64':
        models = ['max']
    parts = ["<cpu mode='%s' match='exact'>" % _attr(mode)]
    if models:
        parts.append('<model>%s</model>' % saxutils.escape(models[0]))
    parts.append("<topology sockets='1' cores='1' threads='1'/>")
    for flag in sorted(set(f.lower() for f in config.cpu_model_extra_flags)):
        if flag.startswith('-'):
            name, policy = flag.lstrip('-'), 'disable'
        else:
            name, policy = flag.lstrip('+'), 'require'
        parts.append("<feature policy='%s' name='%s'/>"
                     % (policy, _attr(name)))
    parts.append('</cpu>')
    return ''.join(parts)


def _attr(value):
    return saxutils.quoteattr(value)[1:-1]


def domain_xml(config, name, disk, disk_format, console_path,
               memory_mib=128, arch=None):
    """A one-disk, one-vCPU guest whose COM1 goes to ``console_path``."""
    return (
        "<domain type='%(virt)s'><name>%(name)s</name>"
        "<memory unit='MiB'>%(mem)d</memory><vcpu>1</vcpu>"
        "<os><type>hvm</type><boot dev='hd'/></os>"
        "<features><acpi/><apic/></features>%(cpu)s"
        "<clock offset='utc'/>"
        "<on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot>"
        "<on_crash>destroy</on_crash>"
        "<devices>"
        "<disk type='file' device='disk'>"
        "<driver name='qemu' type='%(fmt)s'/>"
        "<source file='%(disk)s'/><target dev='vda' bus='virtio'/></disk>"
        "<serial type='file'><source path='%(console)s'/>"
        "<target port='0'/></serial>"
        "<memballoon model='none'/>"
        "</devices></domain>"
        % {'virt': _attr(config.virt_type), 'name': _attr(name),
           'mem': memory_mib, 'cpu': cpu_xml(config, arch),
           'fmt': _attr(disk_format), 'disk': _attr(disk),
           'console': _attr(console_path)})


# -- running one candidate -------------------------------------------------

def _first_line(text):
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return str(text).strip()


def _qemu_error(name):
    """The first error QEMU logged for domain ``name`` (libvirt's log)."""
    path = '/var/log/libvirt/qemu/%s.log' % name
    try:
        with open(path, errors='replace') as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
    for line in lines:
        lowered = line.lower()
        if ('error' in lowered or 'assertion' in lowered
                or 'failed' in lowered):
            return line.strip()
    return None


def _workdir():
    for base in CACHE_DIRS:
        try:
            os.makedirs(base, mode=0o755, exist_ok=True)
            path = tempfile.mkdtemp(prefix='probe-', dir=base)
        except OSError:
            continue
        # libvirt's qemu user must reach the overlay and the console file.
        os.chmod(base, 0o755)
        os.chmod(path, 0o755)
        return path
    raise ProbeError('no writable folder for the probe in %s'
                     % ', '.join(CACHE_DIRS))


def _libvirt():
    import libvirt

    # libvirt prints every error on stderr unless a handler takes it; the
    # probe reports the ones that matter itself.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt


def try_config(config, disk, marker=BOOT_MARKER, disk_format='raw',
               uri=DEFAULT_URI, timeout=DEFAULT_TIMEOUT, memory_mib=128):
    """Start ``disk`` with ``config``: None if it printed ``marker``.

    Else the first line of the error: libvirt's, QEMU's, or no marker on
    the serial console within ``timeout``.

    The domain is transient and auto-destroyed with the connection: it is
    gone when this returns, whatever happened, and if this process dies.
    The disk is never written: the guest runs on a qcow2 overlay.  Like
    any disk of a libvirt guest, libvirt's qemu user must be able to
    reach it (every parent folder searchable).
    """
    libvirt = _libvirt()
    if isinstance(marker, str):
        marker = marker.encode()
    workdir = _workdir()
    name = DOMAIN_PREFIX + uuid.uuid4().hex[:12]
    overlay = os.path.join(workdir, 'disk.qcow2')
    console = os.path.join(workdir, 'console.log')
    conn = None
    dom = None
    try:
        try:
            qemu_img.create_overlay(overlay, disk, disk_format,
                                    timeout=OVERLAY_TIMEOUT)
        except translate_exceptions.TranslationError as exc:
            return _first_line(str(exc))
        os.chmod(overlay, 0o644)
        conn = libvirt.open(uri)
        xml = domain_xml(config, name, overlay, 'qcow2', console,
                         memory_mib=memory_mib)
        try:
            dom = conn.createXML(xml, libvirt.VIR_DOMAIN_START_AUTODESTROY)
        except libvirt.libvirtError as exc:
            return _first_line(exc.get_error_message() or exc)
        return _wait_for_marker(libvirt, dom, name, console, marker,
                                timeout)
    finally:
        if dom is not None:
            with contextlib.suppress(Exception):
                dom.destroy()
        if conn is not None:
            with contextlib.suppress(Exception):
                # A persistent definition under our name, should one exist.
                conn.lookupByName(name).undefine()
            with contextlib.suppress(Exception):
                conn.close()
        shutil.rmtree(workdir, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink('/var/log/libvirt/qemu/%s.log' % name)


def _console_has(path, marker):
    try:
        with open(path, 'rb') as f:
            return marker in f.read()
    except OSError:
        return False


def _wait_for_marker(libvirt, dom, name, console, marker, timeout):
    deadline = time.monotonic() + timeout
    while True:
        if _console_has(console, marker):
            return None
        try:
            state, reason = dom.state()
        except libvirt.libvirtError:
            state, reason = None, None
        if state != libvirt.VIR_DOMAIN_RUNNING:
            if _console_has(console, marker):
                return None
            error = _qemu_error(name)
            return error or ('the guest stopped (libvirt state %s, reason '
                             '%s) before printing its marker'
                             % (state, reason))
        if time.monotonic() > deadline:
            return ('no marker on the serial console within %gs (the guest '
                    'hangs)' % timeout)
        time.sleep(POLL_INTERVAL)


# -- choosing, with cache and override ---------------------------------------

def from_environment(environ=None):
    """The CPU configuration the environment forces, or None."""
    environ = os.environ if environ is None else environ
    if not any(environ.get(name) for name in ENV_NAMES):
        return None

    def split(name):
        return tuple(v.strip() for v in environ.get(name, '').split(',')
                     if v.strip())

    return CpuConfig(environ.get(ENV_VIRT_TYPE) or 'kvm',
                     environ.get(ENV_CPU_MODE) or None,
                     split(ENV_CPU_MODELS), split(ENV_EXTRA_FLAGS))


def _boot_id():
    try:
        with open('/proc/sys/kernel/random/boot_id') as f:
            return f.read().strip()
    except OSError:
        return 'unknown'


def cache_key(disk, marker, candidates, uri=DEFAULT_URI):
    """Boot of the machine, QEMU and libvirt versions, disk and candidates."""
    libvirt = _libvirt()
    conn = libvirt.open(uri)
    try:
        versions = (conn.getVersion(), conn.getLibVersion())
    finally:
        conn.close()
    if isinstance(marker, str):
        marker = marker.encode()
    material = json.dumps({
        'boot_id': _boot_id(), 'qemu': versions[0], 'libvirt': versions[1],
        'uri': uri, 'disk': disk_identity(disk), 'marker': marker.hex(),
        'candidates': [c.to_dict() for c in candidates]}, sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:24]


def _cache_dir():
    for base in CACHE_DIRS:
        try:
            os.makedirs(base, mode=0o755, exist_ok=True)
        except OSError:
            continue
        if os.access(base, os.W_OK):
            return base
    return None


@contextlib.contextmanager
def _locked(path):
    with open(path, 'a') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def probe(candidates=CANDIDATES, disk=None, marker=BOOT_MARKER,
          disk_format='raw', uri=DEFAULT_URI, timeout=DEFAULT_TIMEOUT,
          memory_mib=128):
    """Try ``candidates`` in order; the first that starts the guest."""
    failures = []
    with marker_disk(disk, marker) as path:
        for config in candidates:
            error = try_config(config, path, marker, disk_format, uri,
                               timeout, memory_mib)
            if error is None:
                if failures:
                    why = '; '.join('%s failed: %s' % (f['config'],
                                                       f['error'])
                                    for f in failures)
                    reason = 'started the guest after: %s' % why
                else:
                    reason = 'the first candidate started the guest'
                return Choice(config, reason, 'probe', failures)
            failures.append({'config': config.describe(), 'error': error})
    raise ProbeError('no CPU configuration started the guest: %s'
                     % '; '.join('%s: %s' % (f['config'], f['error'])
                                 for f in failures))


@contextlib.contextmanager
def marker_disk(disk=None, marker=BOOT_MARKER):
    """``disk``, or a temporary disk that prints ``marker`` and halts.

    The temporary disk is 1 MiB, sparse, with the boot sector in front;
    it is removed on exit.
    """
    if disk is not None:
        yield disk
        return
    if isinstance(marker, str):
        marker = marker.encode()
    workdir = _workdir()
    try:
        path = os.path.join(workdir, 'boot-sector.raw')
        with open(path, 'wb') as f:
            f.write(boot_sector(marker))
            # SeaBIOS does not boot a one-sector disk: 1 MiB, sparse.
            f.truncate(1024 * 1024)
        os.chmod(path, 0o644)
        yield path
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def choose(disk=None, marker=BOOT_MARKER, disk_format='raw',
           candidates=CANDIDATES, uri=DEFAULT_URI, timeout=DEFAULT_TIMEOUT,
           use_cache=True, environ=None, memory_mib=128):
    """The CPU configuration for guests booting ``disk`` on this host.

    The environment override wins; then an answer cached for this boot of
    the machine (same QEMU, libvirt, disk, marker and candidates); else
    :func:`probe`.  ``disk`` None: the 512-byte boot-sector disk.
    """
    forced = from_environment(environ)
    if forced is not None:
        return Choice(forced, 'from the environment: %s' % ', '.join(
            n for n in ENV_NAMES
            if (os.environ if environ is None else environ).get(n)),
            'environment')
    if isinstance(marker, str):
        marker = marker.encode()
    with marker_disk(disk, marker) as path:
        cache_dir = _cache_dir() if use_cache else None
        if cache_dir is None:
            return probe(candidates, path, marker, disk_format, uri, timeout,
                         memory_mib)
        key = cache_key(path, marker, candidates, uri)
        cache_file = os.path.join(cache_dir, 'guest-probe-%s.json' % key)
        with _locked(cache_file + '.lock'):
            cached = _read_cache(cache_file)
            if cached is not None:
                return cached
            choice = probe(candidates, path, marker, disk_format, uri,
                           timeout, memory_mib)
            tmp = cache_file + '.tmp'
            with open(tmp, 'w') as f:
                json.dump(choice.to_dict(), f)
            os.replace(tmp, cache_file)
            return choice


def _read_cache(path):
    try:
        with open(path) as f:
            data = json.load(f)
        return Choice(CpuConfig.from_dict(data['config']),
                      data['reason'] + ', cached for this boot', 'cache',
                      data.get('failures', []))
    except (OSError, ValueError, KeyError, TypeError):
        return None


# -- command line ----------------------------------------------------------

def environment(config):
    """The XHV_LIBVIRT_* variables that force ``config`` (see choose)."""
    return {
        ENV_VIRT_TYPE: config.virt_type,
        ENV_CPU_MODE: config.cpu_mode or '',
        ENV_CPU_MODELS: ','.join(config.cpu_models),
        ENV_EXTRA_FLAGS: ','.join(config.cpu_model_extra_flags),
    }


def shell_lines(config):
    """``NAME=value`` lines (shell-quoted) of the environment override."""
    return ['%s=%s' % (k, shlex.quote(v))
            for k, v in environment(config).items()]


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='xhv-guest-probe',
        description='Find the [libvirt] virt_type / cpu_mode / '
                    'cpu_model_extra_flags that start a guest on this host '
                    'by starting one with each candidate (Nova\'s default, '
                    'host-model -arch-capabilities, host-passthrough '
                    '-arch-capabilities, TCG). The environment variables '
                    '%s override it.' % ', '.join(ENV_NAMES))
    parser.add_argument('--disk', help='disk to boot (default: a 512-byte '
                        'boot sector that prints the marker)')
    parser.add_argument('--disk-format', default='raw')
    parser.add_argument('--marker', default=BOOT_MARKER.decode(),
                        help='text the guest prints on its serial console')
    parser.add_argument('--timeout', type=float, default=DEFAULT_TIMEOUT,
                        help='seconds each candidate has to print it')
    parser.add_argument('--memory-mib', type=int, default=128)
    parser.add_argument('--uri', default=DEFAULT_URI)
    parser.add_argument('--no-cache', action='store_true')
    parser.add_argument('--output', default='line',
                        choices=('line', 'shell', 'json'),
                        help='line: the choice and why; shell: '
                             'XHV_LIBVIRT_* assignments to eval (the line '
                             'goes to stderr); json')
    args = parser.parse_args(argv)
    try:
        choice = choose(disk=args.disk, marker=args.marker,
                        disk_format=args.disk_format, uri=args.uri,
                        timeout=args.timeout, use_cache=not args.no_cache,
                        memory_mib=args.memory_mib)
    except (ProbeError, OSError) as exc:
        print('xhv: libvirt CPU: %s' % exc, file=sys.stderr)
        return 1
    except Exception as exc:  # libvirt.libvirtError: libvirtd down
        print('xhv: libvirt CPU: cannot probe: %s' % _first_line(exc),
              file=sys.stderr)
        return 1
    if args.output == 'shell':
        print(choice.line(), file=sys.stderr)
        print('\n'.join(shell_lines(choice.config)))
    elif args.output == 'json':
        print(json.dumps(choice.to_dict()))
    else:
        print(choice.line())
    return 0


if __name__ == '__main__':
    sys.exit(main())
