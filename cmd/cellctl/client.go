package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/rpcerr"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// client is a connection to the control plane.
type client struct {
	api     cpv1.ControlPlaneServiceClient
	conn    *grpc.ClientConn
	addr    string
	timeout time.Duration
}

// connect makes a client for the control plane named by the options. It
// does not connect yet: the first call does, within --timeout.
func (a *app) connect() (*client, error) {
	creds, err := a.opts.transportCredentials(pki.KindControlPlane)
	if err != nil {
		return nil, err
	}
	conn, err := dial.New(a.opts.controlPlane, dial.Config{Credentials: creds}.With(
		// Fail fast: a call on a connection that cannot be established
		// returns UNAVAILABLE instead of waiting for the deadline.
		grpc.WithDefaultCallOptions(grpc.WaitForReady(false)),
	))
	if err != nil {
		return nil, usageErrorf("--controlplane %q: %v", a.opts.controlPlane, err)
	}
	return &client{
		api:     cpv1.NewControlPlaneServiceClient(conn),
		conn:    conn,
		addr:    a.opts.controlPlane,
		timeout: a.opts.timeout,
	}, nil
}

// Close closes the connection.
func (c *client) Close() { _ = c.conn.Close() }

// transportCredentials returns the connection's credentials: mutual TLS
// with a pki.Source (--certs-dir, or --tls-ca with --tls-cert and
// --tls-key), checking that the server is a peer (a control plane, or a
// cell node for the calls cellctl makes to cells) of the CA's cluster; TLS
// with only server verification (--tls-ca alone: a control plane behind a
// TLS-terminating proxy); else plaintext.
func (o *options) transportCredentials(peer pki.Kind) (credentials.TransportCredentials, error) {
	var pcfg pki.Config
	switch {
	case o.certsDir != "":
		name := o.certName
		if name == "" {
			var err error
			if name, err = onlyOperatorCert(o.certsDir); err != nil {
				return nil, err
			}
		}
		pcfg = pki.DirConfig(o.certsDir, name)
	case o.tlsCert != "":
		pcfg = pki.DefaultConfig()
		pcfg.CAFile, pcfg.CertFile, pcfg.KeyFile = o.tlsCA, o.tlsCert, o.tlsKey
	case o.tlsCA == "":
		return insecure.NewCredentials(), nil
	default:
		return serverOnlyTLS(o.tlsCA)
	}
	pcfg.Logger = slog.New(slog.DiscardHandler) // refusals come back as the call's error
	src, err := pki.NewSource(pcfg)
	if err != nil {
		return nil, err
	}
	return pki.ClientCredentials(src, pki.ExpectKinds(peer)), nil
}

// onlyOperatorCert returns the base name of the one operator certificate
// in dir (--certs-dir without --cert-name).
func onlyOperatorCert(dir string) (string, error) {
	matches, err := filepath.Glob(filepath.Join(dir, "operator.*.crt"))
	if err != nil {
		return "", err
	}
	switch len(matches) {
	case 0:
		return "", usageErrorf("--certs-dir %s holds no operator.*.crt: make one with 'cellplane cert create-operator' or pass --cert-name", dir)
	case 1:
		return strings.TrimSuffix(filepath.Base(matches[0]), ".crt"), nil
	}
	names := make([]string, len(matches))
	for i, m := range matches {
		names[i] = strings.TrimSuffix(filepath.Base(m), ".crt")
	}
	return "", usageErrorf("--certs-dir %s holds several operator certificates (%s): pass --cert-name", dir, strings.Join(names, ", "))
}

// serverOnlyTLS returns TLS credentials that verify the server's chain
// and host name against the CA file and present no client certificate.
func serverOnlyTLS(caFile string) (credentials.TransportCredentials, error) {
	o := &options{tlsCA: caFile}
	pem, err := os.ReadFile(o.tlsCA)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", o.tlsCA)
	}
	return credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}), nil
}

// call runs one RPC within the client's timeout and turns its error into
// one that reads well on one line: a *cperr.Error (REASON: message) for the
// control plane's own errors, "cannot reach the control plane at ..." when
// it is not there.
func call[Resp any](ctx context.Context, c *client, rpc func(context.Context, cpv1.ControlPlaneServiceClient) (Resp, error)) (Resp, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := rpc(ctx, c.api)
	if err != nil {
		var zero Resp
		return zero, c.explain(ctx, err)
	}
	return resp, nil
}

// do is the body of most commands: connect, make one call, print its
// answer (with table for the table output).
func do[Resp proto.Message](a *app, ctx context.Context, rpc func(context.Context, cpv1.ControlPlaneServiceClient) (Resp, error),
	table func(w io.Writer, resp Resp) error) error {
	c, err := a.connect()
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := call(ctx, c, rpc)
	if err != nil {
		return err
	}
	return a.print(resp, func(w io.Writer) error { return table(w, resp) })
}

func (c *client) explain(ctx context.Context, err error) error {
	mapped := rpcerr.FromStatus(err)
	var ce *cperr.Error
	if errors.As(mapped, &ce) {
		return ce
	}
	switch {
	case errors.Is(mapped, context.DeadlineExceeded):
		return fmt.Errorf("no answer from the control plane at %s within %s (see --timeout)", c.addr, c.timeout)
	case errors.Is(mapped, context.Canceled):
		return errors.New("canceled")
	}
	s, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch s.Code() {
	case codes.Unavailable:
		return fmt.Errorf("cannot reach the control plane at %s: %s", c.addr, s.Message())
	case codes.Unimplemented:
		return fmt.Errorf("the server at %s does not serve the control plane API: %s", c.addr, s.Message())
	}
	return fmt.Errorf("%s: %s", s.Code(), s.Message())
}
