# Carbon: the deployment region's grid intensity (the request's own figure,
# else the price book's) against [policies.params.carbon-intensity]
# max_g_per_kwh, and the region against [gates.params] allowed_regions
# (empty: any region).
package tollgate.gate

import rego.v1

intensity := v if {
	v := input.carbon_intensity_g_per_kwh
} else := v if {
	v := data.tollgate.regions[input.deployment_region]
}

region := object.get(input, "deployment_region", "(unnamed region)")

# The cleanest region under the limit (and allowed), to suggest.
cleanest := r if {
	limit := data.tollgate.params["carbon-intensity"].max_g_per_kwh
	ok := {[g, name] |
		# Not `some name, g in ...`: rego-cpp rejects that form inside a
		# comprehension (tests/test_rego_differential.py checks both engines).
		g := data.tollgate.regions[name]
		g <= limit
		region_allowed(name)
	}
	count(ok) > 0
	r := sort(ok)[0][1]
} else := "none"

violations contains {"rule": "carbon-intensity", "message": msg} if {
	limit := data.tollgate.params["carbon-intensity"].max_g_per_kwh
	intensity > limit
	msg := sprintf("%s runs at %v g CO2e/kWh, above the limit of %v g/kWh (cleanest allowed region: %s)", [region, intensity, limit, cleanest])
}

violations contains {"rule": "region-not-allowed", "message": msg} if {
	not region_allowed(input.deployment_region)
	msg := sprintf("deployment region %s is not in the allowed regions %v", [input.deployment_region, data.tollgate.params.gates.allowed_regions])
}

region_allowed(_) if count(data.tollgate.params.gates.allowed_regions) == 0

region_allowed(r) if r in data.tollgate.params.gates.allowed_regions
