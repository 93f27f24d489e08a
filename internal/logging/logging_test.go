package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestParseLevel(t *testing.T) {
	tests := []struct {
		in      string
		want    slog.Level
		wantErr bool
	}{
		{"", slog.LevelInfo, false},
		{"trace", LevelTrace, false},
		{"DEBUG", slog.LevelDebug, false},
		{"info", slog.LevelInfo, false},
		{"warn", slog.LevelWarn, false},
		{"warning", slog.LevelWarn, false},
		{" error ", slog.LevelError, false},
		{"loud", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseLevel(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseLevel(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Fatalf("ParseLevel(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseFormat(t *testing.T) {
	tests := []struct {
		in      string
		want    Format
		wantErr bool
	}{
		{"", FormatText, false},
		{"text", FormatText, false},
		{"JSON", FormatJSON, false},
		{"xml", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseFormat(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("ParseFormat(%q) = %q, %v; want %q, err=%v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestNew(t *testing.T) {
	var buf bytes.Buffer
	l, err := New(&buf, Options{Level: "warn", Format: "json"})
	if err != nil {
		t.Fatal(err)
	}
	l.Info("dropped")
	l.Warn("kept", "node", "n1")
	rec := decodeOne(t, &buf)
	if rec["msg"] != "kept" || rec["node"] != "n1" || rec["level"] != "WARN" {
		t.Fatalf("record = %v", rec)
	}
	if _, err := New(&buf, Options{Level: "nope"}); err == nil {
		t.Fatal("New with a bad level: want error")
	}
	if _, err := New(&buf, Options{Format: "nope"}); err == nil {
		t.Fatal("New with a bad format: want error")
	}
}

func TestTraceLevelName(t *testing.T) {
	var buf bytes.Buffer
	l, err := New(&buf, Options{Level: "trace", Format: "text"})
	if err != nil {
		t.Fatal(err)
	}
	l.Log(t.Context(), LevelTrace, "deep")
	if !strings.Contains(buf.String(), "level=TRACE") {
		t.Fatalf("output %q does not name the trace level", buf.String())
	}
}

func decodeOne(t *testing.T, buf *bytes.Buffer) map[string]any {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 || lines[0] == "" {
		t.Fatalf("want exactly one record, got %q", buf.String())
	}
	buf.Reset()
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatalf("decode %q: %v", lines[0], err)
	}
	return rec
}

func newJSON(t *testing.T, level slog.Level) (*slog.Logger, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	return slog.New(NewHandler(&buf, FormatJSON, level, false)), &buf
}

type stringer struct{ s string }

func (s *stringer) String() string { return s.s }

func TestHclogLevelsAndKeys(t *testing.T) {
	l, buf := newJSON(t, LevelTrace)
	h := NewHclog(l, HclogOptions{Name: "raft"})

	tests := []struct {
		log       func(msg string, args ...any)
		wantLevel string
	}{
		{h.Trace, "TRACE"},
		{h.Debug, "DEBUG"},
		{h.Info, "INFO"},
		{h.Warn, "WARN"},
		{h.Error, "ERROR"},
	}
	for _, tt := range tests {
		t.Run(tt.wantLevel, func(t *testing.T) {
			tt.log("entering follower state", "leader-id", "n2", "term", 7,
				"error", errors.New("boom"), "node", &stringer{"Node at 1.2.3.4 [Follower]"})
			rec := decodeOne(t, buf)
			want := map[string]any{
				"level":     tt.wantLevel,
				"msg":       "entering follower state",
				"component": "raft",
				"leader_id": "n2",
				"term":      float64(7),
				"error":     "boom",
				"node":      "Node at 1.2.3.4 [Follower]",
			}
			for k, v := range want {
				if rec[k] != v {
					t.Errorf("%s = %#v, want %#v (record %v)", k, rec[k], v, rec)
				}
			}
		})
	}
}

func TestHclogArgEdgeCases(t *testing.T) {
	l, buf := newJSON(t, slog.LevelDebug)
	h := NewHclog(l, HclogOptions{})

	h.Info("odd", "k", "v", "dangling")
	rec := decodeOne(t, buf)
	if rec[hclog.MissingKey] != "dangling" || rec["k"] != "v" {
		t.Fatalf("odd args: %v", rec)
	}
	if _, ok := rec["component"]; ok {
		t.Fatalf("unnamed logger reports a component: %v", rec)
	}

	h.Info("fmt", "f", hclog.Fmt("%d-%s", 3, "x"), "h", hclog.Hex(255), "q", hclog.Quote("a b"))
	rec = decodeOne(t, buf)
	if rec["f"] != "3-x" || rec["h"] != "0xff" || rec["q"] != `"a b"` {
		t.Fatalf("formatted values: %v", rec)
	}
}

func TestHclogMinLevelAndDemote(t *testing.T) {
	l, buf := newJSON(t, slog.LevelDebug)
	h := NewHclog(l, HclogOptions{Name: "raft", MinLevel: slog.LevelInfo, Demote: RaftRoutineMessages()})

	h.Debug("heartbeat")
	if buf.Len() != 0 {
		t.Fatalf("debug below MinLevel was logged: %s", buf)
	}
	if h.IsDebug() || !h.IsInfo() {
		t.Fatalf("IsDebug=%v IsInfo=%v with MinLevel info", h.IsDebug(), h.IsInfo())
	}
	h.Info("compacting logs", "from", 1, "to", 2)
	if buf.Len() != 0 {
		t.Fatalf("demoted routine line passed MinLevel info: %s", buf)
	}
	h.Info("entering leader state")
	if rec := decodeOne(t, buf); rec["level"] != "INFO" {
		t.Fatalf("leadership change: %v", rec)
	}

	// Without MinLevel, the demoted line shows at Debug.
	h2 := NewHclog(l, HclogOptions{Demote: RaftRoutineMessages()})
	h2.Info("snapshot complete up to", "index", 10)
	if rec := decodeOne(t, buf); rec["level"] != "DEBUG" {
		t.Fatalf("demoted line: %v", rec)
	}
}

func TestHclogSetLevelShared(t *testing.T) {
	l, buf := newJSON(t, LevelTrace)
	h := NewHclog(l, HclogOptions{})
	sub := h.Named("snap")
	h.SetLevel(hclog.Warn)
	sub.Info("hidden")
	if buf.Len() != 0 {
		t.Fatalf("SetLevel did not reach a derived logger: %s", buf)
	}
	if got := sub.GetLevel(); got != hclog.Warn {
		t.Fatalf("GetLevel = %v, want warn", got)
	}
	h.SetLevel(hclog.Off)
	sub.Error("hidden too")
	if buf.Len() != 0 {
		t.Fatalf("Off still logs: %s", buf)
	}
}

func TestHclogGetLevelFromHandler(t *testing.T) {
	l, _ := newJSON(t, slog.LevelWarn)
	if got := NewHclog(l, HclogOptions{}).GetLevel(); got != hclog.Warn {
		t.Fatalf("GetLevel = %v, want warn", got)
	}
}

func TestHclogNamedWithImplied(t *testing.T) {
	l, buf := newJSON(t, slog.LevelDebug)
	h := NewHclog(l, HclogOptions{Name: "raft"}).With("peer-id", "n3")
	sub := h.Named("snapshot")
	if sub.Name() != "raft.snapshot" {
		t.Fatalf("Name = %q", sub.Name())
	}
	if got := sub.ImpliedArgs(); len(got) != 2 || got[0] != "peer-id" {
		t.Fatalf("ImpliedArgs = %v", got)
	}
	sub.Warn("slow")
	rec := decodeOne(t, buf)
	if rec["component"] != "raft.snapshot" || rec["peer_id"] != "n3" {
		t.Fatalf("record = %v", rec)
	}
	reset := sub.ResetNamed("wal")
	reset.Warn("x")
	rec = decodeOne(t, buf)
	if rec["component"] != "wal" || rec["peer_id"] != "n3" {
		t.Fatalf("ResetNamed record = %v", rec)
	}
}

func TestHclogStandardLogger(t *testing.T) {
	l, buf := newJSON(t, slog.LevelDebug)
	h := NewHclog(l, HclogOptions{Name: "transport"})

	std := h.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	std.Print("[WARN] peer went away")
	rec := decodeOne(t, buf)
	if rec["level"] != "WARN" || rec["msg"] != "peer went away" || rec["component"] != "transport" {
		t.Fatalf("inferred record = %v", rec)
	}

	forced := h.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Error})
	forced.Print("[INFO] not really info")
	rec = decodeOne(t, buf)
	if rec["level"] != "ERROR" || rec["msg"] != "not really info" {
		t.Fatalf("forced record = %v", rec)
	}

	plain := h.StandardLogger(nil)
	plain.Print("[DEBUG] kept verbatim")
	rec = decodeOne(t, buf)
	if rec["level"] != "INFO" || rec["msg"] != "[DEBUG] kept verbatim" {
		t.Fatalf("plain record = %v", rec)
	}
}

func TestHclogClosedConnectionIsDebug(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	h := NewHclog(l, HclogOptions{Name: "raft"})
	h.Error("failed to decode incoming command", "error", fmt.Errorf("read tcp: %w", net.ErrClosed))
	if buf.Len() != 0 {
		t.Fatalf("closed-connection error logged at Info or above: %s", buf.String())
	}
	h.Error("failed to appendEntries", "error", errors.New("EOF"))
	if !strings.Contains(buf.String(), "level=ERROR") {
		t.Fatalf("a real error was not logged at ERROR: %q", buf.String())
	}
}
