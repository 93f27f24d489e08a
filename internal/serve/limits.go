package serve

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Limits bound what one client can hold open on a gRPC server (finding
// M6): streams per connection, connections per listener, how often it may
// ping, and how long an idle connection lives. Every cellplane gRPC server
// applies them (NewGRPCServer; the connection cap through Listener).
type Limits struct {
	// MaxConcurrentStreams is the number of concurrent streams (calls) a
	// client may open on one connection (HTTP/2
	// SETTINGS_MAX_CONCURRENT_STREAMS); further calls wait for a free one.
	MaxConcurrentStreams uint32
	// MaxConns caps the connections a listener holds at once: a
	// connection over it is closed as soon as it is accepted. 0 means no
	// cap.
	MaxConns int
	// KeepaliveMinTime is the least interval between a client's pings;
	// a client pinging more often is sent GOAWAY (ENHANCE_YOUR_CALM) and
	// disconnected.
	KeepaliveMinTime time.Duration
	// KeepalivePermitWithoutStream allows pings on a connection with no
	// call open.
	KeepalivePermitWithoutStream bool
	// MaxConnectionIdle closes a connection that had no call for this
	// long (with GOAWAY, so clients reconnect quietly). 0 means never.
	MaxConnectionIdle time.Duration
	// KeepaliveTime is how long the server waits on a silent connection
	// before it pings the client, and KeepaliveTimeout how long it then
	// waits for the answer before closing the connection.
	KeepaliveTime    time.Duration
	KeepaliveTimeout time.Duration
}

// DefaultLimits are the limits every server gets unless configured.
func DefaultLimits() Limits {
	return Limits{
		MaxConcurrentStreams:         1024,
		MaxConns:                     4096,
		KeepaliveMinTime:             10 * time.Second,
		KeepalivePermitWithoutStream: true,
		MaxConnectionIdle:            30 * time.Minute,
		KeepaliveTime:                2 * time.Minute,
		KeepaliveTimeout:             20 * time.Second,
	}
}

// ErrInvalidLimits is wrapped by Limits.Validate and HTTPLimits.Validate
// errors.
var ErrInvalidLimits = errors.New("invalid server limits")

// Validate reports a limit that would leave a server unbounded or unusable.
func (l Limits) Validate() error {
	switch {
	case l.MaxConcurrentStreams == 0:
		return fmt.Errorf("%w: MaxConcurrentStreams must be > 0", ErrInvalidLimits)
	case l.MaxConns < 0:
		return fmt.Errorf("%w: MaxConns must be >= 0", ErrInvalidLimits)
	case l.KeepaliveMinTime <= 0:
		return fmt.Errorf("%w: KeepaliveMinTime must be > 0", ErrInvalidLimits)
	case l.MaxConnectionIdle < 0:
		return fmt.Errorf("%w: MaxConnectionIdle must be >= 0", ErrInvalidLimits)
	case l.KeepaliveTime <= 0 || l.KeepaliveTimeout <= 0:
		return fmt.Errorf("%w: KeepaliveTime and KeepaliveTimeout must be > 0", ErrInvalidLimits)
	}
	return nil
}

// orDefault is l, or DefaultLimits when l is the zero value.
func (l Limits) orDefault() Limits {
	if l == (Limits{}) {
		return DefaultLimits()
	}
	return l
}

// ServerOptions are the gRPC server options that apply l (all but
// MaxConns, which Listener applies).
func (l Limits) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxConcurrentStreams(l.MaxConcurrentStreams),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             l.KeepaliveMinTime,
			PermitWithoutStream: l.KeepalivePermitWithoutStream,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: l.MaxConnectionIdle,
			Time:              l.KeepaliveTime,
			Timeout:           l.KeepaliveTimeout,
		}),
	}
}

// Listener is ln with l.MaxConns applied (ln itself when there is no
// cap); log may be nil. Wrap the TCP listener, below any TLS listener:
// http.Server finds TLS by the accepted connection's type.
func (l Limits) Listener(ln net.Listener, log *slog.Logger) net.Listener {
	return LimitListener(ln, l.orDefault().MaxConns, log)
}

// LimitListener returns ln capped at max open connections (ln itself when
// max <= 0). A connection accepted while max are open is closed at once,
// so that a client over the cap fails fast instead of waiting in the
// kernel's backlog, and is logged at Warn (at most once a second, with the
// count of refusals since). log may be nil.
func LimitListener(ln net.Listener, max int, log *slog.Logger) net.Listener {
	if max <= 0 {
		return ln
	}
	return &limitListener{Listener: ln, max: int64(max), log: log}
}

