package controlplane

// TestingKnobs are the control plane replica's test hooks. The zero
// value is production.
type TestingKnobs struct {
	// NoController runs the API without a controller (workflows wait).
	NoController bool
}
