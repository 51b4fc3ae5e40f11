"""A strict parser for VMDK text descriptors.

The format inspector refuses every monolithicFlat VMDK, yet that is what a
vSphere datastore download yields (a small text descriptor plus a
``-flat.vmdk`` extent).  This parser accepts only lines it understands, so
the engine can decide itself which extent files qemu would open.
"""

import collections
import re

# Real descriptors are well under 2 KiB; qemu reads at most 1 MiB.
MAX_DESCRIPTOR_BYTES = 64 * 1024

Extent = collections.namedtuple('Extent',
                                'access sectors type filename offset')

_EXTENT_RE = re.compile(
    r'^(?P<access>RW|RDONLY|NOACCESS)\s+(?P<sectors>\d+)\s+'
    r'(?P<type>[A-Z]+)'
    r'(?:\s+"(?P<filename>[^"]*)"(?:\s+(?P<offset>\d+))?)?$',
    re.IGNORECASE)
_FIELD_RE = re.compile(
    r'^(?P<key>[A-Za-z][A-Za-z0-9_.]*)\s*=\s*(?P<value>.*)$')


class DescriptorError(ValueError):
    """The descriptor text is not something the engine understands."""


class Descriptor(object):
    """Parsed descriptor: ``fields`` (lower-case keys) and ``extents``."""

    def __init__(self, fields, extents):
        self.fields = fields
        self.extents = extents

    @property
    def create_type(self):
        return self.fields.get('createtype', '')

    @property
    def parent_hint(self):
        return self.fields.get('parentfilenamehint')

    @property
    def has_parent(self):
        parent_cid = self.fields.get('parentcid', 'ffffffff').lower()
        return self.parent_hint is not None or parent_cid != 'ffffffff'


def _unquote(value):
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def parse(data):
    """Parse descriptor bytes (NUL padding allowed) into a Descriptor.

    Raises DescriptorError naming the first line it does not understand.
    """
    if len(data) > MAX_DESCRIPTOR_BYTES:
        message = 'descriptor larger than %d bytes' % MAX_DESCRIPTOR_BYTES
        raise DescriptorError(message)
    data = data.split(b'\0', 1)[0]
    try:
        text = data.decode('ascii')
    except UnicodeDecodeError:
        message = 'descriptor is not ASCII text'
        raise DescriptorError(message)
    fields = {}
    extents = []
    for number, raw_line in enumerate(text.splitlines(), 1):
        line = raw_line.strip()
        if not line or line.startswith('#'):
            continue
        match = _EXTENT_RE.match(line)
        if match:
            offset = match.group('offset')
            extents.append(Extent(
                access=match.group('access').upper(),
                sectors=int(match.group('sectors')),
                type=match.group('type').upper(),
                filename=match.group('filename'),
                offset=int(offset) if offset else 0))
            continue
        match = _FIELD_RE.match(line)
        if match:
            key = match.group('key').lower()
            if key in fields:
                message = 'line %d repeats %s' % (number, match.group('key'))
                raise DescriptorError(message)
            fields[key] = _unquote(match.group('value'))
            continue
        message = 'line %d is not a VMDK descriptor line: %r' % (
            number, line[:80])
        raise DescriptorError(message)
    if 'createtype' not in fields:
        message = 'descriptor has no createType'
        raise DescriptorError(message)
    return Descriptor(fields, extents)


def looks_like_descriptor(head):
    """True when ``head`` (the first bytes of a file) is a text descriptor."""
    if head.startswith(b'KDMV'):
        return False
    sample = head[:MAX_DESCRIPTOR_BYTES].split(b'\0', 1)[0]
    try:
        text = sample.decode('ascii')
    except UnicodeDecodeError:
        return False
    return 'createtype' in text.lower() and all(
        c.isprintable() or c.isspace() for c in text)


def bare_filename_problem(name):
    """Why an extent file name is not a bare name in the same folder."""
    if not name:
        return 'extent has no file name'
    if '/' in name or '\\' in name:
        return 'extent file %r names another folder' % name
    if name in ('.', '..'):
        return 'extent file %r is not a file name' % name
    if any(ord(c) < 32 for c in name) or ':' in name:
        return 'extent file %r has characters qemu would interpret' % name
    return None


def sparse_problems(descriptor):
    """Rules for the descriptor embedded in a sparse (KDMV) VMDK."""
    problems = []
    if descriptor.has_parent:
        problems.append(
            'vmdk descriptor names a parent disk (parentFileNameHint/'
            'parentCID): delta disks are refused, consolidate snapshots '
            'first')
    if len(descriptor.extents) != 1:
        problems.append('sparse vmdk must describe exactly one extent, '
                        'found %d' % len(descriptor.extents))
    for extent in descriptor.extents:
        if extent.type != 'SPARSE':
            problems.append('sparse vmdk has a %s extent' % extent.type)
        problem = bare_filename_problem(extent.filename)
        if problem:
            problems.append(problem)
    return problems


def flat_problems(descriptor):
    """Rules for a monolithicFlat descriptor (file checks come later)."""
    problems = []
    if descriptor.create_type.lower() != 'monolithicflat':
        return ['vmdk descriptor type %r is not supported; export the disk '
                'as monolithicFlat or streamOptimized' %
                descriptor.create_type]
    if descriptor.has_parent:
        problems.append('vmdk descriptor names a parent disk: delta disks '
                        'are refused, consolidate snapshots first')
    if len(descriptor.extents) != 1:
        problems.append('monolithicFlat descriptor must name exactly one '
                        'extent, found %d' % len(descriptor.extents))
        return problems
    extent = descriptor.extents[0]
    if extent.type != 'FLAT':
        problems.append('monolithicFlat extent has type %s, not FLAT' %
                        extent.type)
    if extent.access not in ('RW', 'RDONLY'):
        problems.append('extent access %s cannot be read' % extent.access)
    if extent.offset != 0:
        problems.append('flat extent starts at offset %d, not 0' %
                        extent.offset)
    problem = bare_filename_problem(extent.filename)
    if problem:
        problems.append(problem)
    return problems
