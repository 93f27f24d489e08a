package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cellplane/cellplane/internal/pki"
)

// certFlags are the flags every cert subcommand shares.
type certFlags struct {
	dir       string
	overwrite bool
}

func newCertCmd(std streams) *cobra.Command {
	var cf certFlags
	cmd := &cobra.Command{
		Use:   "cert",
		Short: "Create and list the cluster CA and the certificates of components, operators and clients",
		Long: `Create the cluster's certificate authority and the certificates that identify
every component, operator and client for mutual TLS, in a certs directory:

  ca.crt, ca.key                  the CA bundle and the CA key (keep ca.key off the
                                  machines that run components)
  node.<region>.<cell>.<node>.crt/.key, router.<id>, controlplane.<id>,
  worker.<id>, operator.<name>, client.<tenant>

Each certificate carries its identity as one URI SAN:
  spiffe://<cluster>/region/<r>/cell/<c>/node/<n>, spiffe://<cluster>/router/<id>,
  spiffe://<cluster>/controlplane/<id>, spiffe://<cluster>/worker/<id>,
  spiffe://<cluster>/operator/<role>/<name> (role admin or read-only),
  spiffe://<cluster>/client/<tenant>.
Keys are ECDSA P-256 and written with mode 0600. Nothing is overwritten
without --overwrite. Components reload their files when they change, so
certificates and the CA rotate without a restart (docs/security.md).`,
		Example: `  cellplane cert create-ca --cluster prod
  cellplane cert create-node --region eu --cell c1 --node n1 --host 10.0.0.7
  cellplane cert create-operator --name alice --role admin
  cellplane cert list`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&cf.dir, "certs-dir", "certs", "the directory of the CA and the certificates")
	pf.BoolVar(&cf.overwrite, "overwrite", false, "replace existing files")
	cmd.AddCommand(
		newCertCreateCACmd(std, &cf),
		newCertFinishRotationCmd(std, &cf),
		newCertCreateLeafCmd(std, &cf, pki.KindNode),
		newCertCreateLeafCmd(std, &cf, pki.KindRouter),
		newCertCreateLeafCmd(std, &cf, pki.KindControlPlane),
		newCertCreateLeafCmd(std, &cf, pki.KindWorker),
		newCertCreateLeafCmd(std, &cf, pki.KindOperator),
		newCertCreateLeafCmd(std, &cf, pki.KindClient),
		newCertListCmd(std, &cf),
	)
	return cmd
}

func newCertCreateCACmd(std streams, cf *certFlags) *cobra.Command {
	var (
		cluster  string
		lifetime = pki.DefaultCALifetime
		rotate   bool
	)
	cmd := &cobra.Command{
		Use:   "create-ca --cluster NAME",
		Short: "Create the cluster CA (ca.crt, ca.key), or a new one to rotate to",
		Long: `Create the certificate authority of a cluster: a self-signed ECDSA P-256
certificate with the URI SAN spiffe://<cluster>, written to ca.crt, and its key
to ca.key (0600).

With --rotate, create a new CA for the cluster of the existing one: ca.key
becomes the new key and ca.crt holds the new CA followed by the old one, so
components that reload ca.crt trust both while every leaf is reissued. Then run
'cellplane cert finish-ca-rotation' to trust only the new CA.`,
		Example: `  cellplane cert create-ca --cluster prod --certs-dir ./certs
  cellplane cert create-ca --rotate --certs-dir ./certs`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if lifetime <= 0 {
				return usageErrorf("--lifetime must be positive, got %s", lifetime)
			}
			var (
				ca  *pki.CA
				err error
			)
			if rotate {
				if cluster != "" {
					return usageErrorf("--rotate keeps the cluster of the current CA; do not give --cluster")
				}
				ca, err = pki.RotateCA(cf.dir, lifetime)
			} else {
				if cluster == "" {
					return usageErrorf("--cluster is required")
				}
				if ca, err = pki.NewCA(cluster, lifetime); err == nil {
					err = overwriteHint(pki.WriteCA(cf.dir, ca, cf.overwrite))
				}
			}
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(std.Out, "wrote %s/%s (%d CA(s) trusted) and %s/%s: %s, not after %s, fingerprint %s\n",
				cf.dir, pki.CACertFile, len(ca.Bundle), cf.dir, pki.CAKeyFile, ca.Cert.URIs[0], ca.Cert.NotAfter.UTC().Format(time.RFC3339), pki.Fingerprint(ca.Cert))
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&cluster, "cluster", "", "the cluster's name, the trust domain of every identity (1-128 of [A-Za-z0-9._-])")
	f.DurationVar(&lifetime, "lifetime", lifetime, "how long the CA is valid")
	f.BoolVar(&rotate, "rotate", false, "create a new CA and trust it next to the current one")
	return cmd
}

