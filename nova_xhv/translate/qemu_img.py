"""Running qemu-img: always with ``-f``, always under resource limits.

``info`` and ``compare`` are short calls through oslo.concurrency's
processutils with prlimit.  ``convert`` runs under the same prlimit
wrapper in our own loop so we can read ``-p`` progress, enforce a wall
timeout and kill the process group cleanly.  Two seams (``_execute`` and
``_popen``) launch every process; tests wrap them to record argv.
"""

import collections
import errno
import json
import mmap
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time

from oslo_concurrency import processutils
from oslo_log import log as logging

from nova_xhv.translate import block_spec
from nova_xhv.translate import child_environ
from nova_xhv.translate import exceptions

LOG = logging.getLogger(__name__)

QEMU_IMG = 'qemu-img'
QEMU_NBD = 'qemu-nbd'
_PROGRESS_RE = re.compile(rb'\((\d+(?:\.\d+)?)/100%\)')
_KILL_GRACE = 5.0

Limits = collections.namedtuple('Limits', 'cpu_seconds address_space')
# stderr: what the converter said on stderr (the tail), even on success.
ConvertRun = collections.namedtuple('ConvertRun',
                                    'elapsed bytes_read returncode stderr',
                                    defaults=('',))


def _execute(*cmd, **kwargs):
    """Seam: every short qemu-img call goes through here.

    With the scrubbed environment of child_environ, never the caller's.
    """
    kwargs.setdefault('env_variables', child_environ.for_qemu())
    return processutils.execute(*cmd, **kwargs)


def _popen(argv, **kwargs):
    """Seam: every qemu-img convert process starts here."""
    return subprocess.Popen(argv, **kwargs)


def process_limits(limits):
    return processutils.ProcessLimits(cpu_time=int(limits.cpu_seconds),
                                      address_space=int(limits.address_space))


def prlimit_argv(limits, prefer_binary=True):
    """A wrapper that sets the limits, then execs the command.

    util-linux's ``prlimit`` when installed (an exec, ~1 ms); otherwise the
    same Python wrapper processutils uses (~30 ms of interpreter start).
    Both take the same ``--as=``/``--cpu=`` arguments.
    """
    args = process_limits(limits).prlimit_args() + ['--']
    binary = shutil.which('prlimit') if prefer_binary else None
    if binary:
        return [binary] + args
    return [sys.executable, '-m', 'oslo_concurrency.prlimit'] + args


# qemu's cache modes for a conversion's output: ``none`` opens it with
# O_DIRECT, ``unsafe`` (qemu-img convert's default) writes through the host
# page cache and skips flushes.
CACHE_DIRECT = 'none'
CACHE_PAGE = 'unsafe'
_DIRECT_IO_PROBE = 4096  # aligned for any logical block size up to 4 KiB


def supports_direct_io(folder):
    """True when files in ``folder`` can be written with O_DIRECT.

    Nova asks the same before it converts into an instance folder: tmpfs
    before Linux 6.6, and some network and FUSE filesystems, refuse
    O_DIRECT (EINVAL).
    """
    if not hasattr(os, 'O_DIRECT'):
        return False
    path = os.path.join(folder, '.xhv-direct-io-probe.%d' % os.getpid())
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY |
                     os.O_DIRECT, 0o600)
    except OSError as error:
        if error.errno == errno.EINVAL:
            return False
        raise
    try:
        # O_DIRECT needs an aligned buffer: an anonymous mapping is one.
        with mmap.mmap(-1, _DIRECT_IO_PROBE) as buf:
            os.write(fd, buf)
        return True
    except OSError as error:
        if error.errno == errno.EINVAL:
            return False
        raise
    finally:
        os.close(fd)
        os.unlink(path)


def _limit_hint(returncode, limits):
    if returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return (' (qemu-img was stopped by its CPU-time limit of %d s; raise '
                'qemu_img_cpu_seconds if the disk is just large)' %
                limits.cpu_seconds)
    return ''


