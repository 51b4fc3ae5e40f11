"""The safety gate: decide what a file is before qemu-img touches it.

Rules, in order (every failure is collected, then the most specific
exception is raised):

1. Only regular files and block devices are read.
2. The format is detected with oslo.utils' format inspector, reading the
   file ourselves.  A partitioned raw disk (inspector name ``gpt``) counts
   as raw, as in Nova's deep inspection.  A file whose only VHD footer is
   at its end is a fixed VHD (the inspector reads only the start).
3. The detected format must equal the claimed one (FormatMismatch).
4. The inspector's ``safety_check()`` must pass (qcow2 backing file,
   external data file, unknown features; vmdk descriptor and footer; MBR);
   its data-file check misreads version 2 qcow2, whose header our reader
   judges instead.
5. Checks the inspector lacks, each field read where qemu 7.2 reads it:
   qcow2 header extensions, corrupt bit, external data file, encryption,
   tables inside the file; a sparse vmdk's parent references anywhere in
   the 10 KiB qemu searches (and the announced descriptor), capacity 0
   (qemu would open the extents of the embedded descriptor), a stream
   footer that disagrees with the header, grain directories and tables
   inside the file; VHD footer checksum and differencing disks; VHDX
   differencing disks.
6. The virtual size is known and not above ``max_virtual_size``.
7. A VMware monolithicFlat pair (text descriptor + flat extent) is read
   only from a private staging folder: exactly one FLAT extent with a bare
   file name in the descriptor's own folder, a regular non-symlink file
   whose size matches the descriptor and which inspects as raw.  qemu-img
   then reads the extent itself with ``-f raw``.
"""

import dataclasses
import os
import re
import stat
import struct
import typing

from oslo_log import log as logging
from oslo_utils.imageutils import format_inspector

from nova_xhv.translate import exceptions
from nova_xhv.translate import formats
from nova_xhv.translate import headers
from nova_xhv.translate import vmdk_descriptor

LOG = logging.getLogger(__name__)

GiB = 1024 ** 3
DEFAULT_MAX_VIRTUAL_SIZE = 2048 * GiB
_CHUNK = 1024 * 1024

# Kinds of findings, in the order of precedence used to pick the exception.
_MISMATCH = 'mismatch'
_UNSAFE = 'unsafe'
_UNSUPPORTED = 'unsupported'


@dataclasses.dataclass
class ImageInfo:
    """What the safety gate found out about one image."""

    path: str
    format: typing.Optional[str]
    subformat: typing.Optional[str]
    virtual_size: int
    actual_size: int
    # The file qemu-img opens: the flat extent for monolithicFlat, else
    # ``path``; None for a remote source.
    data_path: typing.Optional[str]
    safe: bool
    failures: typing.List[str] = dataclasses.field(default_factory=list)
    # The RemoteSource this describes, if any.
    remote: typing.Any = None
    # Remote only: {block index: sha256 hex} of the bytes inspected (see
    # remote.INSPECTED_BLOCK); readers check them again.
    inspected_blocks: typing.Dict[int, str] = dataclasses.field(
        default_factory=dict)

    @property
    def qemu_format(self):
        """The ``-f`` qemu-img must use on ``data_path``."""
        if self.subformat == formats.MONOLITHIC_FLAT:
            return 'raw'
        return formats.qemu_driver(self.format)

    def to_dict(self):
        return {'path': self.path, 'format': self.format,
                'subformat': self.subformat,
                'virtual_size': self.virtual_size,
                'actual_size': self.actual_size,
                'data_path': self.data_path, 'safe': self.safe,
                'failures': list(self.failures)}


class _Findings(object):
    def __init__(self):
        self.items = []
        self.claimed = None
        self.detected = None

    def add(self, kind, message):
        self.items.append((kind, message))

    @property
    def messages(self):
        return [message for _kind, message in self.items]

    def raise_for(self, path):
        kinds = {kind for kind, _message in self.items}
        if _MISMATCH in kinds:
            raise exceptions.FormatMismatch(path, self.claimed, self.detected)
        if _UNSAFE in kinds:
            raise exceptions.UnsafeImage(path, self.messages)
        if _UNSUPPORTED in kinds:
            raise exceptions.UnsupportedFormat(
                '%s: %s' % (path, '; '.join(self.messages)))


