# tflint v0.64.0 (tools/tflint/go.mod) with its bundled terraform ruleset
# only: `tflint --init` would download plugins. CI (.ci/run) lints the
# modules and examples/multi-region with it; the snippets under
# examples/{provider,resources,data-sources} are docs fragments.
config {
  call_module_type = "local"
}

plugin "terraform" {
  enabled = true
  preset  = "recommended"
}

# The provider is not published: it is installed through dev_overrides or
# a filesystem mirror with whatever version was built, so a version
# constraint would only break mirrors.
rule "terraform_required_providers" {
  enabled = false
}
