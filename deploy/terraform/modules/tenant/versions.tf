terraform {
  # mock_provider (1.7), validations that refer to other variables (1.9).
  required_version = ">= 1.9"
  required_providers {
    cellplane = {
      source = "cellplane/cellplane"
    }
  }
}