type limitListener struct {
	net.Listener
	max  int64
	open atomic.Int64
	log  *slog.Logger

	mu       sync.Mutex
	refused  int64
	lastWarn time.Time
}

// Accept implements net.Listener.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			_ = c.Close()
			l.refuse(c.RemoteAddr())
			continue
		}
		return &limitConn{Conn: c, release: func() { l.open.Add(-1) }}, nil
	}
}

func (l *limitListener) refuse(from net.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refused++
	if l.log == nil || time.Since(l.lastWarn) < time.Second {
		return
	}
	l.log.Warn("connection refused: the listener's connection cap is reached",
		"addr", l.Addr().String(), "max_conns", l.max, "remote", from.String(), "refused", l.refused)
	l.refused, l.lastWarn = 0, time.Now()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

// Close implements net.Conn; the connection's slot is freed once.
func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// HTTPLimits bound an HTTP server (finding M6): how long a client may
// take to send a request, how long a response may take, idle connections,
// header size, and connections. Streaming responses (MCP server-sent
// events) lift the read and write deadlines for themselves (Streaming).
type HTTPLimits struct {
	// ReadHeaderTimeout bounds reading a request's headers (a slowloris
	// client trickling headers is cut then).
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing a response (from the end of the
	// request's headers).
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle this long.
	IdleTimeout time.Duration
	// MaxHeaderBytes caps a request's headers.
	MaxHeaderBytes int
	// MaxConns caps the connections the listener holds at once (see
	// LimitListener). 0 means no cap.
	MaxConns int
}

// DefaultHTTPLimits are the limits every HTTP server gets unless
// configured.
func DefaultHTTPLimits() HTTPLimits {
	return HTTPLimits{
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		MaxConns:          4096,
	}
}

// Validate reports a limit that would leave the server unbounded.
func (l HTTPLimits) Validate() error {
	switch {
	case l.ReadHeaderTimeout <= 0 || l.ReadTimeout <= 0 || l.WriteTimeout <= 0 || l.IdleTimeout <= 0:
		return fmt.Errorf("%w: every HTTP timeout must be > 0", ErrInvalidLimits)
	case l.ReadHeaderTimeout > l.ReadTimeout:
		return fmt.Errorf("%w: ReadHeaderTimeout exceeds ReadTimeout", ErrInvalidLimits)
	case l.MaxHeaderBytes <= 0:
		return fmt.Errorf("%w: MaxHeaderBytes must be > 0", ErrInvalidLimits)
	case l.MaxConns < 0:
		return fmt.Errorf("%w: MaxConns must be >= 0", ErrInvalidLimits)
	}
	return nil
}

func (l HTTPLimits) orDefault() HTTPLimits {
	if l == (HTTPLimits{}) {
		return DefaultHTTPLimits()
	}
	return l
}

// Listener is ln with l.MaxConns applied; log may be nil.
func (l HTTPLimits) Listener(ln net.Listener, log *slog.Logger) net.Listener {
	return LimitListener(ln, l.orDefault().MaxConns, log)
}

// NewHTTPServer returns an HTTP server for h with every limit of l set
// (the zero HTTPLimits means DefaultHTTPLimits); its own errors go to log
// at Warn. Serve it on l.Listener(ln) for the connection cap.
func NewHTTPServer(h http.Handler, log *slog.Logger, l HTTPLimits) *http.Server {
	l = l.orDefault()
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// Streaming wraps a handler whose responses may stream for long
// (server-sent events): it lifts the server's read and write deadlines
// for the request (http.ResponseController), so that ReadTimeout and
// WriteTimeout do not cut a long-lived stream. The handler must bound
// its request body itself (http.MaxBytesReader); the header timeout and
// the connection cap still apply.
func Streaming(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Time{})
		_ = rc.SetWriteDeadline(time.Time{})
		h.ServeHTTP(w, r)
	})
}

// ValidateOrZero is Validate, except that the zero Limits (meaning
// DefaultLimits) is valid.
func (l Limits) ValidateOrZero() error {
	if l == (Limits{}) {
		return nil
	}
	return l.Validate()
}

// ValidateOrZero is Validate, except that the zero HTTPLimits (meaning
// DefaultHTTPLimits) is valid.
func (l HTTPLimits) ValidateOrZero() error {
	if l == (HTTPLimits{}) {
		return nil
	}
	return l.Validate()
}
