package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/anyscope/anyscope/agent/deploy"
	"github.com/anyscope/anyscope/collector/pgcluster/pgtest"
	"github.com/anyscope/anyscope/collector/store"
)

// cli runs the anyscope binary on the database dsn (given as ANYSCOPE_DB,
// the way containers give it) with extra environment variables.
type cli struct {
	t   *testing.T
	dsn string
	env []string
}

// run runs anyscope with args and returns its standard output and error;
// ok is whether it exited 0.
func (c cli) run(args ...string) (stdout, stderr string, ok bool) {
	c.t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(append(os.Environ(), "ANYSCOPE_DB="+c.dsn), c.env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		c.t.Fatalf("anyscope %s: %v", strings.Join(args, " "), err)
	}
	return o.String(), e.String(), err == nil
}

// must runs anyscope and fails the test unless it exits 0.
func (c cli) must(args ...string) string {
	c.t.Helper()
	out, errOut, ok := c.run(args...)
	if !ok {
		c.t.Fatalf("anyscope %s failed:\n%s", strings.Join(args, " "), errOut)
	}
	return out
}

var tokenRE = regexp.MustCompile(`^ast_([0-9]+)_[A-Za-z0-9_-]{43}$`)

// tokenID returns the id in a token.
func tokenID(t *testing.T, token string) string {
	t.Helper()
	m := tokenRE.FindStringSubmatch(token)
	if m == nil {
		t.Fatalf("%q is not a token", token)
	}
	return m[1]
}

// tokenStates parses `agents tokens`: id → STATE.
func tokenStates(t *testing.T, table string) map[string]string {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(table))
	states := map[string]string{}
	for n := 0; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		if n == 0 {
			if strings.Join(f, " ") != "ID CREATED EXPIRES REVOKED STATE" {
				t.Fatalf("header %q", sc.Text())
			}
			continue
		}
		if len(f) != 5 {
			t.Fatalf("row %q: want 5 columns", sc.Text())
		}
		states[f[0]] = f[4]
	}
	return states
}

// authenticates reports whether the collector's store accepts token. Each
// call opens its own store, so no cached answer hides a revocation.
func authenticates(t *testing.T, ctx context.Context, dsn, token string) bool {
	t.Helper()
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, err = st.Authenticate(ctx, token)
	if err != nil && !errors.Is(err, store.ErrUnauthorized) {
		t.Fatal(err)
	}
	return err == nil
}

