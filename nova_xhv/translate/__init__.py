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

    same = translate.compare(path_a, fmt_a, path_b, fmt_b)  # guest data

Canonical format names are Glance's/Nova's: raw, qcow2, vmdk, vhdx, vhd.
``translate.formats`` maps them to qemu-img's (vhd -> vpc) and knows each
hypervisor's native format.
"""

from nova_xhv.translate.engine import compare  # noqa: F401
from nova_xhv.translate.engine import convert  # noqa: F401
from nova_xhv.translate.engine import ConvertOptions  # noqa: F401
from nova_xhv.translate.engine import ConvertResult  # noqa: F401
from nova_xhv.translate.exceptions import ConversionFailed  # noqa: F401
from nova_xhv.translate.exceptions import ConversionTimeout  # noqa: F401
from nova_xhv.translate.exceptions import FormatMismatch  # noqa: F401
from nova_xhv.translate.exceptions import TLSVerificationFailed  # noqa: F401
from nova_xhv.translate.exceptions import TranslationError  # noqa: F401
from nova_xhv.translate.exceptions import UnsafeImage  # noqa: F401
from nova_xhv.translate.exceptions import UnsupportedFormat  # noqa: F401
from nova_xhv.translate.formats import native_format  # noqa: F401
from nova_xhv.translate.inspect import ImageInfo  # noqa: F401
from nova_xhv.translate.inspect import inspect_image  # noqa: F401
from nova_xhv.translate.remote import DirectRead  # noqa: F401
from nova_xhv.translate.remote import RemoteSource  # noqa: F401
