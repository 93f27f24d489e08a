import {
  to = cellplane_failover_policy.this
  id = "default"
}
