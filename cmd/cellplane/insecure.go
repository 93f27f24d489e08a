package main

import (
	"log/slog"

	"github.com/spf13/pflag"
)

// A serving command chooses between TLS material (--certs-dir, with
// --cert-name) and running without any (--insecure), and refuses to start
// with neither: plaintext is never what an operator gets by forgetting a
// flag (docs/security.md, "--insecure and the dev shortcuts").

// addInsecureFlag registers --insecure on fs into p; what says what then
// runs without authentication ("Raft, gRPC and HTTP are").
func addInsecureFlag(fs *pflag.FlagSet, p *bool, what string) {
	fs.BoolVar(p, "insecure", false, "run without TLS material: "+what+" plaintext and unauthenticated, so anyone who reaches them can read, write and delete every tenant's data; local development only (a warning at every start). Exclusive with --certs-dir; one of the two is required")
}

// checkTLSChoice returns the usage error of an incomplete or
// contradictory choice.
func checkTLSChoice(certsDir, certName string, insecure bool) error {
	switch {
	case certsDir != "" && insecure:
		return usageErrorf("--certs-dir and --insecure are exclusive: give TLS material or run insecure, not both")
	case certsDir == "" && certName != "":
		return usageErrorf("--cert-name needs --certs-dir")
	case certsDir == "" && !insecure:
		return usageErrorf("no TLS material: pass --certs-dir DIR (certificates from 'cellplane cert'), or --insecure to run plaintext and unauthenticated (local development only)")
	}
	return nil
}

// warnInsecure logs the one warning of a start with --insecure: what the
// component exposes, at which addresses (attrs).
func warnInsecure(log *slog.Logger, component string, attrs ...any) {
	log.Warn("INSECURE: "+component+" runs with --insecure: no TLS and no authentication on its ports and connections; anyone who can reach them can read, write and delete every tenant's data. For local development only: pass --certs-dir (docs/security.md, \"--insecure and the dev shortcuts\")",
		append([]any{"insecure", true}, attrs...)...)
}
