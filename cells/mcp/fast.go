package mcp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// The fast path (Config.FastToolCalls) serves a single JSON-RPC tools/call
// POST without the SDK's per-request session: v1.8.0's stateless handler
// connects a new ServerSession, with a jsonrpc2 connection and its
// goroutines, for every request and decodes the message twice. The fast
// path decodes it once, checks what the SDK checks, runs the same tool
// function (metrics, logs and error mapping included) and writes the
// response the SDK would write: the same status, headers and JSON.
//
// It serves only what it can answer exactly like the SDK; anything else
// (initialize, lists, resources, notifications, batches, unknown tools,
// arguments the input schema refuses, headers it does not expect, a body
// it cannot read) falls through to the SDK, which answers as before. The
// differential test (fast_test.go) holds the two paths equal.

const (
	metaProtocolVersion    = "io.modelcontextprotocol/protocolVersion"
	metaClientInfo         = "io.modelcontextprotocol/clientInfo"
	metaClientCapabilities = "io.modelcontextprotocol/clientCapabilities"
	metaServerInfo         = "io.modelcontextprotocol/serverInfo"
	statelessVersion       = "2026-07-28"
)

// fastTool is a tool's fast-path entry: its resolved schemas (the SDK's)
// and the call.
type fastTool struct {
	in  *jsonschema.Resolved
	out *jsonschema.Resolved
	// call decodes args (validated, defaults applied) and runs the tool.
	// ok false: the arguments cannot be decoded; nothing ran.
	call func(ctx context.Context, c caller, args []byte) (out any, err error, ok bool)
}

// resolveFor resolves T's schema as the SDK does for a typed tool.
func resolveFor[T any]() *jsonschema.Resolved {
	s, err := jsonschema.For[T](&jsonschema.ForOptions{})
	if err != nil {
		panic(fmt.Sprintf("mcp: schema of %T: %v", *new(T), err))
	}
	r, err := s.Resolve(&jsonschema.ResolveOptions{ValidateDefaults: true})
	if err != nil {
		panic(fmt.Sprintf("mcp: schema of %T: %v", *new(T), err))
	}
	return r
}

// applySchema is the SDK's input handling (tool.go applySchema, then the
// typed unmarshal): a JSON object, defaults applied, validated, re-encoded.
func applySchema(args []byte, r *jsonschema.Resolved) ([]byte, bool) {
	m := map[string]any{}
	if err := json.Unmarshal(args, &m); err != nil {
		return nil, false
	}
	var v any = m
	if err := r.ApplyDefaults(&v); err != nil {
		return nil, false
	}
	if err := r.Validate(&v); err != nil {
		return nil, false
	}
	b, err := json.Marshal(v)
	return b, err == nil
}

// fastRequest is a tools/call the fast path serves.
type fastRequest struct {
	id        jsonrpc.ID
	name      string
	args      []byte
	stateless bool // 2026-07-28: _meta and Mcp-* headers, resultType in the result
}

// fastHeaders reports whether every check the SDK makes before it
// dispatches would pass: else the SDK answers.
func (w *Worker) fastHeaders(r *http.Request) (version string, ok bool) {
	if ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || ct != "application/json" {
		return "", false
	}
	var jsonOK, sseOK bool
	for _, v := range r.Header.Values("Accept") {
		for p := range strings.SplitSeq(v, ",") {
			mt, _, _ := strings.Cut(p, ";")
			switch strings.TrimSpace(mt) {
			case "application/json":
				jsonOK = true
			case "text/event-stream":
				sseOK = true
			}
		}
	}
	if !jsonOK || !sseOK || len(r.Header.Values("Last-Event-ID")) > 0 {
		return "", false
	}
	for k := range r.Header {
		if strings.HasPrefix(k, "Mcp-Param-") {
			return "", false
		}
	}
	// The SDK's DNS-rebinding check: a loopback listener answers only
	// loopback Host names.
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && la != nil && isLoopback(la.String()) && !isLoopback(r.Host) {
		return "", false
	}
	vs := r.Header.Values("Mcp-Protocol-Version")
	if len(vs) > 1 {
		return "", false
	}
	version = r.Header.Get("Mcp-Protocol-Version")
	if version != "" && !slices.Contains(ProtocolVersions, version) {
		return "", false
	}
	return version, true
}

