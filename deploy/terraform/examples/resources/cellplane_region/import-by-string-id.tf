import {
  to = cellplane_region.us_east
  id = "us-east"
}
