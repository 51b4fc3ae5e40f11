import pytest

from nova_xhv.translate import vmdk_descriptor as vd

FLAT = b'''# Disk DescriptorFile
version=1
CID=8686e3d6
parentCID=ffffffff
createType="monolithicFlat"

# Extent description
RW 75783 FLAT "disk-flat.vmdk" 0

# The Disk Data Base
#DDB

ddb.virtualHWVersion = "4"
ddb.adapterType = "ide"
'''


def test_parse_flat_descriptor():
    descriptor = vd.parse(FLAT + b'\0' * 300)
    assert descriptor.create_type == 'monolithicFlat'
    assert not descriptor.has_parent
    assert descriptor.extents == [
        vd.Extent('RW', 75783, 'FLAT', 'disk-flat.vmdk', 0)]
    assert descriptor.fields['ddb.adaptertype'] == 'ide'
    assert vd.flat_problems(descriptor) == []


def _flat(extent_lines, extra=b''):
    return vd.parse(FLAT.replace(b'RW 75783 FLAT "disk-flat.vmdk" 0',
                                 extent_lines) + extra)


@pytest.mark.parametrize('line,problem', [
    (b'RW 8 FLAT "/etc/shadow" 0', 'names another folder'),
    (b'RW 8 FLAT "../x-flat.vmdk" 0', 'names another folder'),
    (b'RW 8 FLAT "sub\\\\x.vmdk" 0', 'names another folder'),
    (b'RW 8 FLAT ".." 0', 'not a file name'),
    (b'RW 8 FLAT "nbd:127.0.0.1:1" 0', 'qemu would interpret'),
    (b'RW 8 FLAT "a" 0\nRW 8 FLAT "b" 0', 'exactly one extent'),
    (b'RW 8 SPARSE "a.vmdk"', 'not FLAT'),
    (b'NOACCESS 8 FLAT "a" 0', 'cannot be read'),
    (b'RW 8 FLAT "a" 512', 'offset 512'),
    (b'RW 8 ZERO', 'no file name'),
])
def test_flat_problems(line, problem):
    problems = vd.flat_problems(_flat(line))
    assert any(problem in p for p in problems), problems


def test_parent_hint_refused():
    descriptor = vd.parse(FLAT.replace(
        b'parentCID=ffffffff', b'parentCID=1234\nparentFileNameHint="p"'))
    assert descriptor.has_parent
    assert any('parent' in p for p in vd.flat_problems(descriptor))
    assert any('parent' in p for p in vd.sparse_problems(descriptor))


@pytest.mark.parametrize('data,message', [
    (FLAT + b'echo pwned\n', 'not a VMDK descriptor line'),
    (FLAT + b'CID=1\n', 'repeats'),
    (FLAT.replace(b'createType="monolithicFlat"\n', b''), 'no createType'),
    (FLAT + '\u00e9=1\n'.encode('utf-8'), 'not ASCII'),
    (b'#' * (vd.MAX_DESCRIPTOR_BYTES + 1), 'larger than'),
])
def test_parse_refuses(data, message):
    with pytest.raises(vd.DescriptorError, match=message):
        vd.parse(data)


def test_unsupported_create_type_named():
    descriptor = vd.parse(FLAT.replace(b'monolithicFlat', b'vmfs'))
    assert 'vmfs' in vd.flat_problems(descriptor)[0]


def test_sparse_problems():
    sparse = vd.parse(FLAT.replace(b'monolithicFlat', b'monolithicSparse')
                      .replace(b'RW 75783 FLAT "disk-flat.vmdk" 0',
                               b'RW 75783 SPARSE "disk.vmdk"'))
    assert vd.sparse_problems(sparse) == []


def test_looks_like_descriptor():
    assert vd.looks_like_descriptor(FLAT)
    assert not vd.looks_like_descriptor(b'KDMV' + FLAT)
    assert not vd.looks_like_descriptor(b'\x00\x01binary createType')
    assert not vd.looks_like_descriptor(b'just some text')
