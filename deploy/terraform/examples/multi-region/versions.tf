terraform {
  # import blocks with for_each (1.7), validations across variables (1.9).
  required_version = ">= 1.9"
  required_providers {
    cellplane = {
      source = "cellplane/cellplane"
    }
  }
}

# One provider for every region: the control plane is global. Settings come
# from the environment like cellctl's (CELLPLANE_CONFIG: the client
# configuration file `cellplane dev` writes, with the admin certificate).
provider "cellplane" {
  endpoint    = var.controlplane
  config_file = var.client_config
}
