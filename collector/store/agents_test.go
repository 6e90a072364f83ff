package store_test

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anyscope/anyscope/collector/store"
)

func ptr[T any](v T) *T { return &v }

func TestAddAgent(t *testing.T) {
	t.Parallel()
	st, dsn := open(t)
	ctx := t.Context()
	a, token, err := st.AddAgent(ctx, store.AgentSpec{Name: "vp-fra.1", Latitude: ptr(50.1), Longitude: ptr(8.7), Provider: "example", Region: "eu-central"})
	if err != nil {
		t.Fatal(err)
	}
	if a.ID == 0 || a.Name != "vp-fra.1" || *a.Latitude != 50.1 || *a.Longitude != 8.7 || a.Provider != "example" || a.Region != "eu-central" || a.LastSeen != nil || a.LastSeq != 0 {
		t.Errorf("AddAgent = %+v", a)
	}
	if !strings.HasPrefix(token, "ast_") {
		t.Errorf("token %q does not start with ast_", token)
	}

	t.Run("only the hash is stored", func(t *testing.T) {
		parts := strings.SplitN(token, "_", 3)
		secret, err := base64.RawURLEncoding.DecodeString(parts[2])
		if err != nil || len(secret) != 32 {
			t.Fatalf("secret %q: %d bytes, %v; want 32 bytes of base64url", parts[2], len(secret), err)
		}
		var hash []byte
		var tokenID string
		sqlScan(t, dsn, `SELECT id::text, token_hash FROM agent_tokens`, &tokenID, &hash)
		if want := sha256.Sum256(secret); string(hash) != string(want[:]) || tokenID != parts[1] {
			t.Errorf("stored token %s %x, want id %s and SHA-256 of the secret", tokenID, hash, parts[1])
		}
	})

	t.Run("name taken", func(t *testing.T) {
		_, _, err := st.AddAgent(ctx, store.AgentSpec{Name: "vp-fra.1"})
		if !errors.Is(err, store.ErrExists) {
			t.Fatalf("err = %v, want ErrExists", err)
		}
	})

	for _, tc := range []struct {
		name string
		spec store.AgentSpec
		want string
	}{
		{"empty name", store.AgentSpec{}, "agent name"},
		{"bad name", store.AgentSpec{Name: "<img src=x onerror=alert(1)>"}, "agent name"},
		{"latitude only", store.AgentSpec{Name: "a", Latitude: ptr(1.0)}, "both latitude and longitude"},
		{"latitude out of range", store.AgentSpec{Name: "a", Latitude: ptr(91.0), Longitude: ptr(0.0)}, "latitude 91"},
		{"longitude NaN", store.AgentSpec{Name: "a", Latitude: ptr(0.0), Longitude: ptr(math.NaN())}, "longitude NaN"},
		{"control characters", store.AgentSpec{Name: "a", Region: "eu\x00"}, "region contains control characters"},
		{"long provider", store.AgentSpec{Name: "a", Provider: strings.Repeat("p", 256)}, "provider longer than 255"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := st.AddAgent(ctx, tc.spec)
			if !errors.Is(err, store.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalid saying %q", err, tc.want)
			}
		})
	}

	t.Run("list and look up", func(t *testing.T) {
		if _, _, err := st.AddAgent(ctx, store.AgentSpec{Name: "vp-ams"}); err != nil {
			t.Fatal(err)
		}
		as, err := st.Agents(ctx)
		if err != nil || len(as) != 2 || as[0].Name != "vp-ams" || as[1].Name != "vp-fra.1" {
			t.Fatalf("Agents = %+v, %v; want vp-ams, vp-fra.1", as, err)
		}
		if as[0].Latitude != nil {
			t.Errorf("vp-ams latitude = %v, want nil", *as[0].Latitude)
		}
		b, err := st.AgentByName(ctx, "vp-fra.1")
		if err != nil || b.ID != a.ID {
			t.Errorf("AgentByName = %+v, %v", b, err)
		}
		if _, err := st.AgentByName(ctx, "nobody"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("AgentByName(nobody) err = %v, want ErrNotFound", err)
		}
	})
}

