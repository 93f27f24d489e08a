# Failovers out of or into us-east-a, with the events an emergency
# promotion lost (lost_events).
data "cellplane_failovers" "us_east_a" {
  cell = "us-east-a"
}
