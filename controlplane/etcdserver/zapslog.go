package etcdserver

import (
	"context"
	"log/slog"
	"strings"

	"go.uber.org/zap/zapcore"

	"github.com/cellplane/cellplane/internal/logging"
)

// slogCore is a zapcore.Core writing to an slog.Logger: etcd logs with
// zap, cellplane with slog. etcd's Info is routine and becomes Debug; its
// Debug (bbolt transactions, raft details) becomes logging.LevelTrace.
type slogCore struct {
	l      *slog.Logger
	fields []zapcore.Field
}

func newSlogCore(l *slog.Logger) zapcore.Core {
	if l == nil {
		return zapcore.NewNopCore()
	}
	return &slogCore{l: l.With("component", "etcd")}
}

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l < zapcore.InfoLevel:
		return logging.LevelTrace
	case l == zapcore.InfoLevel:
		return slog.LevelDebug
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

func (c *slogCore) Enabled(l zapcore.Level) bool {
	return c.l.Enabled(context.Background(), slogLevel(l))
}

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	return &slogCore{l: c.l, fields: append(append([]zapcore.Field(nil), c.fields...), fields...)}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	level := slogLevel(e.Level)
	if shutdownNoise(e.Message, enc.Fields) {
		level = slog.LevelDebug
	}
	attrs := make([]slog.Attr, 0, len(enc.Fields)+1)
	if e.LoggerName != "" {
		attrs = append(attrs, slog.String("logger", e.LoggerName))
	}
	for k, v := range enc.Fields {
		if k == "error" {
			k = "err"
		}
		attrs = append(attrs, slog.Any(k, v))
	}
	c.l.LogAttrs(context.Background(), level, e.Message, attrs...)
	return nil
}

// shutdownNoise reports the lines embed logs at Error/Warn when it is
// closed on purpose (its listeners report "closed"): routine at shutdown,
// so they are demoted to Debug.
func shutdownNoise(msg string, fields map[string]any) bool {
	switch msg {
	case "setting up serving from embedded etcd failed.", "stopping insecure grpc server due to error", "stopped insecure grpc server due to error":
	default:
		return false
	}
	err, _ := fields["error"].(string)
	return strings.Contains(err, "closed")
}

func (c *slogCore) Sync() error { return nil }
