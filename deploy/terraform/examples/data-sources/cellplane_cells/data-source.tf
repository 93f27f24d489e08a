data "cellplane_cells" "us_east" {
  region = "us-east"
}

output "us_east_health" {
  value = { for c in data.cellplane_cells.us_east.cells : c.id => c.health }
}