func newCertFinishRotationCmd(std streams, cf *certFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "finish-ca-rotation",
		Short: "Trust only the CA of ca.key: ends a rotation started by create-ca --rotate",
		Long: `Rewrite ca.crt to hold only the CA whose key is ca.key, ending a CA rotation.
Run it once every certificate has been reissued by the new CA and distributed,
then distribute ca.crt: from then on certificates of the old CA are refused.`,
		Example: `  cellplane cert finish-ca-rotation --certs-dir ./certs`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ca, err := pki.FinishRotation(cf.dir)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(std.Out, "wrote %s/%s: trusts only %s\n", cf.dir, pki.CACertFile, pki.Fingerprint(ca.Cert))
			return err
		},
	}
}

// overwriteHint adds the flag to use to an error about an existing file.
func overwriteHint(err error) error {
	if errors.Is(err, pki.ErrExists) {
		return fmt.Errorf("%w (pass --overwrite to replace it)", err)
	}
	return err
}

// leafCmdText is the help of each create-<kind> command.
var leafCmdText = map[pki.Kind]struct{ use, short, long, example string }{
	pki.KindNode: {"create-node --region R --cell C --node N [--host H]...",
		"Create a cell node's certificate (server and client auth)",
		"Create the certificate of a cell node, identity\nspiffe://<cluster>/region/<r>/cell/<c>/node/<n>, in node.<r>.<c>.<n>.crt/.key.",
		"  cellplane cert create-node --region eu --cell c1 --node n1 --host 10.0.0.7 --host localhost"},
	pki.KindRouter: {"create-router --id ID [--host H]...",
		"Create a router's certificate (server and client auth)",
		"Create the certificate of a router, identity spiffe://<cluster>/router/<id>,\nin router.<id>.crt/.key.",
		"  cellplane cert create-router --id r1 --host 127.0.0.1"},
	pki.KindControlPlane: {"create-controlplane --id ID [--host H]...",
		"Create a control plane member's certificate (server and client auth)",
		"Create the certificate of a control plane member, identity\nspiffe://<cluster>/controlplane/<id>, in controlplane.<id>.crt/.key.",
		"  cellplane cert create-controlplane --id cp1 --host 127.0.0.1"},
	pki.KindWorker: {"create-worker --id ID [--host H]...",
		"Create an MCP worker's certificate (server and client auth)",
		"Create the certificate of an MCP worker, identity spiffe://<cluster>/worker/<id>,\nin worker.<id>.crt/.key.",
		"  cellplane cert create-worker --id w1 --host 127.0.0.1"},
	pki.KindOperator: {"create-operator --name NAME --role admin|read-only",
		"Create an operator's certificate (client auth only)",
		"Create the certificate of an operator (a person or a tool running cellctl),\nidentity spiffe://<cluster>/operator/<role>/<name>, in operator.<name>.crt/.key.\nThe role is part of the identity: changing it means a new certificate.",
		"  cellplane cert create-operator --name alice --role admin\n  cellplane cert create-operator --name dashboards --role read-only --lifetime 168h"},
	pki.KindClient: {"create-client --tenant TENANT",
		"Create a tenant client's certificate (client auth only)",
		"Create the certificate of a program acting for one tenant, identity\nspiffe://<cluster>/client/<tenant>, in client.<tenant>.crt/.key.",
		"  cellplane cert create-client --tenant acme"},
}

