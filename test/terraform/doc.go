// Package terraform tests deploy/terraform with a real Terraform (or
// OpenTofu) binary, the real provider and a real platform, offline:
//
//   - it builds cmd/terraform-provider-cellplane and cmd/cellctl, and
//     writes a CLI configuration whose dev_overrides point Terraform at the
//     provider (no terraform init, no registry);
//   - it starts an in-process platform shaped like
//     `cellplane dev --regions us-east,eu-west,ap-south --cells-per-region 1
//     --nodes-per-cell 1` (etcd, the control plane with mutual TLS, one
//     1-node cell per region) and points the provider at it through the
//     platform's client configuration file (CELLPLANE_CONFIG);
//   - it runs `terraform test` in modules/tenant and modules/region (the
//     mocked plan tests and the apply tests against the platform);
//   - it runs examples/multi-region's "done means" sequence: three waves
//     of apply (adopting the platform's regions and cells with import
//     blocks), each followed by an empty `plan -detailed-exitcode`; a
//     switchover with `cellctl tenant failover --wait`, then still an empty
//     plan; a destroy refused at plan time because the tenants are
//     protected, with nothing deleted; protection off; destroy.
//
// It runs when TF_ACC is set (.ci/run sets it, and TF_ACC_TERRAFORM_PATH
// from .ci/terraform). Under CI (CI=true) a missing binary or TF_ACC is a
// failure, never a silent skip, like the provider's acceptance tests.
package terraform