def _human(size):
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'):
        if abs(size) < 1024 or unit == 'PiB':
            return ('%d %s' % (size, unit) if unit == 'B'
                    else '%.1f %s' % (size, unit))
        size /= 1024.0


def detect(path):
    """Run every format inspector over ``path``.

    Returns (inspector or None, problem or None); reads as little as the
    inspectors need (all of a streamOptimized vmdk, for its footer).
    """
    with open(path, 'rb') as f:
        wrapper = format_inspector.InspectWrapper(f)
        try:
            while wrapper.read(_CHUNK):
                if wrapper.formats:
                    break
        finally:
            wrapper.close()
    try:
        return wrapper.format, None
    except format_inspector.ImageFormatError:
        names = sorted(str(x) for x in wrapper.formats or ())
        return None, ('content matches several formats (%s): refusing an '
                      'ambiguous image' % ', '.join(names))


def _size_of(path, st):
    if stat.S_ISBLK(st.st_mode):
        with open(path, 'rb') as f:
            return f.seek(0, os.SEEK_END)
    return st.st_size


def _check_virtual_size(findings, virtual_size, cap):
    if not virtual_size:
        findings.add(_UNSAFE, 'virtual size could not be read (truncated or '
                              'corrupt header)')
    elif virtual_size > cap:
        findings.add(_UNSAFE, 'virtual size %s (%d bytes) exceeds the limit '
                              'of %s (max_virtual_size)' % (
                                  _human(virtual_size), virtual_size,
                                  _human(cap)))


# What an operator can do about a failed format-inspector check.
_HINTS = {
    'backing_file': 'flatten it where its backing chain is trusted',
    'data_file': 'convert it where its external data file is trusted',
    'unknown_features': 'convert it to plain qcow2 v3 where it is trusted',
    'descriptor': 'export the disk again as streamOptimized',
    'footer': 'the vmdk stream is corrupt; export it again',
    'mbr': 'the MBR partition table is invalid',
}


def _run_safety_check(findings, inspector, ignore=()):
    """The format inspector's checks but ``ignore`` (ones it misreads)."""
    try:
        inspector.safety_check()
    except format_inspector.SafetyCheckFailed as exc:
        for name, failure in sorted(exc.failures.items()):
            if name in ignore:
                continue
            hint = _HINTS.get(name)
            findings.add(_UNSAFE, '%s check failed: %s%s' % (
                name, failure, ' (%s)' % hint if hint else ''))
    except format_inspector.ImageFormatError as exc:
        findings.add(_UNSAFE, 'header is corrupt or truncated (%s)' % exc)


# Header fields qemu takes from a streamOptimized footer: each must equal
# the header's (the inspection, the size cap and the stream decoder use the
# header).
_VMDK_FOOTER_FIELDS = ('version', 'flags', 'capacity', 'granularity',
                       'num_gtes_per_gt', 'grain_offset', 'compress')
_PARENT_CID_RE = re.compile(rb'parentcid\s*=\s*"?([^"\s]*)')


def _vmdk_parent_problems(texts):
    """Parent references anywhere qemu or we read a sparse descriptor.

    qemu 7.2 (vmdk_parent_open) searches 10 KiB at offset 512 for the
    substring ``parentFileNameHint`` wherever it stands (a comment line,
    past descriptorSize, inside another value): the whole of both windows
    is searched here, in any case, NUL padding included.
    """
    problems = []
    for text in texts:
        lower = text.lower()
        if b'parentfilenamehint' in lower:
            problems.append('vmdk descriptor names a parent disk '
                            '(parentFileNameHint): delta disks are refused, '
                            'consolidate snapshots first')
        for match in _PARENT_CID_RE.finditer(lower):
            if match.group(1) != b'ffffffff':
                problems.append('vmdk descriptor names a parent disk '
                                '(parentCID %s): delta disks are refused, '
                                'consolidate snapshots first' %
                                match.group(1)[:16].decode('ascii',
                                                           'replace'))
    return sorted(set(problems))