// newCertCreateLeafCmd returns create-<kind>: it signs a certificate for
// an identity of kind with the CA of the certs directory.
func newCertCreateLeafCmd(std streams, cf *certFlags, kind pki.Kind) *cobra.Command {
	var (
		id       pki.Identity
		role     string
		hosts    []string
		lifetime = pki.DefaultLifetime(kind)
	)
	text := leafCmdText[kind]
	cmd := &cobra.Command{
		Use:   text.use,
		Short: text.short,
		Long: text.long + `

It is signed by the CA of the certs directory (ca.crt, ca.key), whose cluster
it takes unless --cluster names it (then they must agree).`,
		Example: text.example,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if lifetime <= 0 {
				return usageErrorf("--lifetime must be positive, got %s", lifetime)
			}
			ca, err := pki.LoadCA(cf.dir)
			if err != nil {
				return fmt.Errorf("load the CA (create it with 'cellplane cert create-ca'): %w", err)
			}
			if id.Cluster == "" {
				id.Cluster = ca.Cluster()
			} else if id.Cluster != ca.Cluster() {
				return usageErrorf("--cluster %q, but the CA in %s is of cluster %q", id.Cluster, cf.dir, ca.Cluster())
			}
			id.Kind, id.Role = kind, pki.Role(role)
			if err := id.Validate(); err != nil {
				return usageError{err}
			}
			leaf, err := ca.Issue(pki.LeafRequest{Identity: id, Hosts: hosts, Lifetime: lifetime})
			if err != nil {
				return err
			}
			name := id.FileName()
			if err := pki.WriteLeaf(cf.dir, name, leaf, cf.overwrite); err != nil {
				return overwriteHint(err)
			}
			_, err = fmt.Fprintf(std.Out, "wrote %s/%s.crt and %s/%s.key: %s, not after %s\n",
				cf.dir, name, cf.dir, name, id, leaf.Cert.NotAfter.UTC().Format(time.RFC3339))
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&id.Cluster, "cluster", "", "the cluster (default: the CA's)")
	required := func(name string) { _ = cmd.MarkFlagRequired(name) }
	switch kind {
	case pki.KindNode:
		f.StringVar(&id.Region, "region", "", "the node's region")
		f.StringVar(&id.Cell, "cell", "", "the node's cell")
		f.StringVar(&id.Node, "node", "", "the node's id")
		required("region")
		required("cell")
		required("node")
	case pki.KindRouter, pki.KindControlPlane, pki.KindWorker:
		f.StringVar(&id.ID, "id", "", "the "+string(kind)+"'s id")
		required("id")
	case pki.KindOperator:
		f.StringVar(&id.ID, "name", "", "the operator's name")
		f.StringVar(&role, "role", "", "the operator's role: admin or read-only")
		required("name")
		required("role")
	case pki.KindClient:
		f.StringVar(&id.Tenant, "tenant", "", "the tenant the client acts for")
		required("tenant")
	}
	if kind.Component() {
		f.StringSliceVar(&hosts, "host", nil, "a DNS name or IP address to add as a SAN, for clients that check host names (repeatable)")
	}
	f.DurationVar(&lifetime, "lifetime", lifetime, "how long the certificate is valid")
	return cmd
}

func newCertListCmd(std streams, cf *certFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the certificates of the certs directory",
		Long: `Print every certificate of the *.crt files of the certs directory (a CA
bundle gives one line per CA): its file, identity URI, kind, expiry, and the
fingerprint (SHA-256, first 16 hex digits; all of them with --json) of the CA of
the directory that signed it, or "-" if none did.`,
		Example: `  cellplane cert list --certs-dir ./certs
  cellplane cert list --json | jq -r '.[] | select(.kind == "node") | .identity'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			infos, err := pki.ListDir(cf.dir)
			if err != nil {
				return err
			}
			if asJSON {
				if infos == nil {
					infos = []pki.CertInfo{}
				}
				enc := json.NewEncoder(std.Out)
				enc.SetIndent("", "  ")
				return enc.Encode(infos)
			}
			tw := tabwriter.NewWriter(std.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "FILE\tIDENTITY\tKIND\tNOT AFTER\tISSUER")
			for _, i := range infos {
				ident, issuer := i.Identity, "-"
				if ident == "" {
					ident = "-"
				}
				if i.Issuer != "" {
					issuer = i.Issuer[:16]
				}
				if i.Error != "" {
					ident += " (" + i.Error + ")"
				}
				notAfter := i.NotAfter.Format(time.RFC3339)
				if i.NotAfter.IsZero() {
					notAfter = "-"
				} else if time.Now().After(i.NotAfter) {
					notAfter += " (expired)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", i.File, ident, i.Kind, notAfter, issuer)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array instead of a table")
	return cmd
}
