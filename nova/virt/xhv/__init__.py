"""Nova loads compute drivers only from inside ``nova.virt``.

``compute_driver = xhv.XHVDriver`` resolves to this module, which re-exports
the driver from ``nova_xhv``.  Everything XHV does lives there; this package
is the only thing XHV adds to Nova's tree.
"""

from nova_xhv.driver import XHVDriver

__all__ = ['XHVDriver']