def info(path, qemu_format, limits, timeout, objects=(), force_share=False):
    """``qemu-img info --output=json`` of an already inspected image.

    ``force_share`` (``-U``) reads an image a stopped guest's hypervisor
    may still hold locked.
    """
    cmd = [QEMU_IMG, 'info'] + list(objects) + (
        ['--force-share'] if force_share else []) + [
        '-f', qemu_format, '--output=json', path]
    try:
        out, _err = _execute(*cmd, prlimit=process_limits(limits),
                             timeout=timeout)
    except processutils.ProcessExecutionError as exc:
        raise exceptions.ConversionFailed(
            'qemu-img info of %s failed%s' % (
                _display(path), _limit_hint(exc.exit_code, limits)),
            exc.exit_code, exc.stderr or '')
    return json.loads(out)


# qemu-img check's exit codes: 2 corruptions, 3 only leaked clusters
# (harmless for a reader), 63 the format has no check.
_CHECK_CORRUPT = 2
_CHECK_LEAKS = 3
_CHECK_UNSUPPORTED = 63


def check(path, qemu_format, limits, timeout):
    """Problems ``qemu-img check`` finds in a source, as one-line reasons.

    An empty list when the image is consistent (leaked clusters are) or the
    format has no check (raw, vpc).  Only metadata is read.
    """
    # util-linux prlimit (an exec) rather than processutils' Python
    # wrapper: the check runs before every conversion.
    cmd = prlimit_argv(limits) + [QEMU_IMG, 'check', '-f', qemu_format,
                                  '--output=json', path]
    try:
        out, err = _execute(*cmd, timeout=timeout,
                            check_exit_code=[0, 1, _CHECK_CORRUPT,
                                             _CHECK_LEAKS,
                                             _CHECK_UNSUPPORTED])
    except processutils.ProcessExecutionError as exc:
        return ['qemu-img check could not read it%s: %s' % (
            _limit_hint(exc.exit_code, limits),
            _last_line(exc.stderr, path) or 'exit code %s' % exc.exit_code)]
    try:
        data = json.loads(out) if out.strip() else {}
    except ValueError:
        data = {}
    problems = []
    if data.get('corruptions'):
        problems.append('qemu-img check found %d corruption(s), e.g. tables '
                        'pointing past the end of the file' %
                        data['corruptions'])
    if data.get('check-errors'):
        problems.append('qemu-img check could not read %d part(s) of the '
                        'metadata' % data['check-errors'])
    if not problems and not data and err.strip() and \
            'does not support checks' not in err:
        problems.append('qemu-img check failed: %s' % _last_line(err, path))
    return problems


def _last_line(text, path):
    """qemu's last line of ``text``, naming ``path`` as display() does."""
    text = (text or '').replace("'%s'" % path, block_spec.display(path))
    lines = text.strip().splitlines()
    return lines[-1][:300] if lines else ''


def create(path, qemu_format, virtual_size, limits, timeout,
           create_options=()):
    """``qemu-img create`` an empty image (the stream decoder's output)."""
    cmd = [QEMU_IMG, 'create', '-q', '-f', qemu_format]
    if create_options:
        cmd += ['-o', ','.join(create_options)]
    cmd += [path, str(int(virtual_size))]
    try:
        _execute(*cmd, prlimit=process_limits(limits), timeout=timeout)
    except processutils.ProcessExecutionError as exc:
        raise exceptions.ConversionFailed(
            'qemu-img create of %s failed%s' % (
                path, _limit_hint(exc.exit_code, limits)),
            exc.exit_code, exc.stderr or '')


def create_overlay(path, backing, backing_format, timeout):
    """A qcow2 overlay over ``backing``, a file the caller made and trusts.

    For throwaway guests that must never write their disk (the guest
    probe); never for a user's image: those are opened through block_spec.
    """
    cmd = [QEMU_IMG, 'create', '-q', '-f', 'qcow2', '-b',
           os.path.abspath(backing), '-F', backing_format,
           os.path.abspath(path)]
    try:
        _execute(*cmd, timeout=timeout)
    except (OSError, processutils.ProcessExecutionError) as exc:
        raise exceptions.ConversionFailed(
            'qemu-img create of the overlay %s failed: %s' % (
                path, _first_line(exc)),
            getattr(exc, 'exit_code', None), getattr(exc, 'stderr', ''))


