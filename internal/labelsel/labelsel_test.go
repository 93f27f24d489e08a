package labelsel

import (
	"testing"

	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

func req(key string, op contextv1.LabelOperator, values ...string) *contextv1.LabelRequirement {
	return &contextv1.LabelRequirement{Key: key, Operator: op, Values: values}
}

func TestMatches(t *testing.T) {
	m := map[string]string{"env": "prod", "team": "a"}
	tests := []struct {
		name string
		reqs []*contextv1.LabelRequirement
		want bool
	}{
		{"empty", nil, true},
		{"equals", []*contextv1.LabelRequirement{req("env", contextv1.LabelOperator_LABEL_OPERATOR_EQUALS, "prod")}, true},
		{"equals other", []*contextv1.LabelRequirement{req("env", contextv1.LabelOperator_LABEL_OPERATOR_EQUALS, "dev")}, false},
		{"equals missing", []*contextv1.LabelRequirement{req("x", contextv1.LabelOperator_LABEL_OPERATOR_EQUALS, "")}, false},
		{"not equals missing", []*contextv1.LabelRequirement{req("x", contextv1.LabelOperator_LABEL_OPERATOR_NOT_EQUALS, "1")}, true},
		{"not equals same", []*contextv1.LabelRequirement{req("env", contextv1.LabelOperator_LABEL_OPERATOR_NOT_EQUALS, "prod")}, false},
		{"in", []*contextv1.LabelRequirement{req("team", contextv1.LabelOperator_LABEL_OPERATOR_IN, "b", "a")}, true},
		{"not in", []*contextv1.LabelRequirement{req("team", contextv1.LabelOperator_LABEL_OPERATOR_NOT_IN, "b", "a")}, false},
		{"exists", []*contextv1.LabelRequirement{req("team", contextv1.LabelOperator_LABEL_OPERATOR_EXISTS)}, true},
		{"not exists", []*contextv1.LabelRequirement{req("team", contextv1.LabelOperator_LABEL_OPERATOR_NOT_EXISTS)}, false},
		{"conjunction", []*contextv1.LabelRequirement{
			req("env", contextv1.LabelOperator_LABEL_OPERATOR_EQUALS, "prod"),
			req("team", contextv1.LabelOperator_LABEL_OPERATOR_EQUALS, "b"),
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Compile(&contextv1.LabelSelector{Requirements: tt.reqs})
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Matches(m); got != tt.want {
				t.Fatalf("Matches = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCompileRefuses(t *testing.T) {
	bad := []*contextv1.LabelRequirement{
		req("", contextv1.LabelOperator_LABEL_OPERATOR_EXISTS),
		req("k", contextv1.LabelOperator_LABEL_OPERATOR_UNSPECIFIED),
		req("k", contextv1.LabelOperator_LABEL_OPERATOR_EQUALS),
		req("k", contextv1.LabelOperator_LABEL_OPERATOR_EQUALS, "a", "b"),
		req("k", contextv1.LabelOperator_LABEL_OPERATOR_IN),
		req("k", contextv1.LabelOperator_LABEL_OPERATOR_EXISTS, "a"),
		req("k", contextv1.LabelOperator(99), "a"),
	}
	for i, r := range bad {
		if _, err := Compile(&contextv1.LabelSelector{Requirements: []*contextv1.LabelRequirement{r}}); err == nil {
			t.Errorf("case %d: Compile accepted %v", i, r)
		}
	}
}

func FuzzCompile(f *testing.F) {
	f.Add("k", int32(1), "v", "w")
	f.Fuzz(func(t *testing.T, key string, op int32, v1, v2 string) {
		sel := &contextv1.LabelSelector{Requirements: []*contextv1.LabelRequirement{
			{Key: key, Operator: contextv1.LabelOperator(op), Values: []string{v1, v2}[:op%3&1+1]},
		}}
		s, err := Compile(sel)
		if err != nil {
			return
		}
		_ = s.Matches(map[string]string{key: v1})
	})
}
