# Where cell nodes register: wire it into the nodes' configuration.
data "cellplane_registry" "this" {}

output "etcd_endpoints" {
  value = data.cellplane_registry.this.etcd_endpoints
}
