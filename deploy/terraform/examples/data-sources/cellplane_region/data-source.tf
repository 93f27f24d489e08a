data "cellplane_region" "us_east" {
  name = "us-east"
}

output "us_east_cells" {
  value = data.cellplane_region.us_east.cells
}
