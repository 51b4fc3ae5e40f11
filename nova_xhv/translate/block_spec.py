"""The only names qemu ever gets for a source: explicit block-node specs.

A bare file name lets qemu decide what to open: ``json:``, ``file:`` or
``nbd:`` at its start (or before its first ``/``) is read as a protocol,
and the format driver then opens whatever the image names (a qcow2 or vhdx
backing file, a vmdk ``parentFileNameHint``).  Every source qemu-img or
qemu-nbd opens is therefore given as::

    json:{"driver": <checked format>,
          "file": {"driver": "file", "filename": <absolute path>},
          "backing": null}

(or ``"file": {"driver": "nbd", ...}`` for a remote source served by the
NBD bridge).  The format is the one the inspection checked, never probed;
the protocol node is ours, so no prefix in a name is ever parsed; and
``"backing": null`` is the block layer's own switch (qemu 7.2
``bdrv_open_inherit``) that drops any backing file or parent disk the
image names, for every format driver, before the driver runs.

What the spec cannot switch off, the inspection refuses before qemu runs
(and remote bytes are checked again as qemu reads them, see nbd_bridge):
a qcow2 external data file (qemu opens the name in the header extension
unless ``data-file`` is given, and refuses ``data-file`` for images that
have none), and a sparse vmdk whose header capacity is 0, which qemu
reads as a descriptor naming further extents.  A monolithicFlat pair
never reaches the vmdk driver at all: qemu reads the checked flat extent
with the raw driver.
"""

import json
import os

JSON_PREFIX = 'json:'


def _spec(qemu_format, protocol_node):
    return JSON_PREFIX + json.dumps({
        'driver': qemu_format, 'file': protocol_node, 'backing': None},
        sort_keys=True)


def local(path, qemu_format):
    """The spec of a checked local file (regular file or block device)."""
    return _spec(qemu_format, {'driver': 'file',
                               'filename': os.path.abspath(path)})


def nbd_unix(socket_path, export, qemu_format):
    """The spec of a remote source served on a local NBD socket."""
    return _spec(qemu_format, {
        'driver': 'nbd', 'export': export,
        'server': {'type': 'unix', 'path': os.path.abspath(socket_path)}})


def output(path):
    """An output name qemu cannot read as a protocol: an absolute path.

    qemu-img create/convert -O takes a file name, not a spec; a name that
    starts with ``/`` is never parsed as ``json:`` or ``proto:``.
    """
    return os.path.abspath(path)


def display(name):
    """A spec, shown as what it opens (for messages)."""
    if not name.startswith(JSON_PREFIX):
        return name
    try:
        node = json.loads(name[len(JSON_PREFIX):])['file']
    except (ValueError, KeyError, TypeError):
        return 'source'
    if node.get('driver') == 'file':
        return node.get('filename', 'source')
    return node.get('url') or 'remote source'
