"""XHV: one OpenStack over KVM, vSphere, Hyper-V and XenServer.

Deliberately empty: ``nova_xhv.translate`` is used by the Cinder driver too
and must be importable without pulling in Nova.
"""