def missing_tools():
    """The qemu programs the engine runs that are not on PATH."""
    return [tool for tool in (QEMU_IMG, QEMU_NBD)
            if shutil.which(tool) is None]


def block_drivers(timeout):
    """The block drivers this qemu-img was built with (``--help``)."""
    try:
        out, _err = _execute(QEMU_IMG, '--help', timeout=timeout)
    except (OSError, processutils.ProcessExecutionError) as exc:
        raise exceptions.TranslationError(
            'qemu-img --help failed: %s' % _first_line(exc))
    drivers = set()
    for line in out.splitlines():
        if line.startswith('Supported formats:'):
            drivers.update(line.split(':', 1)[1].split())
    return drivers


def _first_line(error):
    text = (getattr(error, 'stderr', None) or str(error) or '').strip()
    return text.splitlines()[0] if text else type(error).__name__


def resize(path, qemu_format, virtual_size, limits, timeout):
    """``qemu-img resize`` an image (grow only: callers check the size)."""
    cmd = [QEMU_IMG, 'resize', '-f', qemu_format, path,
           str(int(virtual_size))]
    try:
        _execute(*cmd, prlimit=process_limits(limits), timeout=timeout)
    except processutils.ProcessExecutionError as exc:
        raise exceptions.ConversionFailed(
            'qemu-img resize of %s failed%s' % (
                path, _limit_hint(exc.exit_code, limits)),
            exc.exit_code, exc.stderr or '')


def compare(path_a, format_a, path_b, format_b, limits, timeout,
            objects=()):
    """True when both images hold the same guest data.

    Sizes may differ only by zeros (qemu-img's non-strict mode); callers
    compare virtual sizes separately.
    """
    cmd = [QEMU_IMG, 'compare'] + list(objects) + [
        '-f', format_a, '-F', format_b, path_a, path_b]
    try:
        _execute(*cmd, prlimit=process_limits(limits), timeout=timeout,
                 check_exit_code=[0])
    except processutils.ProcessExecutionError as exc:
        if exc.exit_code == 1:
            return False
        raise exceptions.ConversionFailed(
            'qemu-img compare of %s and %s failed%s' % (
                _display(path_a), _display(path_b),
                _limit_hint(exc.exit_code, limits)),
            exc.exit_code, exc.stderr or '')
    return True


def _display(path):
    """A source name for messages: a spec shows the file it opens."""
    return block_spec.display(path)


def convert_argv(src, src_format, dst, dst_format, create_options=(),
                 sparse_size=4096, coroutines=8, out_of_order=False,
                 rate_limit=0, objects=(), progress=True, cache=None):
    """The exact qemu-img convert command line (the benchmark uses it too).

    ``-f`` is always given; ``-n`` never (qemu-img creates the target).
    ``cache`` is the output's cache mode (``-t``); None is qemu-img's
    default (CACHE_PAGE).
    """
    argv = [QEMU_IMG, 'convert']
    argv.extend(objects)
    if progress:
        argv.append('-p')
    if cache:
        argv += ['-t', cache]
    argv += ['-f', src_format, '-O', dst_format]
    if create_options:
        argv += ['-o', ','.join(create_options)]
    argv += ['-S', str(int(sparse_size))]
    argv += ['-m', str(int(coroutines))]
    if out_of_order:
        argv.append('-W')
    if rate_limit:
        argv += ['-r', str(int(rate_limit))]
    argv += [src, dst]
    return argv


def parse_progress(buffer):
    """The last complete ``(NN.NN/100%)`` value in ``buffer``, or None."""
    values = _PROGRESS_RE.findall(buffer)
    return float(values[-1]) if values else None


