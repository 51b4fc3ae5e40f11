"""convert() and compare(): inspect, run qemu-img, check, verify, commit.

The output is written inside a private temporary folder next to ``dst``
under ``dst``'s own base name (a sparse vmdk records its own file name)
and linked into place only after qemu-img succeeded, the virtual size
matched and (if asked) the guest data compared equal; on any failure the
folder is removed, so no partial output is ever left behind.
"""

import contextlib
import dataclasses
import math
import os
import shutil
import tempfile
import threading
import time
import typing

from oslo_log import log as logging

from nova_xhv.translate import block_spec
from nova_xhv.translate import exceptions
from nova_xhv.translate import formats
from nova_xhv.translate import inspect
from nova_xhv.translate import nbd_bridge
from nova_xhv.translate import qemu_img
from nova_xhv.translate import remote
from nova_xhv.translate import stream_convert
from nova_xhv.translate import stream_write

LOG = logging.getLogger(__name__)

GiB = 1024 ** 3
MiB = 1024 ** 2
# Outputs written with O_DIRECT when options.direct_io (output_cache_mode).
_DIRECT_IO_TARGETS = (formats.QCOW2, formats.RAW, formats.VHDX)


@dataclasses.dataclass
class ConvertOptions:
    """Tunables of one conversion (see nova_xhv.conf.translate)."""

    max_virtual_size: int = inspect.DEFAULT_MAX_VIRTUAL_SIZE
    # prlimit for every qemu-img process.  info gets cpu_seconds; convert
    # and compare get max(cpu_seconds, 2 x their wall timeout).
    cpu_seconds: int = 30
    address_space: int = 4 * GiB
    timeout_base: float = 300.0
    timeout_per_gib: float = 60.0
    coroutines: int = 8
    out_of_order: bool = False
    rate_limit: int = 0
    sparse_size: int = 4096
    # Decode streamOptimized vmdk sources to qcow2/raw in one sequential
    # pass instead of through qemu-img's vmdk driver (see stream_convert).
    vmdk_stream_decoder: bool = True
    # Write streamOptimized vmdk outputs with XHV's parallel writer
    # instead of qemu-img (see stream_write): deflate level (0 stores every
    # grain) and threads (0: one per core).
    vmdk_stream_writer: bool = True
    vmdk_compress_level: int = 1
    vmdk_compress_workers: int = 0
    # Write the output with O_DIRECT where its filesystem takes it (see
    # output_cache_mode).
    direct_io: bool = True
    verify: bool = False
    # Run ``qemu-img check`` (metadata only) on qcow2, vmdk and vhdx sources
    # before converting: qemu-img convert reads a table that points past
    # the end of the file as zeros and succeeds.
    structure_check: bool = True
    # Folder trusted to hold monolithicFlat descriptor + extent pairs.
    staging_dir: typing.Optional[str] = None
    # Where remote header copies and secret files go (None: system temp).
    scratch_dir: typing.Optional[str] = None

    def timeout_for(self, virtual_size):
        """Wall-clock budget of a convert/compare for a disk this large."""
        return self.timeout_base + self.timeout_per_gib * math.ceil(
            virtual_size / GiB)

    def info_limits(self):
        return qemu_img.Limits(self.cpu_seconds, self.address_space)

    def long_limits(self, virtual_size):
        cpu = max(self.cpu_seconds, int(2 * self.timeout_for(virtual_size)))
        return qemu_img.Limits(cpu, self.address_space)


@dataclasses.dataclass
class ConvertResult:
    src_info: inspect.ImageInfo
    dst_format: str
    dst_subformat: typing.Optional[str]
    virtual_size: int
    # Allocated bytes of the output file (st_blocks), not its length.
    bytes_written: int
    verified: bool
    elapsed: float
    # Bytes qemu-img read (its /proc rchar), when the kernel told us.
    bytes_read: typing.Optional[int] = None


