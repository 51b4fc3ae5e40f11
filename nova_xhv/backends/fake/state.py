"""The fake hypervisor's honest lifecycle state: a JSON file per host.

Guests are records ``{uuid: {name, power, hardware, disks}}`` in
``<disk_dir>/<host>/state.json``, written atomically, so a restarted
compute finds its guests again.  Power states are the fake hypervisor's
own words, mapped to Nova's by ``POWER_STATE_MAP`` (as Libcloud drivers
own their ``NODE_STATE_MAP``).
"""

import json
import os
import threading

from nova.compute import power_state

RUNNING = 'running'
SHUTOFF = 'shutoff'
CRASHED = 'crashed'
POWER_STATE_MAP = {
    RUNNING: power_state.RUNNING,
    SHUTOFF: power_state.SHUTDOWN,
    CRASHED: power_state.CRASHED,
}


class GuestState(object):
    """The guests of one fake hypervisor (one host folder)."""

    def __init__(self, folder):
        self.folder = folder
        self.path = os.path.join(folder, 'state.json')
        self._lock = threading.Lock()

    def _read(self):
        try:
            with open(self.path) as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    def _write(self, guests):
        os.makedirs(self.folder, mode=0o700, exist_ok=True)
        tmp = self.path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(guests, f, sort_keys=True)
        os.replace(tmp, self.path)

    def all(self):
        with self._lock:
            return self._read()

    def get(self, uuid):
        with self._lock:
            return self._read().get(uuid)

    def put(self, uuid, record):
        with self._lock:
            guests = self._read()
            guests[uuid] = record
            self._write(guests)

    def update(self, uuid, **values):
        """Change a guest's record; False if there is no such guest."""
        with self._lock:
            guests = self._read()
            if uuid not in guests:
                return False
            guests[uuid].update(values)
            self._write(guests)
            return True

    def remove(self, uuid):
        with self._lock:
            guests = self._read()
            if guests.pop(uuid, None) is not None:
                self._write(guests)
