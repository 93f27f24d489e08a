resource "cellplane_tenant" "acme" {
  id          = "acme"
  home_region = "us-east"
  # The DR partner: a standby is kept there and the create returns once it
  # is STREAMING. A switchover to it (cellctl tenant failover acme) is not
  # drift: the next plan is empty.
  standby_region = "eu-west"
  limits = {
    rate  = 200
    burst = 400
  }
  # The default. A destroy is refused at plan time while it is true.
  deletion_protection = true
  timeouts = {
    create = "10m"
    delete = "30m"
  }
}
