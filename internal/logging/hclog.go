package logging

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
)

// HclogOptions configure NewHclog.
type HclogOptions struct {
	// Name is the logger's name, reported under the "component" key
	// (hclog's Named appends ".sub" to it).
	Name string
	// MinLevel drops hclog records below it even when the slog handler
	// would take them. Raft is chatty at Info during elections and
	// snapshots; a node usually wants raft at Info and its own code at the
	// level the operator chose. Nil means no extra filter.
	MinLevel slog.Leveler
	// Demote lists message prefixes logged at Debug instead of Info:
	// routine lines that say nothing is wrong (see RaftRoutineMessages).
	Demote []string
}

// RaftRoutineMessages returns the hashicorp/raft Info messages that happen
// in steady state (snapshots, log compaction, replication pipelines), for
// HclogOptions.Demote: logged at Debug, they keep Info rare, while
// leadership and membership changes stay at Info.
func RaftRoutineMessages() []string {
	return []string{
		"starting snapshot up to",
		"snapshot complete up to",
		"compacting logs",
		"no logs to truncate",
		"creating new snapshot",
		"reaping snapshot",
		"opening snapshot",
		"pipelining replication",
		"aborting pipeline replication",
		"copied to local snapshot",
	}
}

// NewHclog returns an hclog.Logger that writes through l. hclog levels map
// to slog levels one to one (Trace → LevelTrace). Keys are made stable for
// structured output: "-" becomes "_" (raft's "leader-id" is "leader_id"),
// values that are fmt.Stringers are logged as their string, hclog.Fmt values
// are formatted, and a trailing key without a value is kept under
// hclog.MissingKey.
func NewHclog(l *slog.Logger, opts HclogOptions) hclog.Logger {
	min := &atomic.Int64{}
	min.Store(int64(hclog.NoLevel))
	return &hclogAdapter{
		base:   l,
		logger: withName(l, opts.Name),
		name:   opts.Name,
		opts:   opts,
		level:  min,
	}
}

type hclogAdapter struct {
	base   *slog.Logger // without name and implied args, for ResetNamed
	logger *slog.Logger // base + component + implied args
	name   string
	opts   HclogOptions
	// level is set by SetLevel and shared with derived loggers, like
	// hclog's own loggers do; NoLevel means "not set".
	level   *atomic.Int64
	implied []any
}

func withName(l *slog.Logger, name string) *slog.Logger {
	if name == "" {
		return l
	}
	return l.With("component", name)
}

// slogLevel maps an hclog level to slog.
func slogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return LevelTrace
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default: // Info, NoLevel, DefaultLevel
		return slog.LevelInfo
	}
}

func (a *hclogAdapter) enabled(level slog.Level) bool {
	if set := hclog.Level(a.level.Load()); set != hclog.NoLevel {
		if set == hclog.Off || level < slogLevel(set) {
			return false
		}
	}
	if a.opts.MinLevel != nil && level < a.opts.MinLevel.Level() {
		return false
	}
	return a.logger.Handler().Enabled(context.Background(), level)
}

func (a *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.Off {
		return
	}
	sl := slogLevel(level)
	if sl == slog.LevelInfo && a.demoted(msg) {
		sl = slog.LevelDebug
	}
	if sl >= slog.LevelWarn && closedConn(args) {
		// Raft reports its own connections closing at shutdown as errors
		// ("failed to decode incoming command … use of closed network
		// connection"): expected, not an incident.
		sl = slog.LevelDebug
	}
	if !a.enabled(sl) {
		return
	}
	a.logger.Log(context.Background(), sl, msg, convertArgs(args)...)
}

// closedConn reports whether an argument is an error caused by a closed
// network connection.
func closedConn(args []any) bool {
	for _, v := range args {
		if err, ok := v.(error); ok && errors.Is(err, net.ErrClosed) {
			return true
		}
	}
	return false
}