class _Source(object):
    """What qemu-img opens for an inspected image (local or remote).

    A remote source is served by a read-ahead NBD bridge, started when
    qemu-img first needs ``filename`` (the stream decoder reads the source
    itself and needs no bridge).
    """

    def __init__(self, info, scratch_dir):
        self.info = info
        self._scratch_dir = scratch_dir
        self._stack = contextlib.ExitStack()
        # Local: the checked file behind an explicit block-node spec.
        self._filename = None if info.remote else block_spec.local(
            info.data_path, info.qemu_format)
        self._bridge = None

    @property
    def filename(self):
        if self._filename is None:
            # qemu-img reads remote sources from a local read-ahead NBD
            # bridge (TLS, CA and credentials stay in our processes).
            self._bridge = self._stack.enter_context(nbd_bridge.NBDBridge(
                self.info.remote, self.info.actual_size, self._scratch_dir,
                inspected=self.info.inspected_blocks))
            self._filename = self._bridge.filename(self.info.qemu_format)
        return self._filename

    def __enter__(self):
        return self

    def explain(self, error):
        """``error`` (from qemu-img), with why the remote source failed."""
        problem = self._bridge.source_error() if self._bridge else None
        if not problem or not isinstance(error,
                                         exceptions.ConversionFailed):
            return error
        return exceptions.ConversionFailed(
            '%s; reading the source failed: %s' % (error, problem),
            error.returncode, error.stderr)

    def __exit__(self, *exc):
        return self._stack.__exit__(*exc)


def _inspect_source(src, from_format, options):
    if isinstance(src, remote.RemoteSource):
        return remote.inspect_remote(
            src, from_format or src.format,
            max_virtual_size=options.max_virtual_size,
            scratch_dir=options.scratch_dir)
    return inspect.inspect_image(
        os.fspath(src), from_format, staging_dir=options.staging_dir,
        max_virtual_size=options.max_virtual_size)


def _source_virtual_size(source, options, timeout):
    """The virtual size qemu-img will convert.

    The inspector's figure is qemu's for every format but VHD, where qemu
    may use the CHS geometry instead of the footer's size depending on the
    program that wrote the file: ask qemu-img for those only (a process
    start costs tens of milliseconds on small disks).
    """
    if source.info.format != formats.VHD:
        return source.info.virtual_size
    data = qemu_img.info(source.filename, source.info.qemu_format,
                         options.info_limits(), timeout)
    return int(data['virtual-size'])


def _checked_virtual_size(source, options, timeout):
    """The source's virtual size, refused above the limit or off-sector."""
    virtual_size = _source_virtual_size(source, options, timeout)
    if virtual_size > options.max_virtual_size:
        raise exceptions.UnsafeImage(source.info.path, [
            'qemu-img reports a virtual size of %d bytes, above the '
            'limit of %d (max_virtual_size)' % (
                virtual_size, options.max_virtual_size)])
    if virtual_size % 512:
        raise exceptions.UnsupportedFormat(
            '%s has a virtual size of %d bytes, not a whole number '
            'of 512-byte sectors: no disk image (raw included) can '
            'hold it exactly, qemu rounds it up; pad it to a sector '
            'multiple first (truncate -s %%512)' % (
                source.info.path, virtual_size))
    return virtual_size


def _output_virtual_size(path, to_format, options):
    """Our own output goes through the same gate as any input."""
    info, findings = inspect.inspect_findings(
        path, to_format, max_virtual_size=options.max_virtual_size)
    if findings.items:
        raise exceptions.ConversionFailed(
            'qemu-img wrote an output that fails inspection: %s' %
            '; '.join(findings.messages))
    return info.virtual_size


def _check_destination(dst, src_info):
    dst = os.path.abspath(dst)
    if os.path.lexists(dst):
        raise exceptions.TranslationError(
            '%s already exists; remove it or choose another destination' %
            dst)
    folder = os.path.dirname(dst)
    if not os.path.isdir(folder):
        raise exceptions.TranslationError(
            'destination folder %s does not exist' % folder)
    for path in (src_info.path, src_info.data_path):
        if path and not src_info.remote and \
                os.path.abspath(path) == dst:
            raise exceptions.TranslationError(
                'destination %s is the source itself' % dst)
    return dst


