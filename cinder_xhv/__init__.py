"""XHV's Cinder side: a meta volume driver that wraps a real backend."""
