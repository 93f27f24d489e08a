# acme's moves, finished ones included.
data "cellplane_moves" "acme" {
  tenant = "acme"
  all    = true
}