// TestAgentsTokenRotation rotates a token the way the guide says: issue a
// second one, both work during the overlap, revoke the old one and only the
// new one works; then revoke all.
func TestAgentsTokenRotation(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dsn := pgtest.DB(t)
	// ANYSCOPE_TOKEN holding a secret must not become --token.
	c := cli{t: t, dsn: dsn, env: []string{"ANYSCOPE_TOKEN=ast_1_not-an-id"}}

	old := strings.TrimSpace(c.must("agents", "add", "rot-vp1", "--lat", "52.37", "--lon", "4.90"))
	oldID := tokenID(t, old)
	fresh := strings.TrimSpace(c.must("agents", "token", "rot-vp1"))
	freshID := tokenID(t, fresh)
	c.must("agents", "add", "other-vp1") // its tokens are not listed nor revoked

	if !authenticates(t, ctx, dsn, old) || !authenticates(t, ctx, dsn, fresh) {
		t.Fatal("during the overlap both tokens must authenticate")
	}
	if got := tokenStates(t, c.must("agents", "tokens", "rot-vp1")); len(got) != 2 || got[oldID] != "valid" || got[freshID] != "valid" {
		t.Fatalf("tokens = %v, want %s and %s valid", got, oldID, freshID)
	}

	c.must("agents", "revoke", "rot-vp1", "--token", oldID)
	if authenticates(t, ctx, dsn, old) {
		t.Error("the revoked token still authenticates")
	}
	if !authenticates(t, ctx, dsn, fresh) {
		t.Error("the new token no longer authenticates after the old one was revoked")
	}
	if got := tokenStates(t, c.must("agents", "tokens", "rot-vp1")); got[oldID] != "revoked" || got[freshID] != "valid" {
		t.Errorf("tokens = %v, want %s revoked and %s valid", got, oldID, freshID)
	}

	t.Run("unknown token", func(t *testing.T) {
		_, errOut, ok := c.run("agents", "revoke", "rot-vp1", "--token", "999999")
		if ok || !strings.Contains(errOut, "agent rot-vp1 has no token 999999") {
			t.Errorf("revoking an unknown token: ok %v, %s", ok, errOut)
		}
		// Another agent's token is not this agent's to revoke.
		other := tokenStates(t, c.must("agents", "tokens", "other-vp1"))
		for id := range other {
			if _, errOut, ok := c.run("agents", "revoke", "rot-vp1", "--token", id); ok {
				t.Errorf("revoked other-vp1's token %s as rot-vp1's", id)
			} else if !strings.Contains(errOut, "has no token") {
				t.Errorf("revoking another agent's token: %s", errOut)
			}
		}
	})

	c.must("agents", "revoke", "rot-vp1")
	if authenticates(t, ctx, dsn, fresh) {
		t.Error("a token still authenticates after revoking all of them")
	}
	for id, state := range tokenStates(t, c.must("agents", "tokens", "other-vp1")) {
		if state != "valid" {
			t.Errorf("other-vp1's token %s is %s after revoking rot-vp1's", id, state)
		}
	}
	if _, errOut, ok := c.run("agents", "tokens", "no-such-vp"); ok || !strings.Contains(errOut, "not found") {
		t.Errorf("tokens of an unknown agent: ok %v, %s", ok, errOut)
	}
}

