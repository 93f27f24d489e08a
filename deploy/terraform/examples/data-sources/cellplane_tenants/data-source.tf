# Reporting: every ACTIVE tenant homed in us-east, with its replication.
data "cellplane_tenants" "us_east" {
  region = "us-east"
  state  = "ACTIVE"
  limit  = 500
}

check "us_east_tenants_protected" {
  assert {
    condition     = alltrue([for t in data.cellplane_tenants.us_east.tenants : t.standby_cell != ""])
    error_message = "some us-east tenants have no standby"
  }
}