// isLoopback is the SDK's check (internal/util.IsLoopback), to the letter.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = strings.Trim(addr, "[]")
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	return ip.IsLoopback()
}

// parseFast decodes body as one tools/call the fast path serves.
func parseFast(body []byte, version string, header http.Header) (fastRequest, bool) {
	t := bytes.TrimLeft(body, " \t\r\n")
	if len(t) == 0 || t[0] != '{' {
		return fastRequest{}, false // batches and the rest: the SDK
	}
	// The message's keys decoded exactly (the SDK's decoder matches field
	// names case-sensitively); anything but the four keys of a call goes
	// to the SDK. (jsonrpc.DecodeMessage would do, but its decoder
	// allocates a large buffer per message.)
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		return fastRequest{}, false
	}
	var tag, method string
	for k, v := range top {
		var err error
		switch k {
		case "jsonrpc":
			err = json.Unmarshal(v, &tag)
		case "method":
			err = json.Unmarshal(v, &method)
		case "id", "params":
		default:
			return fastRequest{}, false
		}
		if err != nil {
			return fastRequest{}, false
		}
	}
	if tag != "2.0" || method != "tools/call" {
		return fastRequest{}, false
	}
	id, ok := callID(top["id"])
	if !ok {
		return fastRequest{}, false
	}
	var params map[string]json.RawMessage
	if err := json.Unmarshal(top["params"], &params); err != nil || params == nil {
		return fastRequest{}, false
	}
	fr := fastRequest{id: id, stateless: version == statelessVersion}
	for k, v := range params {
		switch k {
		case "name":
			if err := json.Unmarshal(v, &fr.name); err != nil || fr.name == "" {
				return fastRequest{}, false
			}
		case "arguments":
			if a := bytes.TrimLeft(v, " \t\r\n"); len(a) == 0 || a[0] != '{' {
				return fastRequest{}, false
			}
			fr.args = v
		case "_meta":
			if !fr.stateless || !statelessMeta(v) {
				return fastRequest{}, false
			}
		default:
			return fastRequest{}, false
		}
	}
	if fr.name == "" || fr.args == nil {
		return fastRequest{}, false
	}
	if !fr.stateless {
		// Older versions: no _meta (it would select the new protocol) and
		// none of the 2026-07-28 headers.
		if _, ok := params["_meta"]; ok || header.Get("Mcp-Method") != "" || header.Get("Mcp-Name") != "" {
			return fastRequest{}, false
		}
		return fr, true
	}
	// 2026-07-28: the _meta triple and the standard headers, all matching.
	if _, ok := params["_meta"]; !ok {
		return fastRequest{}, false
	}
	if len(header.Values("Mcp-Method")) != 1 || header.Get("Mcp-Method") != "tools/call" ||
		len(header.Values("Mcp-Name")) != 1 || header.Get("Mcp-Name") != fr.name {
		return fastRequest{}, false
	}
	return fr, true
}

// callID is a call's id as the SDK reads it: a string, or an integer (no
// fraction or exponent, within int64). Anything else (null, absent,
// 1.5, 1e3) goes to the SDK.
func callID(raw json.RawMessage) (jsonrpc.ID, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return jsonrpc.ID{}, false
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return jsonrpc.ID{}, false
		}
		id, err := jsonrpc.MakeID(s)
		return id, err == nil
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || n > 1<<53 || n < -(1<<53) {
		return jsonrpc.ID{}, false // the SDK goes through float64
	}
	id, err := jsonrpc.MakeID(float64(n))
	return id, err == nil
}

