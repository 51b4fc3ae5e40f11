# What every enforcement point queries: the violations of all templates,
# sorted by enforcement.  Operator modules in package xhv add to deny and
# warn directly ({"rule": id, "msg": text}, or a plain message).
package xhv

import rego.v1

deny contains v if {
	some v in violations
	v.enforcement == "deny"
}

warn contains v if {
	some v in violations
	v.enforcement == "warn"
}

dryrun contains v if {
	some v in violations
	v.enforcement == "dryrun"
}