def _vmdk_sparse_checks(findings, f, size):
    """Checks of a sparse vmdk as qemu reads it.

    Returns (subformat, the virtual size qemu will use).
    """
    header = headers.vmdk_sparse_header(f)
    if header is None:
        findings.add(_UNSAFE, 'vmdk header is truncated')
        return None, 0
    if header.capacity == 0:
        # qemu then reads the embedded descriptor as a descriptor file and
        # opens every extent it names.
        findings.add(_UNSAFE, 'sparse vmdk with capacity 0: qemu would '
                              'open the extents its descriptor names')
        return None, 0
    qemu_header = header
    if header.gd_offset == headers.VMDK_GD_AT_END:
        footer = headers.vmdk_stream_footer(f, size)
        if footer is None:
            findings.add(_UNSAFE, 'vmdk stream footer is missing or corrupt '
                                  '(footer check failed)')
            return None, 0
        differ = [name for name in _VMDK_FOOTER_FIELDS
                  if getattr(footer, name) != getattr(header, name)]
        if differ:
            findings.add(_UNSAFE, 'vmdk stream footer disagrees with the '
                                  'header on %s (header capacity %d, footer '
                                  'capacity %d sectors): qemu would use the '
                                  'footer' % (', '.join(differ),
                                              header.capacity,
                                              footer.capacity))
        qemu_header = footer
    if qemu_header.gd_offset in (0, headers.VMDK_GD_AT_END) or \
            qemu_header.gd_offset * 512 >= size:
        findings.add(_UNSAFE, 'vmdk grain directory offset %d lies outside '
                              'the %d-byte file (corrupt)' % (
                                  qemu_header.gd_offset, size))
    else:
        for problem in headers.vmdk_table_problems(f, qemu_header, size):
            findings.add(_UNSAFE, problem)
    if qemu_header.grain_offset * 512 > size:
        findings.add(_UNSAFE, 'vmdk grains start past the end of the file '
                              '(truncated)')
    virtual_size = max(header.capacity, qemu_header.capacity) * 512

    data = headers.vmdk_embedded_descriptor(
        f, vmdk_descriptor.MAX_DESCRIPTOR_BYTES)
    windows = [headers.vmdk_qemu_descriptor_window(f)]
    if data is not None:
        windows.append(data)
    for problem in _vmdk_parent_problems(windows):
        findings.add(_UNSAFE, problem)
    if data is None:
        findings.add(_UNSAFE, 'vmdk has no embedded descriptor')
        return None, virtual_size
    try:
        descriptor = vmdk_descriptor.parse(data)
    except vmdk_descriptor.DescriptorError as exc:
        findings.add(_UNSAFE, 'vmdk descriptor refused: %s' % exc)
        return None, virtual_size
    for problem in vmdk_descriptor.sparse_problems(descriptor):
        if 'parent' not in problem:  # reported above, once
            findings.add(_UNSAFE, problem)
    return descriptor.create_type, virtual_size


def _qcow2_checks(findings, f, size):
    """What the format inspector does not read in a qcow2 header.

    Returns the qcow2 version (None if the header is unreadable).
    """
    try:
        header = headers.qcow2_header(f)
    except headers.HeaderError as exc:
        findings.add(_UNSAFE, 'qcow2 header is corrupt: %s' % exc)
        return None
    if header is None:
        findings.add(_UNSAFE, 'qcow2 header is truncated')
        return None
    if header.crypt_method:
        findings.add(_UNSAFE, 'qcow2 is encrypted; XHV converts only '
                              'unencrypted images')
    if header.incompatible & headers.QCOW2_INCOMPAT_CORRUPT:
        findings.add(_UNSAFE, 'qcow2 is marked corrupt; repair it with '
                              '"qemu-img check -r all" where it is trusted')
    if header.incompatible & headers.QCOW2_INCOMPAT_DATA_FILE or \
            headers.QCOW2_EXT_DATA_FILE in header.extensions:
        findings.add(_UNSAFE, 'data_file check failed: qcow2 names an '
                              'external data file (%s)' % _HINTS['data_file'])
    cluster = 1 << header.cluster_bits
    tables = (('L1 table', header.l1_table_offset, header.l1_size * 8),
              ('refcount table', header.refcount_table_offset,
               header.refcount_table_clusters * cluster),
              ('snapshot table', header.snapshots_offset,
               72 * header.nb_snapshots))
    for name, offset, length in tables:
        if length and offset + length > size:
            findings.add(_UNSAFE, 'qcow2 %s lies past the end of the file '
                                  '(truncated or corrupt)' % name)
    return header.version


