data "cellplane_regions" "all" {}

output "region_names" {
  value = [for r in data.cellplane_regions.all.regions : r.name]
}
