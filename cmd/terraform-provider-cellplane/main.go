// Command terraform-provider-cellplane is cellplane's Terraform provider
// (protocol 6, terraform-plugin-framework): regions, tenants and API keys
// of a control plane, declaratively. Terraform (or OpenTofu) starts it; run
// it with -debug to attach a debugger (it prints TF_REATTACH_PROVIDERS).
// deploy/terraform/README.md says how to build it and point Terraform at
// it with dev_overrides.
package main

import (
	"context"
	"flag"
	"log"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"

	"github.com/cellplane/cellplane/cmd/terraform-provider-cellplane/internal/provider"
)

// version is set at build time (-ldflags "-X main.version=v0.1.0").
var version = "dev"

func main() {
	debug := flag.Bool("debug", false, "run with support for debuggers (prints TF_REATTACH_PROVIDERS)")
	flag.Parse()
	err := providerserver.Serve(context.Background(), provider.New(version), providerserver.ServeOpts{
		Address: provider.Address,
		Debug:   *debug,
	})
	if err != nil {
		log.Fatal(err)
	}
}