def _vhd_checks(findings, footer):
    if not footer.checksum_ok:
        findings.add(_UNSAFE, 'VHD footer checksum is wrong (corrupt file)')
    if footer.disk_type == headers.VHD_DIFFERENCING:
        findings.add(_UNSAFE, 'VHD is a differencing disk (it has a parent); '
                              'merge it into its parent first')
        return None
    if footer.disk_type not in (headers.VHD_FIXED, headers.VHD_DYNAMIC):
        findings.add(_UNSUPPORTED, 'VHD disk type %d is not fixed or '
                                   'dynamic' % footer.disk_type)
        return None
    return headers.vhd_type_name(footer.disk_type)


def _vhdx_checks(findings, f):
    params = headers.vhdx_params(f)
    if params is None:
        findings.add(_UNSAFE, 'vhdx file parameters not found (truncated '
                              'or corrupt metadata)')
        return None
    if params.has_parent:
        findings.add(_UNSAFE, 'vhdx is a differencing disk (it has a '
                              'parent); merge it first')
    return formats.FIXED if params.leave_blocks_allocated else \
        formats.DYNAMIC


def _normalise_subformat(findings, fmt, subformat):
    try:
        return formats.source_subformat(fmt, subformat)
    except exceptions.UnsupportedFormat as exc:
        findings.add(_UNSUPPORTED, str(exc))
        return subformat


def _inspect_binary(path, size, claimed, cap, findings):
    inspector, problem = detect(path)
    if problem:
        findings.add(_UNSAFE, problem)
        return None, None, 0, path
    detected = str(inspector)
    fixed_footer = None
    if detected == 'gpt':
        detected = formats.RAW
    if detected == formats.RAW and claimed in (None, formats.VHD):
        with open(path, 'rb') as f:
            fixed_footer = headers.vhd_tail(f, size)
        if fixed_footer is not None:
            detected = formats.VHD
    findings.claimed, findings.detected = claimed, detected
    if detected not in formats.FORMATS:
        if claimed:
            findings.add(_MISMATCH, 'content is %s, not %s' % (
                detected, claimed))
        else:
            findings.add(_UNSUPPORTED, 'content is %s, which XHV does not '
                                       'convert' % detected)
        return detected, None, inspector.virtual_size, path
    if claimed and claimed != detected:
        findings.add(_MISMATCH, 'content is %s, not %s' % (detected, claimed))

    subformat = None
    virtual_size = inspector.virtual_size
    ignore = ()
    with open(path, 'rb') as f:
        if detected == formats.RAW:
            virtual_size = size
        elif detected == formats.QCOW2:
            if _qcow2_checks(findings, f, size) != 3:
                # Version 2 has no feature bits: the inspector reads an
                # extension there (its data_file check); ours read them.
                ignore = ('data_file',)
        elif detected == formats.VMDK:
            subformat, virtual_size = _vmdk_sparse_checks(findings, f, size)
        elif detected == formats.VHD:
            footer = fixed_footer or headers.vhd_head(f)
            if footer is None:
                findings.add(_UNSAFE, 'VHD footer not found')
            else:
                subformat = _vhd_checks(findings, footer)
                virtual_size = footer.current_size
                if fixed_footer is not None and subformat == formats.FIXED \
                        and footer.current_size > size - 512:
                    findings.add(_UNSAFE, 'fixed VHD claims %d bytes but the '
                                          'file holds only %d' % (
                                              footer.current_size,
                                              size - 512))
                elif fixed_footer is not None and \
                        subformat != formats.FIXED:
                    findings.add(_UNSAFE, 'VHD footer at the end of a file '
                                          'without a header copy must be a '
                                          'fixed disk')
        elif detected == formats.VHDX:
            subformat = _vhdx_checks(findings, f)
    if fixed_footer is None:
        _run_safety_check(findings, inspector, ignore)
    if subformat is not None:
        subformat = _normalise_subformat(findings, detected, subformat)
    _check_virtual_size(findings, virtual_size, cap)
    return detected, subformat, virtual_size, path


