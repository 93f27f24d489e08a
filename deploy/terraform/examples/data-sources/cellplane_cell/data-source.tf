# One cell's live status: a rollout gate (see modules/region).
data "cellplane_cell" "us_east_a" {
  id = "us-east-a"

  lifecycle {
    postcondition {
      condition     = self.health == "HEALTHY"
      error_message = "cell us-east-a is ${self.health}"
    }
  }
}
