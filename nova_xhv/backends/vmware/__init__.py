"""XHV's vSphere backend, on pyvmomi (``[xhv] backend = vmware``).

Importing this package needs no pyvmomi: ``facts`` (the family's facts)
is read by every compute and the scheduler.  ``backend`` names the
missing extra.
"""
