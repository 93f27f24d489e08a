package provider

import (
	"context"
	"fmt"
	"regexp"

	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"

	"github.com/cellplane/cellplane/internal/ids"
)

// immutable is a plan modifier that refuses, at plan time, a change of an
// attribute that cannot change in place, instead of planning a replace:
// for a tenant a replace would delete its data. why says what to do
// instead.
func immutable(why string) planmodifier.String { return immutableString{why: why} }

type immutableString struct{ why string }

func (m immutableString) Description(context.Context) string {
	return "cannot change after create; a change is refused at plan time (never a replace)"
}

func (m immutableString) MarkdownDescription(ctx context.Context) string { return m.Description(ctx) }

func (m immutableString) PlanModifyString(_ context.Context, req planmodifier.StringRequest, resp *planmodifier.StringResponse) {
	// Create (no state), destroy (no plan) and unknown values pass.
	if req.State.Raw.IsNull() || req.Plan.Raw.IsNull() || req.PlanValue.IsUnknown() || req.StateValue.IsNull() {
		return
	}
	if req.PlanValue.Equal(req.StateValue) {
		return
	}
	resp.Diagnostics.AddAttributeError(req.Path, "Cannot change an immutable attribute",
		fmt.Sprintf("%s cannot change from %s to %s: %s", req.Path, req.StateValue, req.PlanValue, m.why))
}

// idValidator checks an id by the platform's one rule (internal/ids), the
// same check the control plane makes, at plan time.
type idValidator struct{}

func (idValidator) Description(context.Context) string {
	return fmt.Sprintf("an id: 1 to %d of A-Z a-z 0-9 . _ -", ids.MaxLen)
}

func (v idValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (idValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if err := ids.Check(req.Path.String(), req.ConfigValue.ValueString(), ids.MaxLen); err != nil {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid id", err.Error())
	}
}

// dsIDValidator is idValidator for data sources (the same interface).
type dsIDValidator = idValidator

// maxLen checks a string's length in bytes.
type maxLen int

func (m maxLen) Description(context.Context) string { return fmt.Sprintf("at most %d bytes", int(m)) }

func (m maxLen) MarkdownDescription(ctx context.Context) string { return m.Description(ctx) }

func (m maxLen) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if n := len(req.ConfigValue.ValueString()); n > int(m) {
		resp.Diagnostics.AddAttributeError(req.Path, "Value too long", fmt.Sprintf("%s is %d bytes, at most %d", req.Path, n, int(m)))
	}
}

// apiKeyImportID is the import id of an API key: <tenant>/<key_id>.
var apiKeyImportID = regexp.MustCompile(`^([^/]+)/([^/]+)$`)

// parseAPIKeyImportID splits <tenant>/<key_id>, each an id.
func parseAPIKeyImportID(s string) (tenant, keyID string, err error) {
	m := apiKeyImportID.FindStringSubmatch(s)
	if m == nil {
		return "", "", fmt.Errorf("import id %q: want <tenant>/<key_id>", s)
	}
	if err := ids.Check("tenant", m[1], ids.MaxLen); err != nil {
		return "", "", err
	}
	if err := ids.Check("key_id", m[2], ids.MaxLen); err != nil {
		return "", "", err
	}
	return m[1], m[2], nil
}
