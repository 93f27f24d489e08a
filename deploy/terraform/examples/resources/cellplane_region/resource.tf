resource "cellplane_region" "us_east" {
  name        = "us-east"
  description = "Virginia, wave 1"
}