def convert(src, dst, to_format, from_format=None, subformat=None,
            options=None, progress=None, cancel_event=None):
    """Translate ``src`` (a path or RemoteSource) into ``dst``.

    ``from_format`` None auto-detects (a RemoteSource's own ``format`` is
    used when given).  ``progress(percent)`` is called at least once a
    second with non-decreasing values; ``cancel_event`` (a
    threading.Event) stops the conversion.  Returns ConvertResult.
    """
    options = options or ConvertOptions()
    started = time.monotonic()
    to_format = formats.canonical_name(to_format)
    dst_subformat = formats.target_subformat(to_format, subformat)
    src_info = _inspect_source(src, from_format, options)
    dst = _check_destination(os.fspath(dst), src_info)
    timeout = options.timeout_for(src_info.virtual_size)
    limits = options.long_limits(src_info.virtual_size)

    folder = tempfile.mkdtemp(prefix='.xhv-convert-',
                              dir=os.path.dirname(dst))
    # Absolute: qemu never reads an output name as a protocol.
    tmp_out = block_spec.output(os.path.join(folder, os.path.basename(dst)))
    try:
        with _Source(src_info, options.scratch_dir) as source:
            virtual_size = _checked_virtual_size(source, options, timeout)
            decodes = _decodes_stream(src_info, to_format, options)
            if options.structure_check and not decodes:
                # The stream writer reads through qemu's format driver too:
                # it trusts the same tables qemu-img would.
                _check_structure(source, limits, timeout)
            writes = _writes_stream(src_info, to_format, dst_subformat,
                                    options)
            cache = output_cache_mode(to_format, dst_subformat, options,
                                      folder)
            LOG.info('Converting %s (%s%s, %d bytes) to %s%s with %s, '
                     'writing %s', src_info.path, src_info.format,
                     ' ' + src_info.subformat if src_info.subformat else '',
                     virtual_size, to_format,
                     ' ' + dst_subformat if dst_subformat else '',
                     'the vmdk stream decoder' if decodes else
                     'the vmdk stream writer' if writes else 'qemu-img',
                     'with O_DIRECT' if cache == qemu_img.CACHE_DIRECT or
                     writes and options.direct_io
                     else 'through the page cache')
            if decodes:
                run = _decode_stream(src_info, tmp_out, to_format,
                                     dst_subformat, options, limits,
                                     timeout, progress, cancel_event, cache)
            elif writes:
                run = _write_stream(source, tmp_out, virtual_size, options,
                                    limits, timeout, progress, cancel_event,
                                    folder)
            else:
                run = _run_qemu_img(source, tmp_out, to_format,
                                    dst_subformat, options, limits, timeout,
                                    progress, cancel_event, cache)
            if writes:
                out_size = stream_write.check_output(tmp_out)
            else:
                out_size = _output_virtual_size(tmp_out, to_format, options)
            if out_size != virtual_size:
                raise exceptions.ConversionFailed(
                    'output virtual size %d differs from the source\'s %d' %
                    (out_size, virtual_size))
            verified = False
            if options.verify:
                out_driver = formats.qemu_driver(to_format)
                if not qemu_img.compare(
                        source.filename, src_info.qemu_format,
                        block_spec.local(tmp_out, out_driver), out_driver,
                        limits, timeout):
                    raise exceptions.ConversionFailed(
                        'verification failed: the converted guest data '
                        'differs from %s' % src_info.path)
                verified = True
        bytes_written = os.stat(tmp_out).st_blocks * 512
        # link() refuses to replace a file that appeared meanwhile.
        try:
            os.link(tmp_out, dst)
        except FileExistsError:
            raise exceptions.TranslationError(
                '%s appeared while converting; left it untouched' % dst)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return ConvertResult(src_info=src_info, dst_format=to_format,
                         dst_subformat=dst_subformat,
                         virtual_size=virtual_size,
                         bytes_written=bytes_written, verified=verified,
                         elapsed=time.monotonic() - started,
                         bytes_read=run.bytes_read)


# Formats whose tables qemu-img check walks (raw and vpc have none it
# checks; a monolithicFlat extent is read as raw).
_CHECKED_DRIVERS = ('qcow2', 'vmdk', 'vhdx')


