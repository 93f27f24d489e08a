// Package logging builds cellplane's slog loggers and adapts the loggers of
// third-party engines to them, so that every line of a process goes through
// one handler with one format and stable keys.
//
// Levels mean (STYLE.md, "Logging"): Debug is for developers; Info is rare in
// steady state (start, stop, leadership changes, membership changes); Warn is
// a peer going away or a retryable failure; Error is a request that failed
// for a bad reason or data at risk.
//
// Usage:
//
//	logger, err := logging.New(os.Stderr, logging.Options{Level: "info", Format: "json"})
//	if err != nil { ... }
//	raftLogger := logging.NewHclog(logger.With("node", id), logging.HclogOptions{
//		Name:     "raft",
//		MinLevel: slog.LevelInfo,
//		Demote:   logging.RaftRoutineMessages(),
//	})
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// LevelTrace is below Debug; hclog's Trace maps to it. Handlers built by New
// print it as TRACE.
const LevelTrace = slog.LevelDebug - 4

// Format is a log output format.
type Format string

// The formats New understands.
const (
	FormatText Format = "text"
	FormatJSON Format = "json"
)

// Options configure New.
type Options struct {
	// Level is the minimum level: trace, debug, info, warn or error (empty:
	// info).
	Level string
	// Format is text or json (empty: text).
	Format Format
	// AddSource adds the caller's file:line to every record.
	AddSource bool
}

// ParseLevel parses a level name (case-insensitive): trace, debug, info,
// warn (or warning), error.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "trace":
		return LevelTrace, nil
	case "debug":
		return slog.LevelDebug, nil
	case "", "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("logging: unknown level %q (want trace, debug, info, warn or error)", s)
}

// ParseFormat parses a format name: text or json.
func ParseFormat(s string) (Format, error) {
	switch Format(strings.ToLower(strings.TrimSpace(s))) {
	case "", FormatText:
		return FormatText, nil
	case FormatJSON:
		return FormatJSON, nil
	}
	return "", fmt.Errorf("logging: unknown format %q (want text or json)", s)
}

// New returns a logger writing to w with the level and format of opts.
func New(w io.Writer, opts Options) (*slog.Logger, error) {
	level, err := ParseLevel(opts.Level)
	if err != nil {
		return nil, err
	}
	format, err := ParseFormat(string(opts.Format))
	if err != nil {
		return nil, err
	}
	return slog.New(NewHandler(w, format, level, opts.AddSource)), nil
}

// NewHandler returns a text or JSON handler writing to w at level (a
// *slog.LevelVar lets the level change at run time). Unknown formats fall
// back to text.
func NewHandler(w io.Writer, format Format, level slog.Leveler, addSource bool) slog.Handler {
	ho := &slog.HandlerOptions{Level: level, AddSource: addSource, ReplaceAttr: replaceLevel}
	if format == FormatJSON {
		return slog.NewJSONHandler(w, ho)
	}
	return slog.NewTextHandler(w, ho)
}

// Discard returns a logger that drops everything.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// OrDefault returns l, or slog.Default() when l is nil (the convention for
// Config.Logger fields).
func OrDefault(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.Default()
	}
	return l
}

// replaceLevel names LevelTrace "TRACE" instead of slog's "DEBUG-4".
func replaceLevel(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.LevelKey {
		if l, ok := a.Value.Any().(slog.Level); ok && l == LevelTrace {
			a.Value = slog.StringValue("TRACE")
		}
	}
	return a
}
