resource "cellplane_cell" "us_east_a" {
  id               = "us-east-a"
  region           = cellplane_region.us_east.name
  expected_members = 3
  capacity = {
    max_tenants = 5000
    max_bytes   = 500000000000
  }
  # ACTIVE takes new tenants; CORDONED keeps its tenants but takes no new
  # ones; DRAINING moves its tenants to the region's other cells.
  state = "ACTIVE"
  # Block the create until the members are HEALTHY (start the nodes first,
  # or together: nodes wait for their cell's record).
  wait_for_healthy = true
  timeouts = {
    create = "20m"
  }
}
