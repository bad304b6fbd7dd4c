# Per-request unit-cost cap: the threshold of the `unit-cost-cap` window
# policy ([policies.params.unit-cost-cap] cap_usd).
package tollgate.gate

import rego.v1

violations contains {"rule": "unit-cost-cap", "message": msg} if {
	cap := data.tollgate.params["unit-cost-cap"].cap_usd
	input.unit_cost_usd > cap
	msg := sprintf("unit cost %v USD exceeds the cap of %v USD", [input.unit_cost_usd, cap])
}
