"""XHV's vSphere backend, on pyvmomi (``[xhv] backend = vmware``)."""

try:
    import pyVmomi  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install
    msg = ('the XHV vmware backend needs pyvmomi: pip install '
           '"openstack-xhv[vmware]" (%s)' % exc)
    raise ImportError(msg, name='pyVmomi') from exc