func TestAuthenticate(t *testing.T) {
	t.Parallel()
	st, dsn := open(t)
	ctx := t.Context()
	a, token, err := st.AddAgent(ctx, store.AgentSpec{Name: "vp1"})
	if err != nil {
		t.Fatal(err)
	}
	_, other, err := st.AddAgent(ctx, store.AgentSpec{Name: "vp2"})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("valid", func(t *testing.T) {
		for range 3 { // the second and third come from the cache
			got, err := st.Authenticate(ctx, token)
			if err != nil || got.ID != a.ID || got.Name != "vp1" {
				t.Fatalf("Authenticate = %+v, %v; want vp1", got, err)
			}
		}
	})

	id, secret, _ := strings.Cut(strings.TrimPrefix(token, "ast_"), "_")
	otherID, otherSecret, _ := strings.Cut(strings.TrimPrefix(other, "ast_"), "_")
	flipped := []byte(secret)
	if flipped[5] == 'A' {
		flipped[5] = 'B'
	} else {
		flipped[5] = 'A'
	}
	bad := map[string]string{
		"wrong secret":           "ast_" + id + "_" + string(flipped),
		"another agent's secret": "ast_" + id + "_" + otherSecret,
		"wrong id":               "ast_" + otherID + "_" + secret,
		"unknown id":             "ast_999999_" + secret,
		"empty":                  "",
		"prefix only":            "ast_",
		"no secret":              "ast_" + id,
		"empty secret":           "ast_" + id + "_",
		"no prefix":              id + "_" + secret,
		"bearer included":        "Bearer " + token,
		"signed id":              "ast_+" + id + "_" + secret,
		"zero id":                "ast_0_" + secret,
		"letters in id":          "ast_1x_" + secret,
		"huge id":                "ast_99999999999999999999_" + secret,
		"padded secret":          token + "=",
		"short secret":           token[:len(token)-4],
		"long secret":            token + "AAAA",
		"not base64":             "ast_" + id + "_" + strings.Repeat("!", 43),
		"trailing space":         token + " ",
		"hostile":                "ast_1_<img src=x onerror=alert(1)>'; DROP TABLE agents; --",
	}
	for name, tok := range bad {
		t.Run(name, func(t *testing.T) {
			got, err := st.Authenticate(ctx, tok)
			if !errors.Is(err, store.ErrUnauthorized) {
				t.Fatalf("Authenticate(%q) = %+v, %v; want ErrUnauthorized", tok, got, err)
			}
			if err.Error() != store.ErrUnauthorized.Error() {
				t.Errorf("error %q says more than %q", err, store.ErrUnauthorized)
			}
		})
	}

	t.Run("rotation", func(t *testing.T) {
		st2, _ := open(t) // a separate database
		_, old, err := st2.AddAgent(ctx, store.AgentSpec{Name: "vp1"})
		if err != nil {
			t.Fatal(err)
		}
		fresh, err := st2.AddToken(ctx, "vp1", nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, tok := range []string{old, fresh} {
			if _, err := st2.Authenticate(ctx, tok); err != nil {
				t.Fatalf("during rotation, Authenticate(%s…) = %v, want both tokens valid", tok[:8], err)
			}
		}
		ts, err := st2.Tokens(ctx, "vp1")
		if err != nil || len(ts) != 2 {
			t.Fatalf("Tokens = %+v, %v; want two", ts, err)
		}
		if err := st2.RevokeToken(ctx, "vp1", ts[0].ID); err != nil {
			t.Fatal(err)
		}
		if _, err := st2.Authenticate(ctx, old); !errors.Is(err, store.ErrUnauthorized) {
			t.Errorf("old token after RevokeToken: %v, want ErrUnauthorized", err)
		}
		if _, err := st2.Authenticate(ctx, fresh); err != nil {
			t.Errorf("new token after revoking the old one: %v", err)
		}
		if err := st2.RevokeToken(ctx, "vp1", 424242); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("RevokeToken of an unknown id: %v, want ErrNotFound", err)
		}
		if _, err := st2.AddToken(ctx, "nobody", nil); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("AddToken for an unknown agent: %v, want ErrNotFound", err)
		}
		if _, err := st2.AddToken(ctx, "vp1", ptr(time.Now().Add(-time.Hour))); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("AddToken expiring in the past: %v, want ErrInvalid", err)
		}
	})

	t.Run("revoked here takes effect at once", func(t *testing.T) {
		tok, err := st.AddToken(ctx, "vp2", nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Authenticate(ctx, tok); err != nil {
			t.Fatal(err)
		}
		if err := st.RevokeTokens(ctx, "vp2"); err != nil {
			t.Fatal(err)
		}
		for _, tk := range []string{tok, other} {
			if _, err := st.Authenticate(ctx, tk); !errors.Is(err, store.ErrUnauthorized) {
				t.Errorf("revoked token: %v, want ErrUnauthorized", err)
			}
		}
		if _, err := st.Authenticate(ctx, token); err != nil {
			t.Errorf("vp1's token after revoking vp2's: %v", err)
		}
		if err := st.RevokeTokens(ctx, "nobody"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("RevokeTokens(nobody): %v, want ErrNotFound", err)
		}
	})

	t.Run("revoked elsewhere takes effect within the cache TTL", func(t *testing.T) {
		collector := openDSN(t, dsn)
		now := time.Now()
		var mu sync.Mutex
		store.SetClock(collector, func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
		tok, err := st.AddToken(ctx, "vp1", nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := collector.Authenticate(ctx, tok); err != nil {
			t.Fatal(err)
		}
		// Another process (the CLI) revokes it.
		if err := openDSN(t, dsn).RevokeTokens(ctx, "vp1"); err != nil {
			t.Fatal(err)
		}
		if _, err := collector.Authenticate(ctx, tok); err != nil {
			t.Errorf("within the TTL the cached token still works, got %v", err)
		}
		mu.Lock()
		now = now.Add(store.TokenCacheTTL)
		mu.Unlock()
		if _, err := collector.Authenticate(ctx, tok); !errors.Is(err, store.ErrUnauthorized) {
			t.Errorf("after the TTL: %v, want ErrUnauthorized", err)
		}
	})

	t.Run("expired", func(t *testing.T) {
		st3, dsn3 := open(t)
		if _, _, err := st3.AddAgent(ctx, store.AgentSpec{Name: "vp1"}); err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		var mu sync.Mutex
		store.SetClock(st3, func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
		tok, err := st3.AddToken(ctx, "vp1", ptr(now.Add(time.Second)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st3.Authenticate(ctx, tok); err != nil {
			t.Fatalf("before expiry: %v", err)
		}
		mu.Lock()
		now = now.Add(2 * time.Second) // still within the cache TTL
		mu.Unlock()
		if _, err := st3.Authenticate(ctx, tok); !errors.Is(err, store.ErrUnauthorized) {
			t.Errorf("after expiry, from the cache: %v, want ErrUnauthorized", err)
		}
		// Expired according to the database, for a store that never saw it.
		idPart := strings.SplitN(tok, "_", 3)[1]
		sql(t, dsn3, fmt.Sprintf(`UPDATE agent_tokens SET expires_at = now() - interval '1 minute' WHERE id = %s`, idPart)).Close()
		if _, err := openDSN(t, dsn3).Authenticate(ctx, tok); !errors.Is(err, store.ErrUnauthorized) {
			t.Errorf("expired in the database: %v, want ErrUnauthorized", err)
		}
	})
}