def _private_folder_problem(folder):
    try:
        st = os.lstat(folder)
    except OSError as exc:
        return 'staging folder %s cannot be read: %s' % (folder, exc)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        return 'staging folder %s is not a real directory' % folder
    if st.st_uid != os.geteuid():
        return 'staging folder %s is owned by uid %d, not by us' % (
            folder, st.st_uid)
    if st.st_mode & 0o022:
        return ('staging folder %s is writable by others; chmod go-w it' %
                folder)
    return None


def _inspect_flat(path, staging_dir, cap, findings):
    """monolithicFlat: a text descriptor plus one flat extent (rule 7)."""
    findings.claimed = findings.detected = formats.VMDK
    with open(path, 'rb') as f:
        data = f.read(vmdk_descriptor.MAX_DESCRIPTOR_BYTES + 1)
    try:
        descriptor = vmdk_descriptor.parse(data)
    except vmdk_descriptor.DescriptorError as exc:
        findings.add(_UNSAFE, 'vmdk descriptor refused: %s' % exc)
        return formats.VMDK, None, 0, None
    problems = vmdk_descriptor.flat_problems(descriptor)
    if descriptor.create_type.lower() != 'monolithicflat':
        findings.add(_UNSUPPORTED, problems[0])
        return formats.VMDK, descriptor.create_type, 0, None
    # qemu never reads this descriptor (the extent is read as raw); a
    # parent named anywhere in it, comments included, is refused anyway.
    hidden = _vmdk_parent_problems([data])
    problems = [p for p in problems if 'parent' not in p] + hidden
    for problem in problems:
        findings.add(_UNSAFE, problem)
    folder = os.path.dirname(os.path.abspath(path))
    if staging_dir is None:
        findings.add(_UNSAFE, 'monolithicFlat descriptors are read only from '
                              'a private staging folder; pass staging_dir '
                              '(xhv-convert --staging-dir)')
    elif os.path.realpath(folder) != os.path.realpath(staging_dir):
        findings.add(_UNSAFE, 'descriptor %s is not in the staging folder '
                              '%s' % (path, staging_dir))
    else:
        problem = _private_folder_problem(staging_dir)
        if problem:
            findings.add(_UNSAFE, problem)
    if stat.S_ISLNK(os.lstat(path).st_mode):
        findings.add(_UNSAFE, 'descriptor %s is a symlink' % path)
    if problems:
        return formats.VMDK, formats.MONOLITHIC_FLAT, 0, None

    extent = descriptor.extents[0]
    extent_path = os.path.join(folder, extent.filename)
    virtual_size = extent.sectors * 512
    try:
        st = os.lstat(extent_path)
    except OSError:
        findings.add(_UNSAFE, 'flat extent %s is missing; copy it next to '
                              'the descriptor' % extent_path)
        return formats.VMDK, formats.MONOLITHIC_FLAT, virtual_size, None
    if stat.S_ISLNK(st.st_mode):
        findings.add(_UNSAFE, 'flat extent %s is a symlink' % extent_path)
    elif not stat.S_ISREG(st.st_mode):
        findings.add(_UNSAFE, 'flat extent %s is not a regular file' %
                     extent_path)
    elif st.st_size != virtual_size:
        findings.add(_UNSAFE, 'flat extent %s holds %d bytes, the descriptor '
                              'says %d' % (extent_path, st.st_size,
                                           virtual_size))
    else:
        inspector, problem = detect(extent_path)
        if problem:
            findings.add(_UNSAFE, 'flat extent: %s' % problem)
        elif str(inspector) not in ('raw', 'gpt'):
            findings.add(_UNSAFE, 'flat extent %s contains a %s image '
                                  '(nested formats are refused)' % (
                                      extent_path, inspector))
        else:
            _run_safety_check(findings, inspector)
    _check_virtual_size(findings, virtual_size, cap)
    return formats.VMDK, formats.MONOLITHIC_FLAT, virtual_size, extent_path


