# An operator's own rule: no moves of servers whose metadata says they are
# frozen. Rego v1 only (xhv-policy check refuses v0 syntax).
package xhv

import rego.v1

deny contains {"rule": "change-freeze", "msg": "the server is in a change freeze"} if {
	input.action in {"move", "resize", "live_migrate"}
	input.server.metadata.freeze == "true"
}