// TestAgentsCloudInit registers agents with --cloud-init and checks the
// user data carries a working token and is never written when a setting
// is wrong (the agent is then not registered either).
func TestAgentsCloudInit(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dsn := pgtest.DB(t)
	c := cli{t: t, dsn: dsn}
	dir := t.TempDir()
	sum := strings.Repeat("0123456789abcdef", 4)
	deployFlags := []string{
		"--collector", "https://collector.example.org:8740",
		"--binary-url", "https://downloads.example.org/anyscope-linux-amd64",
		"--binary-sha256", sum, "--allow", "192.0.2.0/24", "--allow", "2001:db8::/32", "--ping-group",
	}

	// userData reads a user data file and returns the token and agent.yaml in it.
	userData := func(t *testing.T, path string) (token, agentYAML string) {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600 (it holds the token)", path, fi.Mode().Perm())
		}
		b, _ := os.ReadFile(path)
		var cc struct {
			WriteFiles []struct{ Path, Content string } `yaml:"write_files"`
		}
		if err := yaml.Unmarshal(b, &cc); err != nil {
			t.Fatal(err)
		}
		for _, f := range cc.WriteFiles {
			switch f.Path {
			case deploy.TokenPath:
				token = f.Content
			case deploy.ConfigPath:
				agentYAML = f.Content
			}
		}
		return token, agentYAML
	}

	first := filepath.Join(dir, "ams-vp1.user-data")
	out := c.must(append([]string{"agents", "add", "ams-vp1", "--lat", "52.37", "--lon", "4.9", "--region", "eu-west-1", "--cloud-init", first}, deployFlags...)...)
	if out != "" {
		t.Errorf("with --cloud-init the token must not be printed; stdout: %q", out)
	}
	token, conf := userData(t, first)
	tokenID(t, token)
	if !authenticates(t, ctx, dsn, token) {
		t.Error("the token in the user data does not authenticate")
	}
	if !strings.Contains(conf, `location: {lat: 52.37, lon: 4.9, region: "eu-west-1"}`) {
		t.Errorf("agent.yaml lacks the location given:\n%s", conf)
	}

	t.Run("token for a rebuilt VM", func(t *testing.T) {
		second := filepath.Join(dir, "ams-vp1.rebuilt.user-data")
		c.must(append([]string{"agents", "token", "ams-vp1", "--cloud-init", second}, deployFlags...)...)
		token2, conf2 := userData(t, second)
		if token2 == token || !authenticates(t, ctx, dsn, token2) {
			t.Error("the rebuilt VM's user data does not carry a new working token")
		}
		if !strings.Contains(conf2, `location: {lat: 52.37, lon: 4.9, region: "eu-west-1"}`) {
			t.Errorf("agent.yaml lacks the registered location:\n%s", conf2)
		}
	})

	for i, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"bad checksum", []string{"--cloud-init", filepath.Join(dir, "x"), "--collector", "https://collector.example.org", "--binary-url", "https://downloads.example.org/a", "--binary-sha256", "abc", "--allow", "192.0.2.0/24"}, `binary SHA-256 "abc"`},
		{"no allow", []string{"--cloud-init", filepath.Join(dir, "x"), "--collector", "https://collector.example.org", "--binary-url", "https://downloads.example.org/a", "--binary-sha256", sum}, "at least one prefix"},
		{"no collector", []string{"--cloud-init", filepath.Join(dir, "x"), "--binary-url", "https://downloads.example.org/a", "--binary-sha256", sum, "--allow", "192.0.2.0/24"}, "--cloud-init needs --collector"},
		{"unwritable", append([]string{"--cloud-init", filepath.Join(dir, "no", "such", "dir", "x")}, deployFlags...), "no such file or directory"},
		{"flags without --cloud-init", []string{"--allow", "192.0.2.0/24"}, "go with --cloud-init FILE"},
		{"missing CA file", append([]string{"--cloud-init", filepath.Join(dir, "x"), "--ca-file", filepath.Join(dir, "none.pem")}, deployFlags...), "--ca-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "bad-" + strconv.Itoa(i)
			_, errOut, ok := c.run(append([]string{"agents", "add", name}, tc.args...)...)
			if ok || !strings.Contains(errOut, tc.want) {
				t.Errorf("ok %v, stderr %s; want a failure saying %q", ok, errOut, tc.want)
			}
			st, err := store.Open(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if _, err := st.AgentByName(ctx, name); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("agent %s registered although its user data was refused (%v)", name, err)
			}
			if _, err := os.Stat(filepath.Join(dir, "x")); err == nil {
				t.Error("user data written although refused")
			}
		})
	}
}

func TestWriteTokens(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 3, 2, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { v := now.Add(d); return &v }
	var b bytes.Buffer
	err := writeTokens(&b, []store.Token{
		{ID: 1, CreatedAt: now.Add(-48 * time.Hour), RevokedAt: at(-time.Hour)},
		{ID: 2, CreatedAt: now.Add(-24 * time.Hour), ExpiresAt: at(-time.Second)},
		{ID: 3, CreatedAt: now.Add(-time.Hour), ExpiresAt: at(0)},
		{ID: 4, CreatedAt: now.Add(-time.Hour), ExpiresAt: at(time.Hour)},
		{ID: 5, CreatedAt: now, ExpiresAt: at(-time.Hour), RevokedAt: at(-2 * time.Hour)},
	}, now)
	if err != nil {
		t.Fatal(err)
	}
	want := `ID  CREATED               EXPIRES               REVOKED               STATE
1   2025-02-28T12:00:00Z  never                 2025-03-02T11:00:00Z  revoked
2   2025-03-01T12:00:00Z  2025-03-02T11:59:59Z  -                     expired
3   2025-03-02T11:00:00Z  2025-03-02T12:00:00Z  -                     expired
4   2025-03-02T11:00:00Z  2025-03-02T13:00:00Z  -                     valid
5   2025-03-02T12:00:00Z  2025-03-02T11:00:00Z  2025-03-02T10:00:00Z  revoked
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}
