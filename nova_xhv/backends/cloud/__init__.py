"""XHV's cloud backend (``[xhv] backend = cloud``): another OpenStack cloud.

One nova-compute stands for one project in one region of a remote cloud,
reached with openstacksdk.  ``facts`` holds the family's facts,
``errors`` maps remote failures to Nova exceptions, ``remote`` opens the
connection, ``backend`` the backend (doc/source/cloud.rst).
"""