def _check_structure(source, limits, timeout):
    """Refuse a source whose metadata qemu-img check finds corrupt.

    The stream decoder needs none: it reads the grains in stream order and
    refuses a malformed stream itself.
    """
    if source.info.qemu_format not in _CHECKED_DRIVERS:
        return
    problems = qemu_img.check(source.filename, source.info.qemu_format,
                              limits, timeout)
    if problems:
        # A remote source that failed to read (it changed, it broke) says
        # so; the check's own words would only say "I/O error".
        failed = exceptions.ConversionFailed('qemu-img check of %s failed'
                                             % source.info.path)
        explained = source.explain(failed)
        if explained is not failed:
            raise explained
        raise exceptions.UnsafeImage(source.info.path, problems)


def _decodes_stream(src_info, to_format, options):
    # The decoder neither throttles nor writes zeros: a rate limit or a
    # fully allocated output (sparse_size 0) is qemu-img's job.
    return (options.vmdk_stream_decoder and not options.rate_limit
            and options.sparse_size > 0
            and stream_convert.applies(src_info, to_format))


def _writes_stream(src_info, to_format, dst_subformat, options):
    """True when XHV's vmdk stream writer writes this output."""
    if not options.vmdk_stream_writer or \
            not stream_write.targets(to_format, dst_subformat):
        return False
    reason = stream_write.unsupported_reason(options)
    if reason:
        LOG.info('Writing %s as streamOptimized vmdk with qemu-img, not '
                 'the vmdk stream writer: %s', src_info.path, reason)
        return False
    return True


def _write_stream(source, tmp_out, virtual_size, options, limits, timeout,
                  progress, cancel_event, folder):
    """A streamOptimized vmdk written in one pass (see stream_write).

    Unlike qemu's vmdk driver it writes in large aligned blocks, so it
    takes O_DIRECT wherever the filesystem does (see output_cache_mode).
    """
    direct = options.direct_io and qemu_img.supports_direct_io(folder)
    try:
        run = qemu_img.run_convert(
            stream_write.child_argv(), limits, timeout, progress=progress,
            cancel_event=cancel_event, env=stream_write.child_env(),
            input_data=stream_write.child_input(
                source.filename, source.info.qemu_format, tmp_out,
                virtual_size, limits, options.vmdk_compress_level,
                options.vmdk_compress_workers, options.scratch_dir,
                direct),
            what='the vmdk stream writer')
    except exceptions.ConversionFailed as error:
        explained = source.explain(error)
        if explained is error:
            raise
        raise explained from error
    if run.stderr.strip():
        LOG.warning('Converting %s: %s', source.info.path,
                    run.stderr.strip())
    return run


def output_cache_mode(to_format, dst_subformat, options, folder):
    """The output's qemu cache mode: O_DIRECT where it is worth it.

    A conversion writes the whole disk once and nobody reads it back soon:
    through the page cache it evicts what running guests use, and on a
    virtual machine whose freed memory goes back to its host (free page
    reporting) every fresh page costs a fault on the host too.  qemu writes
    qcow2, raw and vhdx in large clusters, and on the 2-vCPU test bed 1 GiB
    into them took 0.7-2.4 s with O_DIRECT against 1.1-3.2 s through the
    page cache.  vmdk (grain by grain, 11 s against 2-2.7 s for
    monolithicSparse) and vhd (either way, depending on the data) keep the
    page cache, as does a filesystem that refuses O_DIRECT (tmpfs before
    Linux 6.6, some FUSE and network filesystems).
    """
    if not options.direct_io or to_format not in _DIRECT_IO_TARGETS:
        return qemu_img.CACHE_PAGE
    if qemu_img.supports_direct_io(folder):
        return qemu_img.CACHE_DIRECT
    return qemu_img.CACHE_PAGE


