"""XHV's fake backend (``[xhv] backend = fake``): disks as files, no guests.

Like Nova's fake driver and Ironic's fake hardware: a hypervisor family
that runs nowhere, for tests and demonstrations of moves.  ``backend``
holds the backend, ``facts`` the family's facts, ``state`` its honest
lifecycle state.
"""
