"""The disk-format translation engine: pure, safe, shared.

Imports nothing of Nova, Cinder or the rest of nova_xhv: the Nova driver,
the Cinder driver and ``xhv-convert`` all stand on it.

Public API (everything a caller needs is re-exported here)::

    from nova_xhv import translate

    info = translate.inspect_image(path, claimed_format='qcow2',
                                   staging_dir=None,
                                   max_virtual_size=None)
    # -> ImageInfo(path, format, subformat, virtual_size, actual_size,
    #              data_path, safe, failures)
    #    Raises UnsafeImage / FormatMismatch / UnsupportedFormat before any
    #    qemu-img process opens the file as its claimed format.

    result = translate.convert(src, dst, to_format='vmdk',
                               from_format=None, subformat=None,
                               options=translate.ConvertOptions(...))
    # -> ConvertResult(src_info, dst_format, dst_subformat, virtual_size,
    #                  bytes_written, verified, elapsed)

    with translate.open_stream(src, from_format=None,
                               options=...) as stream:  # inspects now
        result, value = stream.run(consume)  # consume(reader) uploads
    # -> a streamOptimized vmdk written into a pipe that consume reads
    #    (reader.read(n)); its end only once the writer succeeded.

    same = translate.compare(path_a, fmt_a, path_b, fmt_b)  # guest data

Canonical format names are Glance's/Nova's: raw, qcow2, vmdk, vhdx, vhd.
``translate.formats`` maps them to qemu-img's (vhd -> vpc) and knows each
hypervisor's native format.
"""

import importlib

# name -> the submodule that defines it.  Imported on first use, so that
# a process needing one submodule (the stream decoder's child) does not
# pay for the engine's imports (oslo.log, oslo.utils, ...).
_EXPORTS = {
    'compare': 'engine', 'convert': 'engine', 'ConvertOptions': 'engine',
    'ConvertResult': 'engine', 'open_stream': 'engine',
    'TranslationStream': 'engine', 'StreamFailed': 'stream_write',
    'ConversionFailed': 'exceptions', 'ConversionTimeout': 'exceptions',
    'FormatMismatch': 'exceptions', 'TLSVerificationFailed': 'exceptions',
    'TranslationError': 'exceptions', 'UnsafeImage': 'exceptions',
    'UnsupportedFormat': 'exceptions',
    'ImageInfo': 'inspect', 'inspect_image': 'inspect',
    'DirectRead': 'remote', 'RemoteSource': 'remote',
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(
            '%s.%s' % (__name__, _EXPORTS[name])), name)
    else:
        try:
            value = importlib.import_module('%s.%s' % (__name__, name))
        except ModuleNotFoundError as error:
            if error.name != '%s.%s' % (__name__, name):
                raise
            raise AttributeError('module %r has no attribute %r'
                                 % (__name__, name)) from None
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