def _run_qemu_img(source, tmp_out, to_format, dst_subformat, options,
                  limits, timeout, progress, cancel_event, cache):
    argv = qemu_img.convert_argv(
        source.filename, source.info.qemu_format, tmp_out,
        formats.qemu_driver(to_format),
        create_options=formats.create_options(to_format, dst_subformat),
        sparse_size=options.sparse_size, coroutines=options.coroutines,
        out_of_order=options.out_of_order, rate_limit=options.rate_limit,
        cache=cache)
    try:
        return qemu_img.run_convert(argv, limits, timeout, progress=progress,
                                    cancel_event=cancel_event)
    except exceptions.ConversionFailed as error:
        explained = source.explain(error)
        if explained is error:
            raise
        raise explained from error


def _decode_stream(src_info, tmp_out, to_format, dst_subformat, options,
                   limits, timeout, progress, cancel_event, cache):
    """A streamOptimized vmdk, decoded in one pass (see stream_convert)."""
    qemu_img.create(tmp_out, formats.qemu_driver(to_format),
                    src_info.virtual_size, options.info_limits(), timeout,
                    create_options=formats.create_options(to_format,
                                                          dst_subformat))
    run = qemu_img.run_convert(
        stream_convert.child_argv(), limits, timeout, progress=progress,
        cancel_event=cancel_event, env=stream_convert.child_env(),
        input_data=stream_convert.child_input(
            src_info, tmp_out, to_format, limits, options.scratch_dir,
            cache),
        what='the vmdk stream decoder')
    if run.stderr.strip():
        # It succeeded another way (e.g. a direct read fell back).
        LOG.warning('Converting %s: %s', src_info.path, run.stderr.strip())
    return run


def compare(path_a, fmt_a, path_b, fmt_b, options=None, staging_dir=None):
    """True when two images hold the same guest data and virtual size.

    Both are inspected first, like any other qemu-img input.
    """
    options = options or ConvertOptions()
    staging_dir = staging_dir or options.staging_dir
    infos = [inspect.inspect_image(path, fmt, staging_dir=staging_dir,
                                   max_virtual_size=options.max_virtual_size)
             for path, fmt in ((path_a, fmt_a), (path_b, fmt_b))]
    timeout = options.timeout_for(max(i.virtual_size for i in infos))
    specs = [block_spec.local(i.data_path, i.qemu_format) for i in infos]
    sizes = [int(qemu_img.info(spec, i.qemu_format, options.info_limits(),
                               timeout)['virtual-size'])
             for spec, i in zip(specs, infos)]
    if sizes[0] != sizes[1]:
        return False
    return qemu_img.compare(specs[0], infos[0].qemu_format,
                            specs[1], infos[1].qemu_format,
                            options.long_limits(sizes[0]), timeout)


def open_stream(src, from_format=None, options=None, progress=None,
                cancel_event=None, name='disk.vmdk'):
    """``src`` (a path or RemoteSource) as a streamOptimized vmdk stream.

    Inspects ``src`` now, with the same safety rules as convert(), and
    returns a TranslationStream (a context manager) whose ``run(consume)``
    writes the stream with the vmdk stream writer into a pipe that
    ``consume`` reads: no output file, and the consumer (an upload) runs
    while the writer reads and deflates.  ``name`` is the extent's file
    name inside the stream's descriptor.  Raises UnsupportedFormat when
    only qemu-img could write this output (the writer is switched off, a
    rate limit is set): convert() to a file then.
    """
    options = options or ConvertOptions()
    reason = ('vmdk_stream_writer is off' if not options.vmdk_stream_writer
              else stream_write.unsupported_reason(options))
    if reason:
        raise exceptions.UnsupportedFormat(
            'a streamOptimized vmdk can only be streamed by the vmdk stream '
            'writer: %s' % reason)
    return TranslationStream(src, from_format, options, progress,
                             cancel_event, name)


