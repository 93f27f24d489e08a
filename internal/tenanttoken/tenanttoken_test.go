package tenanttoken

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
)

func testKey(t testing.TB) (SigningKey, Keys) {
	t.Helper()
	k, pub, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k, Keys{k.ID: pub}
}

var claims = Claims{Tenant: "acme", Cell: "c1", Epoch: 3, Audience: "prod"}

func TestMintVerify(t *testing.T) {
	cfg := DefaultConfig()
	k, keys := testKey(t)
	now := time.Unix(1_800_000_000, 0)
	tok, exp, err := Mint(cfg, k, claims, now)
	if err != nil {
		t.Fatal(err)
	}
	if !exp.Equal(now.Add(cfg.TTL)) {
		t.Fatalf("expiry %v, want %v", exp, now.Add(cfg.TTL))
	}
	got, err := Verify(cfg, keys, tok, "prod", now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	want := claims
	want.IssuedAt, want.Expiry = now.Unix(), exp.Unix()
	if got != want {
		t.Fatalf("claims %+v, want %+v", got, want)
	}
	// The principal travels when there is one.
	withP := claims
	withP.Principal = "key:support-bot"
	tok, _, err = Mint(cfg, k, withP, now)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Verify(cfg, keys, tok, "prod", now); err != nil || got.Principal != "key:support-bot" {
		t.Fatalf("with a principal: %+v, %v", got, err)
	}
	withP.Principal = "jwt:\x01"
	if _, _, err := Mint(cfg, k, withP, now); err == nil {
		t.Fatal("minted a principal that is not printable ASCII")
	}
}

// sign builds a token with arbitrary claims JSON (for refusals Mint
// would never produce).
func sign(k SigningKey, payload []byte) string {
	signed := Version + "." + k.ID + "." + enc.EncodeToString(payload)
	return signed + "." + enc.EncodeToString(ed25519.Sign(k.Private, []byte(signed)))
}

func TestVerifyRefusals(t *testing.T) {
	cfg := DefaultConfig()
	k, keys := testKey(t)
	other, _ := testKey(t)
	now := time.Unix(1_800_000_000, 0)
	good, _, err := Mint(cfg, k, claims, now)
	if err != nil {
		t.Fatal(err)
	}
	unknown, _, _ := Mint(cfg, other, claims, now)
	// other's signature under k's key id.
	forgedParts := strings.Split(unknown, ".")
	forgedParts[1] = k.ID
	forged := strings.Join(forgedParts, ".")
	mutated := []byte(good)
	mutated[len(Version)+len(k.ID)+3] ^= 1 // a byte of the claims
	payload := func(m map[string]any) []byte { b, _ := json.Marshal(m); return b }
	base := map[string]any{"t": "acme", "c": "c1", "e": 3, "iat": now.Unix(), "exp": now.Add(time.Minute).Unix(), "aud": "prod"}
	with := func(k string, v any) map[string]any {
		m := map[string]any{}
		for kk, vv := range base {
			m[kk] = vv
		}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	tests := []struct {
		name  string
		token string
		aud   string
		now   time.Time
		want  error
	}{
		{"empty", "", "prod", now, ErrMalformed},
		{"too long", strings.Repeat("a", cfg.MaxTokenBytes+1), "prod", now, ErrMalformed},
		{"other version", "cpt2" + good[len(Version):], "prod", now, ErrMalformed},
		{"three parts", good[:strings.LastIndex(good, ".")], "prod", now, ErrMalformed},
		{"unknown key", unknown, "prod", now, ErrUnknownKey},
		{"signature by another key", forged, "prod", now, ErrSignature},
		{"claims changed", string(mutated), "prod", now, ErrSignature},
		{"other cluster", good, "staging", now, ErrAudience},
		{"expired", good, "prod", now.Add(cfg.TTL + cfg.ClockSkew), ErrExpired},
		{"not yet valid", good, "prod", now.Add(-cfg.ClockSkew - 2*time.Second), ErrNotYetValid},
		{"unknown claim", sign(k, payload(with("x", 1))), "prod", now, ErrMalformed},
		{"missing claim", sign(k, payload(with("c", nil))), "prod", now, ErrMalformed},
		{"bad tenant id", sign(k, payload(with("t", "a/b"))), "prod", now, ErrMalformed},
		{"epoch 0", sign(k, payload(with("e", 0))), "prod", now, ErrMalformed},
		{"lifetime too long", sign(k, payload(with("exp", now.Add(cfg.MaxTTL+time.Minute).Unix()))), "prod", now, ErrLifetime},
		{"expiry before issue", sign(k, payload(with("exp", now.Add(-time.Minute).Unix()))), "prod", now, ErrLifetime},
		{"not JSON", sign(k, []byte("nope")), "prod", now, ErrMalformed},
		{"empty principal", sign(k, payload(with("p", ""))), "prod", now, ErrMalformed},
		{"principal not a string", sign(k, payload(with("p", 7))), "prod", now, ErrMalformed},
		{"principal too long", sign(k, payload(with("p", strings.Repeat("p", MaxPrincipalLen+1)))), "prod", now, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Verify(cfg, keys, tt.token, tt.aud, tt.now)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
			if !errors.Is(err, cperr.ErrUnauthenticated) {
				t.Fatalf("err %v is not UNAUTHENTICATED", err)
			}
			var te *Error
			if !errors.As(err, &te) || te.Kind == "" {
				t.Fatalf("err %v is not an *Error with a kind", err)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []func(*Config){
		func(c *Config) { c.MinTTL = 0 },
		func(c *Config) { c.MaxTTL = c.MinTTL - 1 },
		func(c *Config) { c.TTL = c.MaxTTL + 1 },
		func(c *Config) { c.ClockSkew = -1 },
		func(c *Config) { c.MaxTokenBytes = 10 },
	}
	for i, f := range bad {
		c := DefaultConfig()
		f(&c)
		if c.Validate() == nil {
			t.Errorf("case %d: Validate accepted %+v", i, c)
		}
	}
}

func TestMintRefusesBadClaims(t *testing.T) {
	k, _ := testKey(t)
	for _, c := range []Claims{
		{Cell: "c1", Epoch: 1, Audience: "prod"},
		{Tenant: "acme", Cell: "c1", Audience: "prod"},
		{Tenant: "acme", Cell: "c/1", Epoch: 1, Audience: "prod"},
	} {
		if _, _, err := Mint(DefaultConfig(), k, c, time.Now()); err == nil {
			t.Errorf("Mint accepted %+v", c)
		}
	}
	if _, _, err := Mint(DefaultConfig(), SigningKey{ID: "a.b", Private: k.Private}, claims, time.Now()); err == nil {
		t.Error("Mint accepted a key id with a dot")
	}
}

// FuzzVerify: Verify never panics, refuses with an *Error, and accepts
// only tokens whose claims it can return intact.
func FuzzVerify(f *testing.F) {
	cfg := DefaultConfig()
	k, keys := testKey(f)
	now := time.Unix(1_800_000_000, 0)
	good, _, _ := Mint(cfg, k, claims, now)
	f.Add(good)
	f.Add("")
	f.Add("cpt1...")
	f.Add("cpt1." + k.ID + ".e30.AAAA")
	f.Add(good + "A")
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := Verify(cfg, keys, tok, "prod", now)
		if err != nil {
			var te *Error
			if !errors.As(err, &te) || !errors.Is(err, cperr.ErrUnauthenticated) {
				t.Fatalf("error %v is not a token refusal", err)
			}
			return
		}
		if c.check() != nil || c.Audience != "prod" {
			t.Fatalf("accepted invalid claims %+v", c)
		}
	})
}
