# A release gate as a Flask control plane's OPA server ran it: package
# finops, deny messages, allow when there are none. Used unchanged by the
# gate tests, the Data API tests and the differential test against regopy.
package finops

import rego.v1

max_unit_cost_usd := 0.05

required_tags := {"team", "environment"}

allowed_regions := {"eu-north-1", "eu-west-1", "us-west-2"}

deny contains msg if {
	input.unit_cost_usd > max_unit_cost_usd
	msg := sprintf("unit cost %v USD is above the %v USD cap", [input.unit_cost_usd, max_unit_cost_usd])
}

deny contains msg if {
	some tag in required_tags
	not has_tag(tag)
	msg := sprintf("missing cost tag %q", [tag])
}

deny contains msg if {
	input.deployment_region
	not input.deployment_region in allowed_regions
	msg := sprintf("region %v is not allowed", [input.deployment_region])
}

deny contains msg if {
	input.test_pass_rate < 0.95
	msg := sprintf("test pass rate %v is below 0.95", [input.test_pass_rate])
}

deny contains msg if {
	input.security_scan.critical > 0
	msg := sprintf("%v critical security findings", [input.security_scan.critical])
}

has_tag(tag) if {
	v := input.cost_tags[tag]
	is_string(v)
	v != ""
}

default allow := false

allow if count(deny) == 0
