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
   external data file, unknown features; vmdk descriptor and footer; MBR).
5. Checks the inspector lacks: encrypted qcow2; vmdk parent disks and
   extent counts/types/names; VHD footer checksum and differencing disks;
   VHDX differencing disks.
6. The virtual size is known and not above ``max_virtual_size``.
7. A VMware monolithicFlat pair (text descriptor + flat extent) is read
   only from a private staging folder: exactly one FLAT extent with a bare
   file name in the descriptor's own folder, a regular non-symlink file
   whose size matches the descriptor and which inspects as raw.  qemu-img
   then reads the extent itself with ``-f raw``.
"""

import dataclasses
import os
import stat
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


def _run_safety_check(findings, inspector):
    try:
        inspector.safety_check()
    except format_inspector.SafetyCheckFailed as exc:
        for name, failure in sorted(exc.failures.items()):
            hint = _HINTS.get(name)
            findings.add(_UNSAFE, '%s check failed: %s%s' % (
                name, failure, ' (%s)' % hint if hint else ''))
    except format_inspector.ImageFormatError as exc:
        findings.add(_UNSAFE, 'header is corrupt or truncated (%s)' % exc)


def _vmdk_sparse_checks(findings, f):
    data = headers.vmdk_embedded_descriptor(
        f, vmdk_descriptor.MAX_DESCRIPTOR_BYTES)
    if data is None:
        findings.add(_UNSAFE, 'vmdk has no embedded descriptor')
        return None
    try:
        descriptor = vmdk_descriptor.parse(data)
    except vmdk_descriptor.DescriptorError as exc:
        findings.add(_UNSAFE, 'vmdk descriptor refused: %s' % exc)
        return None
    for problem in vmdk_descriptor.sparse_problems(descriptor):
        findings.add(_UNSAFE, problem)
    return descriptor.create_type


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

    if fixed_footer is None:
        _run_safety_check(findings, inspector)
    subformat = None
    virtual_size = inspector.virtual_size
    with open(path, 'rb') as f:
        if detected == formats.RAW:
            virtual_size = size
        elif detected == formats.QCOW2:
            if headers.qcow2_crypt_method(f):
                findings.add(_UNSAFE, 'qcow2 is encrypted; XHV converts only '
                                      'unencrypted images')
        elif detected == formats.VMDK:
            subformat = _vmdk_sparse_checks(findings, f)
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
        with open(path, 'rb') as f:
            head = f.read(vmdk_descriptor.MAX_DESCRIPTOR_BYTES)
        if claimed in (None, formats.VMDK) and \
                vmdk_descriptor.looks_like_descriptor(head):
            fmt, subformat, virtual_size, data_path = _inspect_flat(
                path, staging_dir, cap, findings)
        else:
            fmt, subformat, virtual_size, data_path = _inspect_binary(
                path, size, claimed, cap, findings)
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