class TranslationStream(object):
    """One source, written as a streamOptimized vmdk while it is consumed.

    ``info`` (the inspection), ``virtual_size`` and ``size_hint`` are
    known once it is open; ``run(consume)`` runs once.
    """

    def __init__(self, src, from_format, options, progress, cancel_event,
                 name):
        self._started = time.monotonic()
        self._options = options
        self._progress = progress
        self._cancel_event = cancel_event
        self._name = name
        self._ran = False
        self.info = _inspect_source(src, from_format, options)
        self._timeout = options.timeout_for(self.info.virtual_size)
        self._limits = options.long_limits(self.info.virtual_size)
        self._source = _Source(self.info, options.scratch_dir)
        try:
            self.virtual_size = _checked_virtual_size(
                self._source, options, self._timeout)
            if options.structure_check:
                _check_structure(self._source, self._limits, self._timeout)
        except BaseException:
            self.close()
            raise

    @property
    def size_hint(self):
        """Bytes the stream is expected to take at most, about.

        The source's stored size: the writer keeps only allocated,
        non-zero grains, deflated or stored (a stored grain costs ~0.8 %
        more than its data), so the stream is about as large at most.
        """
        return self.info.actual_size

    def run(self, consume):
        """Write the stream; ``consume(reader)`` reads it on its own thread.

        ``reader.read(n)`` (stream_write.StreamReader) returns the stream,
        and its end only once the writer succeeded and the stream checked
        whole; a failed or cancelled conversion raises in ``read`` instead.
        Returns (ConvertResult, what ``consume`` returned).  Raises what
        ``consume`` raised when it failed first (the writer then stops on a
        broken pipe), else the conversion's error.
        """
        if self._ran:
            raise RuntimeError('a TranslationStream runs once')
        self._ran = True
        read_fd, write_fd = stream_write.output_pipe()
        reader = stream_write.StreamReader(read_fd)
        try:
            input_data = stream_write.child_input(
                self._source.filename, self.info.qemu_format, self._name,
                self.virtual_size, self._limits,
                self._options.vmdk_compress_level,
                self._options.vmdk_compress_workers,
                self._options.scratch_dir, output_fd=write_fd)
        except BaseException:
            os.close(write_fd)
            reader.close()
            raise
        outcome = {}

        def consumer():
            try:
                outcome['value'] = consume(reader)
            except BaseException as error:  # handed to the caller
                outcome['error'] = error
            finally:
                # A writer still writing gets EPIPE and stops.
                reader.close()

        LOG.info('Streaming %s (%s%s, %d bytes) as vmdk streamOptimized '
                 'with the vmdk stream writer', self.info.path,
                 self.info.format, ' ' + self.info.subformat
                 if self.info.subformat else '', self.virtual_size)
        thread = threading.Thread(target=consumer, daemon=True,
                                  name='xhv-stream-consumer')
        thread.start()
        try:
            try:
                run = qemu_img.run_convert(
                    stream_write.child_argv(), self._limits, self._timeout,
                    progress=self._progress,
                    cancel_event=self._cancel_event,
                    env=stream_write.child_env(), input_data=input_data,
                    what='the vmdk stream writer',
                    hand_over_fds=(write_fd,))
            except exceptions.ConversionFailed as error:
                raise self._source.explain(error)
            # The writer is done; the consumer reads what is left.
            while not reader.ended.wait(1.0):
                if not thread.is_alive():
                    break
            if not reader.eof:
                raise exceptions.ConversionFailed(
                    'the stream\'s consumer stopped reading before its end')
            if reader.check() != self.virtual_size:
                raise exceptions.ConversionFailed(
                    'output virtual size differs from the source\'s %d'
                    % self.virtual_size)
        except BaseException as error:
            reader.settle(error)
            thread.join()
            first = outcome.get('error')
            if first is not None and not isinstance(
                    first, stream_write.StreamFailed):
                raise first from error
            raise
        reader.settle(None)
        thread.join()
        if 'error' in outcome:
            raise outcome['error']
        if run.stderr.strip():
            LOG.warning('Converting %s: %s', self.info.path,
                        run.stderr.strip())
        result = ConvertResult(
            src_info=self.info, dst_format=formats.VMDK,
            dst_subformat=formats.STREAM_OPTIMIZED,
            virtual_size=self.virtual_size, bytes_written=reader.size,
            verified=False, elapsed=time.monotonic() - self._started,
            bytes_read=run.bytes_read)
        return result, outcome.get('value')

    def close(self):
        self._source.__exit__(None, None, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