def _io_bytes_read(pid):
    """rchar of a process that has exited but is not yet reaped."""
    try:
        with open('/proc/%d/io' % pid) as f:
            for line in f:
                if line.startswith('rchar:'):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _kill(proc):
    """Terminate the whole process group; escalate to SIGKILL."""
    for sig, grace in ((signal.SIGTERM, _KILL_GRACE),
                       (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_exit_unreaped(proc):
    """Wait for the child to exit, leaving it unreaped for /proc reads.

    Called once qemu-img closed both pipes, i.e. while it exits.
    """
    try:
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def run_convert(argv, limits, timeout, progress=None, cancel_event=None,
                input_data=None, env=None, what='qemu-img convert',
                hand_over_fds=()):
    """Run ``argv`` (a convert_argv) under prlimit; return ConvertRun.

    ``progress(percent)`` is called with non-decreasing values: at start,
    on every change qemu-img reports, at least once a second, and with 100
    at the end.  Raises ConversionTimeout after ``timeout`` seconds and
    ConversionFailed on a non-zero exit or cancellation; the process group
    is always gone when this returns.  Any other converter that prints
    progress as ``qemu-img -p`` does runs here too (the vmdk stream
    decoder): ``input_data`` (a short configuration, written to its stdin
    before anything else), ``env``, ``what`` (its name in messages) and
    ``hand_over_fds``: descriptors the child inherits and this process
    gives up (closed here once the child started, so that the stream
    writer's pipe ends when the child does).
    """
    started = time.monotonic()
    deadline = started + timeout
    if env is None:
        env = child_environ.for_qemu()
    extra = {'pass_fds': tuple(hand_over_fds)} if hand_over_fds else {}
    try:
        proc = _popen(prlimit_argv(limits) + list(argv),
                      stdin=subprocess.DEVNULL if input_data is None
                      else subprocess.PIPE,
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      start_new_session=True, env=env, **extra)
    finally:
        for fd in hand_over_fds:
            os.close(fd)
    if input_data is not None:
        # The child reads this before anything else, so a line larger
        # than the pipe (a CA bundle inside) only waits for it.
        try:
            proc.stdin.write(input_data)
            proc.stdin.close()
        except OSError:
            pass  # it died at once: its exit status and stderr tell why
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ, 'out')
    selector.register(proc.stderr, selectors.EVENT_READ, 'err')
    out_tail = b''
    err = b''
    percent = 0.0
    last_report = time.monotonic()
    if progress:
        progress(percent)
    try:
        while selector.get_map():
            now = time.monotonic()
            if now >= deadline:
                _kill(proc)
                raise exceptions.ConversionTimeout(
                    '%s ran longer than its %.0f s budget and was killed; '
                    'raise convert_timeout_base/_per_gib if the storage is '
                    'just slow' % (what, timeout))
            if cancel_event is not None and cancel_event.is_set():
                _kill(proc)
                raise exceptions.ConversionFailed('conversion cancelled')
            wait = min(1.0 - (now - last_report), deadline - now)
            for key, _events in selector.select(timeout=max(wait, 0.01)):
                data = os.read(key.fileobj.fileno(), 65536)
                if not data:
                    selector.unregister(key.fileobj)
                elif key.data == 'out':
                    out_tail = (out_tail + data)[-256:]
                    value = parse_progress(out_tail)
                    if value is not None and value > percent:
                        percent = value
                        if progress:
                            progress(percent)
                            last_report = time.monotonic()
                else:
                    err = (err + data)[-16384:]
            if progress and time.monotonic() - last_report >= 1.0:
                progress(percent)
                last_report = time.monotonic()
        bytes_read = None
        if _wait_exit_unreaped(proc):
            bytes_read = _io_bytes_read(proc.pid)
        try:
            returncode = proc.wait(timeout=max(deadline - time.monotonic(),
                                               0.1))
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise exceptions.ConversionTimeout(
                '%s did not exit within its %.0f s budget and was killed'
                % (what, timeout))
    except BaseException:
        if proc.poll() is None:
            _kill(proc)
        raise
    finally:
        selector.close()
        proc.stdout.close()
        proc.stderr.close()
    stderr = err.decode('utf-8', 'replace')
    if returncode != 0:
        raise exceptions.ConversionFailed(
            '%s failed with exit code %s%s' % (
                what, returncode, _limit_hint(returncode, limits)),
            returncode, stderr)
    if progress and percent < 100.0:
        progress(100.0)
    return ConvertRun(elapsed=time.monotonic() - started,
                      bytes_read=bytes_read, returncode=returncode,
                      stderr=stderr)
