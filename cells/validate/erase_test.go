package validate

import (
	"strings"
	"testing"

	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
)

func TestEraseSubject(t *testing.T) {
	lim := DefaultLimits()
	for _, tc := range []struct {
		name   string
		req    *cellv1.EraseSubjectRequest
		fields []string
	}{
		{"principal", &cellv1.EraseSubjectRequest{Tenant: "t", Principal: "alice@example.com"}, nil},
		{"context", &cellv1.EraseSubjectRequest{Tenant: "t", ContextId: "c-1", RequestId: "r"}, nil},
		{"neither", &cellv1.EraseSubjectRequest{Tenant: "t"}, []string{"principal"}},
		{"both", &cellv1.EraseSubjectRequest{Tenant: "t", Principal: "p", ContextId: "c"}, []string{"context_id"}},
		{"bad context", &cellv1.EraseSubjectRequest{Tenant: "t", ContextId: "a/b"}, []string{"context_id"}},
		{"long principal", &cellv1.EraseSubjectRequest{Tenant: "t", Principal: strings.Repeat("p", 513)}, []string{"principal"}},
		{"NUL principal", &cellv1.EraseSubjectRequest{Tenant: "t", Principal: "a\x00b"}, []string{"principal"}},
		{"no tenant", &cellv1.EraseSubjectRequest{Principal: "p"}, []string{"tenant"}},
	} {
		t.Run(tc.name, func(t *testing.T) { checkFields(t, EraseSubject(lim, tc.req), tc.fields...) })
	}
}

func TestListAudit(t *testing.T) {
	lim := DefaultLimits()
	checkFields(t, ListAudit(lim, &cellv1.ListAuditRequest{Tenant: "t", Limit: 1000, Principal: "p"}))
	checkFields(t, ListAudit(lim, &cellv1.ListAuditRequest{Tenant: "t", Limit: 1001, SinceUnixNano: -1}), "limit", "since_unix_nano")
}

func TestReplicatedErase(t *testing.T) {
	lim := DefaultLimits()
	cmd := func(op *cellv1.EraseSubjectOp) *cellv1.Command {
		return &cellv1.Command{Tenant: "t", Op: &cellv1.Command_EraseSubject{EraseSubject: op}}
	}
	checkFields(t, ReplicatedCommand(lim, cmd(&cellv1.EraseSubjectOp{Kind: cellv1.EraseSubjectOp_KIND_CONTEXT, SubjectSha256: make([]byte, 32)})))
	checkFields(t, ReplicatedCommand(lim, cmd(&cellv1.EraseSubjectOp{ErasedOp: "put_memory", ErasedAtTseq: 4})))
	checkFields(t, ReplicatedCommand(lim, cmd(&cellv1.EraseSubjectOp{SubjectSha256: []byte("x"), ErasedAtTseq: 1})),
		"command.erase_subject.kind", "command.erase_subject.subject_sha256", "command.erase_subject.erased_at_tseq")
	checkFields(t, ReplicatedCommand(lim, cmd(&cellv1.EraseSubjectOp{ErasedOp: "Bad!", Kind: cellv1.EraseSubjectOp_KIND_PRINCIPAL})),
		"command.erase_subject.erased_op", "command.erase_subject.erased_at_tseq", "command.erase_subject.kind")
}
