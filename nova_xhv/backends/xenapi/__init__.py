"""XHV's XenServer / XCP-ng backend (``[xhv] backend = xenapi``).

One pool, through its master, on the XenAPI SDK: ``facts`` (the family,
``xen``), ``session`` (login, TLS, calls, raw VDI transfers, failures as
Nova exceptions), ``vm`` (guests and their VBDs/VIFs) and ``backend``
(the ComputeDriver and the disk exchange).
"""
