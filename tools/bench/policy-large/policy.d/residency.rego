# Data residency: servers with metadata residency=eu stay in eu- zones.
package xhv

import rego.v1

deny contains {"rule": "eu-residency", "msg": "an eu-resident server may run only in an eu- availability zone"} if {
	input.server.metadata.residency == "eu"
	input.destination
	not startswith(object.get(input.destination, "availability_zone", ""), "eu-")
}
