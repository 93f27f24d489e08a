package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"
)

// outputFormats are the values of -o.
var outputFormats = []string{"table", "json", "yaml"}

func validOutput(s string) bool {
	for _, f := range outputFormats {
		if s == f {
			return true
		}
	}
	return false
}

// print writes a response: as JSON or YAML (the message itself, for
// scripts) or, with -o table, with the table function (for people).
func (a *app) print(m proto.Message, table func(w io.Writer) error) error {
	switch a.opts.output {
	case "json", "yaml":
		b, err := marshalJSON(m)
		if err != nil {
			return err
		}
		if a.opts.output == "yaml" {
			if b, err = yaml.JSONToYAML(b); err != nil {
				return fmt.Errorf("convert to YAML: %w", err)
			}
		}
		_, err = a.std.Out.Write(b)
		return err
	default:
		return table(a.std.Out)
	}
}

// marshalJSON returns m in the protobuf JSON mapping, indented by two
// spaces and ending with a newline. protojson varies its whitespace on
// purpose, so the output is re-indented with encoding/json to be stable.
func marshalJSON(m proto.Message) ([]byte, error) {
	raw, err := protojson.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode JSON: %w", err)
	}
	var compact, out bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return nil, fmt.Errorf("encode JSON: %w", err)
	}
	if err := json.Indent(&out, compact.Bytes(), "", "  "); err != nil {
		return nil, fmt.Errorf("encode JSON: %w", err)
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// table writes tab-separated rows aligned in columns.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// fields writes "Name: value" lines aligned on the values.
type fields struct {
	tw *tabwriter.Writer
}

func newFields(w io.Writer) *fields {
	return &fields{tw: tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)}
}

func (f *fields) add(name, value string) {
	if value == "" {
		value = "-"
	}
	fmt.Fprintf(f.tw, "%s:\t%s\n", name, value)
}

func (f *fields) flush() error { return f.tw.Flush() }

// enumName turns CELL_STATE_ACTIVE into ACTIVE (trimming prefix), and the
// UNSPECIFIED value into "".
func enumName(full, prefix string) string {
	s := strings.TrimPrefix(full, prefix)
	if s == "UNSPECIFIED" {
		return ""
	}
	return s
}

// timeString formats a timestamp as RFC 3339 in UTC ("" when unset).
func timeString(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}

// limit formats a bound where 0 means none.
func limit(n uint64, zero string) string {
	if n == 0 {
		return zero
	}
	return strconv.FormatUint(n, 10)
}
