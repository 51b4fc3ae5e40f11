"""Hypervisor backends, loaded by stevedore from ``nova_xhv.backends``."""
