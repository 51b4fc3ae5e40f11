"""XHV's KVM backend: Nova's stock libvirt driver (backend = libvirt).

``backend`` holds the backend; ``facts`` the family's facts.
"""
