import {
  to = cellplane_cell.us_east_a
  id = "us-east-a"
}
