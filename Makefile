# Thin, documented shortcuts for the commands in CONTRIBUTING.md. Every
# target is one or two plain go/buf commands; run them directly if you
# prefer. `make help` lists the targets.

GO      ?= go
BUF     := bin/buf
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo dev)

.PHONY: help generate lint test test-short fuzz chaos build ci clean tfdocs tffmt tflint

help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-11s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

generate: $(BUF) ## Regenerate the Go code beside proto/**/*.proto (buf generate).
	$(BUF) generate

lint: $(BUF) ## gofmt check, go vet and buf lint (as CI runs them).
	@files="$$(gofmt -l .)"; if [ -n "$$files" ]; then echo "gofmt needed:"; echo "$$files"; exit 1; fi
	$(GO) vet ./...
	$(BUF) lint

test: ## Run every test (what CI runs; a few minutes).
	$(GO) test -timeout 15m ./...

test-short: ## Run the fast tests (tests that start nodes skip themselves with -short where they opt in).
	$(GO) test -short ./...

fuzz: ## Run every fuzz target for FUZZTIME each (default 3s; CI runs this).
	bash .ci/fuzz

# The fault suite (test/faults, docs/reliability.md "Fault suite"): every
# scenario, COUNT seeds from SEED, each phase PHASE long; RUN narrows it.
# The long variants of the other fault tests run too: cells/storetest
# (crash points at several hits) and test/chaos (cross-cell scenarios),
# gated on CELLPLANE_CHAOS_ALL like test/faults.
SEED  ?= $(shell date +%s)
COUNT ?= 1
PHASE ?= 2s
RUN   ?= .
chaos: ## Run every fault scenario on 3-node cells of processes: SEED=… COUNT=… PHASE=… RUN=….
	CELLPLANE_CHAOS_ALL=1 CELLPLANE_CHAOS_SEED=$(SEED) CELLPLANE_CHAOS_COUNT=$(COUNT) CELLPLANE_CHAOS_PHASE=$(PHASE) \
		$(GO) test -count=1 -p 1 -timeout 90m -v -run '$(RUN)' ./test/faults ./cells/storetest ./test/chaos

build: ## Build bin/cellplane with the version and commit stamped in.
	$(GO) build -ldflags "-X main.version=$(VERSION) -X main.commit=$(COMMIT)" -o bin/cellplane ./cmd/cellplane

tfdocs: ## Regenerate the Terraform provider docs in deploy/terraform/docs (tfplugindocs, offline; CI checks they are fresh).
	bash .ci/tfdocs

tffmt: ## Format every .tf and .tftest.hcl under deploy/terraform (CI runs terraform fmt -check).
	"$$(bash .ci/terraform)" fmt -recursive deploy/terraform

tflint: ## Lint the Terraform modules and the multi-region example (tflint, bundled ruleset, offline).
	$(GO) build -C tools/tflint -o "$(CURDIR)/bin/tflint" github.com/terraform-linters/tflint
	for d in modules/region modules/tenant examples/multi-region; do \
		TF_CLI_CONFIG_FILE=/dev/null bin/tflint --chdir="deploy/terraform/$$d" --config="$(CURDIR)/deploy/terraform/.tflint.hcl" || exit 1; done

ci: ## Run the CI script exactly as CI does.
	bash .ci/run

clean: ## Remove bin/.
	rm -rf bin

# buf is pinned in tools/go.mod (kept apart from the main module so that
# its dependencies do not move ours).
$(BUF): tools/go.mod tools/go.sum
	$(GO) build -C tools -o "$(CURDIR)/$(BUF)" github.com/bufbuild/buf/cmd/buf