def _inspect_any(path, size, claimed, staging_dir, cap, findings):
    with open(path, 'rb') as f:
        head = f.read(vmdk_descriptor.MAX_DESCRIPTOR_BYTES)
    if claimed in (None, formats.VMDK) and \
            vmdk_descriptor.looks_like_descriptor(head):
        return _inspect_flat(path, staging_dir, cap, findings)
    return _inspect_binary(path, size, claimed, cap, findings)


def inspect_findings(path, claimed_format=None, staging_dir=None,
                     max_virtual_size=None):
    """Like inspect_image but never raises for a verdict.

    Returns (ImageInfo, findings); ``findings.raise_for(name)`` raises the
    exception inspect_image would raise, naming the image ``name``.
    """
    claimed = formats.canonical_name(claimed_format) if claimed_format \
        else None
    cap = DEFAULT_MAX_VIRTUAL_SIZE if max_virtual_size is None \
        else max_virtual_size
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise exceptions.TranslationError('%s does not exist' % path)
    except OSError as exc:
        raise exceptions.TranslationError('%s cannot be read: %s' % (
            path, exc))
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise exceptions.UnsafeImage(path, [
            'not a regular file or block device'])
    size = _size_of(path, st)
    actual_size = st.st_blocks * 512 if stat.S_ISREG(st.st_mode) else size
    findings = _Findings()
    findings.claimed = claimed
    if size == 0:
        findings.add(_UNSAFE, 'file is empty')
        fmt, subformat, virtual_size, data_path = claimed, None, 0, path
    else:
        try:
            fmt, subformat, virtual_size, data_path = _inspect_any(
                path, size, claimed, staging_dir, cap, findings)
        except (struct.error, ValueError, IndexError, OverflowError,
                format_inspector.ImageFormatError) as exc:
            # Every reader bounds what it reads; one that still trips on a
            # malformed file makes a refusal, never a traceback.
            findings.add(_UNSAFE, 'header is corrupt or truncated (%s: %s)'
                         % (type(exc).__name__, exc))
            fmt, subformat, virtual_size, data_path = claimed, None, 0, path
        except OSError as exc:
            raise exceptions.TranslationError('%s cannot be read: %s' % (
                path, exc))
    info = ImageInfo(path=path, format=fmt, subformat=subformat,
                     virtual_size=virtual_size, actual_size=actual_size,
                     data_path=data_path, safe=not findings.items,
                     failures=findings.messages)
    if findings.items:
        LOG.warning('Image %s (claimed %s) is unsafe: %s', path, claimed,
                    '; '.join(findings.messages))
    return info, findings


def inspect_image(path, claimed_format=None, staging_dir=None,
                  max_virtual_size=None, raise_on_unsafe=True):
    """Inspect ``path`` without running qemu-img; see the module rules.

    ``claimed_format`` None means auto-detect.  Returns ImageInfo; raises
    FormatMismatch, UnsafeImage or UnsupportedFormat unless
    ``raise_on_unsafe`` is False, in which case the verdict is in
    ``ImageInfo.safe`` and ``ImageInfo.failures``.
    """
    info, findings = inspect_findings(path, claimed_format, staging_dir,
                                      max_virtual_size)
    if raise_on_unsafe:
        findings.raise_for(path)
    return info
