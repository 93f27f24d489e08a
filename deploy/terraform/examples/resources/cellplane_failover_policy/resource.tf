# The platform's one automatic promotion policy.
resource "cellplane_failover_policy" "this" {
  enabled        = true
  unhealthy_for  = "30s" # a cell unhealthy this long has its tenants promoted
  regions        = ["us-east", "eu-west"]
  max_concurrent = 1
}