func (a *hclogAdapter) demoted(msg string) bool {
	for _, p := range a.opts.Demote {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

func (a *hclogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *hclogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *hclogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *hclogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *hclogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }

func (a *hclogAdapter) IsTrace() bool { return a.enabled(LevelTrace) }
func (a *hclogAdapter) IsDebug() bool { return a.enabled(slog.LevelDebug) }
func (a *hclogAdapter) IsInfo() bool  { return a.enabled(slog.LevelInfo) }
func (a *hclogAdapter) IsWarn() bool  { return a.enabled(slog.LevelWarn) }
func (a *hclogAdapter) IsError() bool { return a.enabled(slog.LevelError) }

func (a *hclogAdapter) ImpliedArgs() []any { return append([]any(nil), a.implied...) }

func (a *hclogAdapter) With(args ...any) hclog.Logger {
	c := *a
	c.implied = append(append([]any(nil), a.implied...), args...)
	c.logger = a.logger.With(convertArgs(args)...)
	return &c
}

func (a *hclogAdapter) Name() string { return a.name }

func (a *hclogAdapter) Named(name string) hclog.Logger {
	if a.name != "" {
		name = a.name + "." + name
	}
	return a.ResetNamed(name)
}

func (a *hclogAdapter) ResetNamed(name string) hclog.Logger {
	c := *a
	c.name = name
	c.logger = withName(a.base, name).With(convertArgs(a.implied)...)
	return &c
}

func (a *hclogAdapter) SetLevel(level hclog.Level) { a.level.Store(int64(level)) }

func (a *hclogAdapter) GetLevel() hclog.Level {
	if set := hclog.Level(a.level.Load()); set != hclog.NoLevel {
		return set
	}
	for _, l := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn, hclog.Error} {
		if a.enabled(slogLevel(l)) {
			return l
		}
	}
	return hclog.Off
}

func (a *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(a.StandardWriter(opts), "", 0)
}

func (a *hclogAdapter) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	if opts == nil {
		opts = &hclog.StandardLoggerOptions{}
	}
	return &stdWriter{a: a, opts: *opts}
}

// stdWriter turns lines written to a standard library logger into records,
// reading "[LEVEL]" prefixes when asked to.
type stdWriter struct {
	a    *hclogAdapter
	opts hclog.StandardLoggerOptions
}

func (w *stdWriter) Write(p []byte) (int, error) {
	for line := range bytes.Lines(p) {
		s := strings.TrimRight(string(line), "\r\n")
		if s == "" {
			continue
		}
		level := hclog.Info
		switch {
		case w.opts.ForceLevel != hclog.NoLevel:
			level, s = w.opts.ForceLevel, stripLevel(s)
		case w.opts.InferLevels:
			level, s = inferLevel(s)
		}
		w.a.Log(level, s)
	}
	return len(p), nil
}

var levelPrefixes = []struct {
	prefix string
	level  hclog.Level
}{
	{"[TRACE]", hclog.Trace},
	{"[DEBUG]", hclog.Debug},
	{"[INFO]", hclog.Info},
	{"[WARN]", hclog.Warn},
	{"[ERROR]", hclog.Error},
	{"[ERR]", hclog.Error},
}

func inferLevel(s string) (hclog.Level, string) {
	t := strings.TrimSpace(s)
	for _, p := range levelPrefixes {
		if rest, ok := strings.CutPrefix(t, p.prefix); ok {
			return p.level, strings.TrimSpace(rest)
		}
	}
	return hclog.Info, s
}

func stripLevel(s string) string {
	_, rest := inferLevel(s)
	return rest
}

// convertArgs turns hclog's alternating key/value list into slog attributes.
func convertArgs(args []any) []any {
	if len(args) == 0 {
		return nil
	}
	if len(args)%2 == 1 {
		args = append(args[:len(args)-1:len(args)-1], hclog.MissingKey, args[len(args)-1])
	}
	out := make([]any, 0, len(args)/2)
	for i := 0; i < len(args); i += 2 {
		key := fmt.Sprint(args[i])
		if k, ok := args[i].(string); ok {
			key = k
		}
		out = append(out, slog.Attr{Key: strings.ReplaceAll(key, "-", "_"), Value: convertValue(args[i+1])})
	}
	return out
}

func convertValue(v any) slog.Value {
	switch v := v.(type) {
	case hclog.Format:
		if len(v) == 0 {
			return slog.StringValue("")
		}
		return slog.StringValue(fmt.Sprintf(fmt.Sprint(v[0]), v[1:]...))
	case hclog.Hex:
		return slog.StringValue(fmt.Sprintf("0x%x", int(v)))
	case hclog.Octal:
		return slog.StringValue(fmt.Sprintf("0%o", int(v)))
	case hclog.Binary:
		return slog.StringValue(fmt.Sprintf("0b%b", int(v)))
	case hclog.Quote:
		return slog.StringValue(fmt.Sprintf("%q", string(v)))
	case error:
		// fmt, not v.Error(): it survives a nil pointer inside the error.
		return slog.StringValue(fmt.Sprint(v))
	}
	val := slog.AnyValue(v)
	if val.Kind() == slog.KindAny {
		// Structs such as *raft.Raft would be marshalled field by field by
		// the JSON handler; their String() is what their authors meant.
		if _, ok := v.(fmt.Stringer); ok {
			return slog.StringValue(fmt.Sprint(v))
		}
	}
	return val
}
