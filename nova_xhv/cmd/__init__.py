"""Console commands shipped by openstack-xhv."""