// statelessMeta accepts the _meta of a 2026-07-28 call in the plain form
// the SDK accepts: protocolVersion 2026-07-28, clientCapabilities an
// object of objects, clientInfo (optional) an object of strings with a
// name. Anything else (a log level, other keys) goes to the SDK.
func statelessMeta(raw json.RawMessage) bool {
	var meta map[string]json.RawMessage
	if err := json.Unmarshal(raw, &meta); err != nil || meta == nil {
		return false
	}
	var pv string
	if err := json.Unmarshal(meta[metaProtocolVersion], &pv); err != nil || pv != statelessVersion {
		return false
	}
	var caps map[string]map[string]any
	if err := json.Unmarshal(meta[metaClientCapabilities], &caps); err != nil || caps == nil {
		return false
	}
	for k := range caps {
		if k != "roots" && k != "sampling" && k != "elicitation" {
			return false
		}
	}
	if ci, ok := meta[metaClientInfo]; ok {
		var info map[string]string
		if err := json.Unmarshal(ci, &info); err != nil || info == nil || info["name"] == "" {
			return false
		}
		for k := range info {
			if k != "name" && k != "title" && k != "version" && k != "websiteUrl" {
				return false
			}
		}
	}
	for k := range meta {
		if k != metaProtocolVersion && k != metaClientCapabilities && k != metaClientInfo {
			return false
		}
	}
	return true
}

// errReader replays a body read's error after its bytes.
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// fastResult is the SDK's CallToolResult on the wire, in its field order.
type fastResult struct {
	Meta              map[string]any  `json:"_meta,omitempty"`
	Content           []fastContent   `json:"content"`
	StructuredContent json.RawMessage `json:"structuredContent,omitempty"`
	IsError           bool            `json:"isError,omitempty"`
	ResultType        string          `json:"resultType,omitempty"`
}

type fastContent struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// serveFast serves r on the fast path and reports true, or reports false
// having left r for the SDK (its body restored).
func (w *Worker) serveFast(rw http.ResponseWriter, r *http.Request) bool {
	version, ok := w.fastHeaders(r)
	if !ok {
		return false
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		// The SDK reads it again and answers the same error.
		r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), errReader{err}))
		return false
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	fr, ok := parseFast(body, version, r.Header)
	if !ok {
		return false
	}
	t, ok := w.fast[fr.name]
	if !ok {
		return false
	}
	args, ok := applySchema(fr.args, t.in)
	if !ok {
		return false // the SDK words the error
	}
	c := callerFrom(r.Header)
	out, callErr, ok := t.call(r.Context(), c, args)
	if !ok {
		return false
	}
	w.fastServed.Add(1)
	var res fastResult
	var resp *jsonrpc.Response
	if callErr != nil {
		res.Content = []fastContent{{Type: "text", Text: callErr.Error()}}
		res.IsError = true
	} else if structured, err := encodeOutput(out, t.out); err != nil {
		resp = &jsonrpc.Response{ID: fr.id, Error: &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: err.Error()}}
	} else {
		res.StructuredContent = structured
		text, ok := toolText(out)
		if !ok {
			text = string(structured)
		}
		res.Content = []fastContent{{Type: "text", Text: text}}
	}
	if resp == nil {
		if fr.stateless {
			res.Meta = map[string]any{metaServerInfo: w.impl}
			res.ResultType = "complete"
		}
		b, err := json.Marshal(res)
		if err != nil {
			resp = &jsonrpc.Response{ID: fr.id, Error: &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: err.Error()}}
		} else {
			resp = &jsonrpc.Response{ID: fr.id, Result: json.RawMessage(b)}
		}
	}
	data, err := jsonrpc.EncodeMessage(resp)
	if err != nil {
		w.log.Error("MCP fast path: encoding the response", "err", err)
		http.Error(rw, "internal error", http.StatusInternalServerError)
		return true
	}
	h := rw.Header()
	h.Set("Cache-Control", "no-cache, no-transform")
	h.Set("Content-Type", "application/json")
	rw.WriteHeader(http.StatusOK)
	_, _ = rw.Write(data)
	return true
}

// encodeOutput is the SDK's output handling: the output's JSON, decoded,
// defaults applied, validated and encoded again (keys sorted).
func encodeOutput(out any, r *jsonschema.Resolved) (json.RawMessage, error) {
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("marshaling output: %w", err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("validating tool output: %w", err)
	}
	if _, ok := v.(map[string]any); ok {
		if err := r.ApplyDefaults(&v); err != nil {
			return nil, fmt.Errorf("validating tool output: %w", err)
		}
	}
	if err := r.Validate(&v); err != nil {
		return nil, fmt.Errorf("validating tool output: %w", err)
	}
	return json.Marshal(v)
}
