"""A xapi (XenServer / XCP-ng pool master) simulator for XHV's tests.

``model`` holds the pool's objects and the rules of the calls XHV makes;
``server`` serves them as xapi does: XML-RPC that the unmodified
``XenAPI.Session`` talks to, plus the ``/import_raw_vdi`` and
``/export_raw_vdi`` HTTP handlers, over HTTP or HTTPS.  It runs no guest:
a VDI is a raw file in the SR's folder, so tests read a guest's disk there.
"""
