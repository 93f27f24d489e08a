package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	goclient "github.com/cellplane/cellplane/client"
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

// transportCredentials returns the connection's credentials
// (client.ControlPlaneTarget.Credentials: the one implementation, shared
// with the Terraform provider); a settings mistake is a usage error.
func (o *options) transportCredentials(peer pki.Kind) (credentials.TransportCredentials, error) {
	creds, err := o.target().Credentials(peer)
	if errors.Is(err, goclient.ErrTargetConfig) {
		return nil, usageError{err}
	}
	return creds, err
}

// target is the control plane and TLS material the flags name.
func (o *options) target() goclient.ControlPlaneTarget {
	return goclient.ControlPlaneTarget{Addr: o.controlPlane, CA: o.tlsCA, Cert: o.tlsCert, Key: o.tlsKey, CertsDir: o.certsDir, CertName: o.certName}
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
