package main

import (
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
	"github.com/jackc/pgx/v5/pgconn"
	"go.yaml.in/yaml/v3"

	"github.com/anyscope/anyscope/agent"
	"github.com/anyscope/anyscope/agent/deploy"
	"github.com/anyscope/anyscope/collector/targets"
)

// These tests keep the deployment files (Dockerfile, docker-compose.yml,
// collector/deploy, agent/deploy and their guides) true to the CLI: no
// Docker engine runs here, so every command line in them is parsed by the
// real command line parser instead, and every ANYSCOPE_* variable must be a
// flag of the command it is given to.

const repoRoot = "../.."

// parsed is a command line the real parser accepted.
type parsed struct {
	command string            // e.g. "agents add <name>"
	values  map[string]string // flag name → value as given or defaulted
	envs    map[string]bool   // environment variables the command reads
}

// parseCLI parses args (without the program name) with the parser main
// builds, with env as the only ANYSCOPE_* environment. Files named by
// arguments need not exist here (they live in containers and VMs).
func parseCLI(t *testing.T, args []string, env map[string]string) (parsed, error) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "ANYSCOPE_") && !strings.HasPrefix(k, "ANYSCOPE_TEST") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	anyString := kong.MapperFunc(func(ctx *kong.DecodeContext, target reflect.Value) error {
		var s string
		if err := ctx.Scan.PopValueInto("file", &s); err != nil {
			return err
		}
		target.SetString(s)
		return nil
	})
	var cli CLI
	opts := append(cliOptions(),
		kong.NamedMapper("existingfile", anyString), kong.NamedMapper("existingdir", anyString),
		kong.Writers(io.Discard, io.Discard),
		kong.Exit(func(int) { t.Fatalf("anyscope %s: the parser wanted to exit", strings.Join(args, " ")) }),
	)
	k, err := kong.New(&cli, opts...)
	if err != nil {
		t.Fatal(err)
	}
	kctx, err := k.Parse(args)
	if err != nil {
		return parsed{}, err
	}
	p := parsed{command: kctx.Command(), values: map[string]string{}, envs: map[string]bool{}}
	for _, f := range kctx.Flags() {
		if v := kctx.FlagValue(f); v != nil {
			p.values[f.Name] = fmt.Sprint(v)
		}
		for _, e := range f.Envs {
			p.envs[e] = true
		}
	}
	for _, a := range kctx.Selected().Positional {
		for _, e := range a.Tag.Envs {
			p.envs[e] = true
		}
	}
	return p, nil
}

// composeFile is the part of a compose file the tests read.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image       string                    `yaml:"image"`
	Build       string                    `yaml:"build"`
	Command     []string                  `yaml:"command"`
	Environment map[string]string         `yaml:"environment"`
	Healthcheck map[string]any            `yaml:"healthcheck"`
	DependsOn   map[string]map[string]any `yaml:"depends_on"`
	Profiles    []string                  `yaml:"profiles"`
	Volumes     []string                  `yaml:"volumes"`
	Ports       []string                  `yaml:"ports"`
	Restart     string                    `yaml:"restart"`
}

func readCompose(t *testing.T, path string) composeFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	if err := yaml.Unmarshal(b, &cf); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return cf
}

// interpolate resolves compose's ${VAR:?message} and ${VAR:-default} as
// compose would with VAR set to "x-VAR" (the first) or unset (the second).
var interpolation = regexp.MustCompile(`\$\{([A-Z_][A-Z0-9_]*)(?::([?-])([^}]*))?\}`)

func interpolate(s string) string {
	return interpolation.ReplaceAllStringFunc(s, func(m string) string {
		sub := interpolation.FindStringSubmatch(m)
		if sub[2] == "-" {
			return sub[3]
		}
		return "x-" + sub[1]
	})
}

// listenPorts returns the ports the command listens on, by flag.
func listenPorts(p parsed) map[string]string {
	ports := map[string]string{}
	for _, f := range []string{"listen", "health-listen", "metrics", "collector-listen"} {
		if v := p.values[f]; v != "" {
			if i := strings.LastIndex(v, ":"); i >= 0 {
				ports[f] = v[i+1:]
			}
		}
	}
	return ports
}

// checkHealthcheck checks a health check command (after the binary) runs
// `anyscope healthcheck` on a port the service listens on.
func checkHealthcheck(t *testing.T, where string, args []string, env map[string]string, service parsed) {
	t.Helper()
	hc, err := parseCLI(t, args, env)
	if err != nil {
		t.Errorf("%s: health check %q: %v", where, args, err)
		return
	}
	if hc.command != "healthcheck <url>" && hc.command != "healthcheck" { // the URL from the environment
		t.Errorf("%s: health check runs %q, want healthcheck", where, hc.command)
		return
	}
	raw := env["ANYSCOPE_HEALTHCHECK_URL"]
	if len(args) > 1 {
		raw = args[len(args)-1]
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Errorf("%s: health check URL %q: %v", where, raw, err)
		return
	}
	ports := listenPorts(service)
	if u.Hostname() != "127.0.0.1" || !slices.Contains(slices.Collect(mapValues(ports)), u.Port()) {
		t.Errorf("%s: health check asks %s, but the service (%s) listens on %v", where, raw, service.command, ports)
	}
	paths := map[string]string{"collector": "/readyz", "analyze": "/healthz", "agent": "/metrics", "web": "/healthz"}
	if want, ok := paths[service.command]; !ok || u.Path != want {
		t.Errorf("%s: health check path %s, want %s for %s", where, u.Path, want, service.command)
	}
}

func mapValues(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for _, v := range m {
			if !yield(v) {
				return
			}
		}
	}
}

// checkEnv checks every ANYSCOPE_* variable given to a command is one it reads.
func checkEnv(t *testing.T, where string, env map[string]string, p parsed) {
	t.Helper()
	for k := range env {
		if strings.HasPrefix(k, "ANYSCOPE_") && !p.envs[k] {
			t.Errorf("%s: %s is not a flag of anyscope %s", where, k, p.command)
		}
	}
}

func TestDockerCompose(t *testing.T) {
	cf := readCompose(t, filepath.Join(repoRoot, "docker-compose.yml"))
	for _, name := range []string{"postgres", "migrate", "collector", "analysis", "web", "agent"} {
		if _, ok := cf.Services[name]; !ok {
			t.Errorf("no service %s", name)
		}
	}
	wantDeps := map[string]map[string]string{
		"migrate":   {"postgres": "service_healthy"},
		"collector": {"migrate": "service_completed_successfully"},
		"analysis":  {"migrate": "service_completed_successfully"},
		"web":       {"migrate": "service_completed_successfully"},
		"agent":     {"collector": "service_healthy"},
	}
	wantCommands := map[string]string{"migrate": "migrate", "collector": "collector", "analysis": "analyze", "web": "web", "agent": "agent"}
	for name, svc := range cf.Services {
		t.Run(name, func(t *testing.T) {
			for dep, cond := range wantDeps[name] {
				if got := svc.DependsOn[dep]["condition"]; got != cond {
					t.Errorf("depends_on %s: condition %v, want %s", dep, got, cond)
				}
			}
			if len(svc.Healthcheck) == 0 {
				t.Error("no health check")
			}
			if name == "postgres" {
				return
			}
			if svc.Image != "anyscope:local" || svc.Build != "." {
				t.Errorf("image %q build %q, want the image built from the Dockerfile", svc.Image, svc.Build)
			}
			env := map[string]string{}
			for k, v := range svc.Environment {
				env[k] = interpolate(v)
			}
			p, err := parseCLI(t, svc.Command, env)
			if err != nil {
				t.Fatalf("command %q: %v", svc.Command, err)
			}
			if p.command != wantCommands[name] {
				t.Errorf("runs %q, want %s", p.command, wantCommands[name])
			}
			checkEnv(t, name, env, p)
			if name == "analysis" && p.values["every"] != "30s" {
				t.Errorf("analysis runs every %q, want 30s", p.values["every"])
			}
			if name == "migrate" {
				if svc.Healthcheck["disable"] != true || svc.Restart != "no" {
					t.Errorf("the one-shot migration: healthcheck %v, restart %q", svc.Healthcheck, svc.Restart)
				}
				return
			}
			test, _ := svc.Healthcheck["test"].([]any)
			var args []string
			for _, a := range test {
				args = append(args, interpolate(a.(string)))
			}
			if len(args) < 3 || args[0] != "CMD" || args[1] != "/usr/local/bin/anyscope" {
				t.Fatalf("health check %q: want [CMD /usr/local/bin/anyscope healthcheck …]", args)
			}
			checkHealthcheck(t, name, args[2:], env, p)
			if name == "agent" && !slices.Equal(svc.Profiles, []string{"agent"}) {
				t.Errorf("the agent's profiles = %v, want [agent]", svc.Profiles)
			}
		})
	}

	t.Run("password from PGPASSWORD", func(t *testing.T) {
		// The DSN is key=value without a password: pgx takes PGPASSWORD.
		env := cf.Services["collector"].Environment
		t.Setenv("PGPASSWORD", "x-secret")
		cfg, err := pgconn.ParseConfig(env["ANYSCOPE_DB"])
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Password != "x-secret" || cfg.Host != "postgres" || cfg.Database != "anyscope" {
			t.Errorf("DSN %q gives host %s, database %s, password %q", env["ANYSCOPE_DB"], cfg.Host, cfg.Database, cfg.Password)
		}
		if env["PGPASSWORD"] != cf.Services["postgres"].Environment["POSTGRES_PASSWORD"] {
			t.Error("the services' PGPASSWORD is not postgres' POSTGRES_PASSWORD")
		}
	})

	t.Run("mounted files", func(t *testing.T) {
		// The example targets and the agent's configuration the stack mounts load.
		if _, err := targets.LoadFile(filepath.Join(repoRoot, "collector/deploy/targets.example.yaml")); err != nil {
			t.Error(err)
		}
		b, err := os.ReadFile(filepath.Join(repoRoot, "agent/deploy/compose-agent.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		token := filepath.Join(dir, "token")
		os.WriteFile(token, []byte("ast_1_example\n"), 0o600)
		conf := strings.ReplaceAll(string(b), "/etc/anyscope/token", token)
		conf = strings.ReplaceAll(conf, "/var/lib/anyscope/spool", filepath.Join(dir, "spool"))
		os.WriteFile(filepath.Join(dir, "agent.yaml"), []byte(conf), 0o600)
		if _, err := agent.LoadConfig(filepath.Join(dir, "agent.yaml")); err != nil {
			t.Error(err)
		}
		var mounts []string
		for _, v := range cf.Services["agent"].Volumes {
			mounts = append(mounts, interpolate(v))
		}
		for _, m := range mounts {
			if src, _, _ := strings.Cut(m, ":"); strings.HasPrefix(src, "./") && src != "./vp1.token" {
				if _, err := os.Stat(filepath.Join(repoRoot, src)); err != nil {
					t.Errorf("agent mounts %s: %v", src, err)
				}
			}
		}
		for _, v := range cf.Services["collector"].Volumes {
			src, _, _ := strings.Cut(interpolate(v), ":")
			if _, err := os.Stat(filepath.Join(repoRoot, src)); err != nil {
				t.Errorf("collector mounts %s: %v", src, err)
			}
		}
	})

	t.Run("TLS override", func(t *testing.T) {
		tlsFile := readCompose(t, filepath.Join(repoRoot, "collector/deploy/compose.tls.yaml"))
		over := tlsFile.Services["collector"]
		base := cf.Services["collector"]
		env := map[string]string{}
		for k, v := range base.Environment {
			env[k] = interpolate(v)
		}
		for k, v := range over.Environment {
			env[k] = interpolate(v)
		}
		p, err := parseCLI(t, base.Command, env)
		if err != nil {
			t.Fatal(err)
		}
		checkEnv(t, "collector with TLS", env, p)
		if p.values["tls-cert"] == "" || p.values["tls-key"] == "" {
			t.Errorf("TLS flags not set from the environment: %v", p.values)
		}
		var args []string
		for _, a := range over.Healthcheck["test"].([]any) {
			args = append(args, interpolate(a.(string)))
		}
		checkHealthcheck(t, "collector with TLS", args[2:], env, p)
		if !strings.HasPrefix(args[len(args)-1], "https://") {
			t.Errorf("TLS health check %q is not https", args)
		}
	})
}

// TestComposeConfig has Docker Compose itself validate the files (without
// an engine: `config` only reads them), when it is installed.
func TestComposeConfig(t *testing.T) {
	t.Parallel()
	var compose []string
	if bin, err := exec.LookPath("docker-compose"); err == nil {
		compose = []string{bin}
	} else if bin, err := exec.LookPath("docker"); err == nil && exec.Command(bin, "compose", "version").Run() == nil {
		compose = []string{bin, "compose"}
	} else {
		t.Skip("neither docker-compose nor the docker compose plugin is installed: the files are not validated by Compose itself")
	}
	for _, files := range [][]string{
		{"docker-compose.yml"},
		{"docker-compose.yml", "collector/deploy/compose.tls.yaml"},
	} {
		args := slices.Clone(compose[1:])
		for _, f := range files {
			args = append(args, "-f", filepath.Join(repoRoot, f))
		}
		cmd := exec.Command(compose[0], append(args, "--profile", "agent", "config", "-q")...)
		cmd.Env = append(os.Environ(), "POSTGRES_PASSWORD=x-secret", "COLLECTOR_NAME=collector.example.org")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s config %v: %v\n%s", strings.Join(compose, " "), files, err, b)
		}
		// The password is required: no stack with a default one.
		cmd = exec.Command(compose[0], append(args, "config", "-q")...)
		cmd.Env = append(os.Environ(), "POSTGRES_PASSWORD=", "COLLECTOR_NAME=collector.example.org")
		if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), "set POSTGRES_PASSWORD") {
			t.Errorf("%s config %v without POSTGRES_PASSWORD: %v\n%s", strings.Join(compose, " "), files, err, b)
		}
	}
}

func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	var from, copies, env []string
	var healthcheck, cmd, entrypoint string
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch f[0] {
		case "FROM":
			from = append(from, f[1])
		case "COPY":
			if !strings.HasPrefix(f[1], "--from") {
				copies = append(copies, f[1:len(f)-1]...)
			}
		case "ENV":
			env = append(env, f[1:]...)
		case "HEALTHCHECK":
			healthcheck = line[strings.Index(line, "CMD")+3:]
		case "CMD":
			cmd = strings.TrimPrefix(line, "CMD")
		case "ENTRYPOINT":
			entrypoint = strings.TrimPrefix(line, "ENTRYPOINT")
		}
	}

	t.Run("Go version", func(t *testing.T) {
		mod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(mod)
		if m == nil {
			t.Fatal("no go line in go.mod")
		}
		want := "golang:" + string(m[1]) + "-"
		if len(from) == 0 || !strings.HasPrefix(from[0], want) {
			t.Errorf("build stage FROM %v, want %s… (go.mod's go %s)", from, want, m[1])
		}
		if len(from) != 2 || !strings.HasPrefix(from[1], "gcr.io/distroless/static") || !strings.HasSuffix(from[1], ":nonroot") {
			t.Errorf("final stage FROM %v, want a distroless static nonroot image", from)
		}
	})

	t.Run("sources copied", func(t *testing.T) {
		// Every top-level folder holding Go files is copied into the build.
		var need []string
		filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(repoRoot, path)
			top, _, _ := strings.Cut(rel, string(filepath.Separator))
			if d.IsDir() && strings.HasPrefix(d.Name(), ".") && rel != "." {
				return filepath.SkipDir
			}
			if !d.IsDir() && strings.HasSuffix(path, ".go") && top != rel && !slices.Contains(need, top+"/") {
				need = append(need, top+"/")
			}
			return nil
		})
		for _, dir := range need {
			if !slices.Contains(copies, dir) {
				t.Errorf("Dockerfile does not COPY %s (it holds Go packages)", dir)
			}
		}
		for _, f := range []string{"go.mod", "go.sum"} {
			if !slices.Contains(copies, f) {
				t.Errorf("Dockerfile does not COPY %s", f)
			}
		}
	})

	t.Run("commands", func(t *testing.T) {
		var ep, def, hc []string
		for s, dst := range map[string]*[]string{entrypoint: &ep, cmd: &def, healthcheck: &hc} {
			if err := json.Unmarshal([]byte(strings.TrimSpace(s)), dst); err != nil {
				t.Fatalf("%q: want a JSON (exec form) array: %v", s, err)
			}
		}
		if !slices.Equal(ep, []string{"/usr/local/bin/anyscope"}) || len(hc) == 0 || hc[0] != ep[0] {
			t.Fatalf("ENTRYPOINT %q, HEALTHCHECK %q: want the anyscope binary", ep, hc)
		}
		envs := map[string]string{}
		for _, kv := range env {
			k, v, _ := strings.Cut(kv, "=")
			envs[k] = v
		}
		p, err := parseCLI(t, def, nil)
		if err != nil {
			t.Fatalf("CMD %q: %v", def, err)
		}
		checkHealthcheck(t, "Dockerfile", hc[1:], envs, p)
	})
}

func TestDeployUnitCommand(t *testing.T) {
	for _, line := range strings.Split(deploy.Unit(), "\n") {
		cmd, ok := strings.CutPrefix(line, "ExecStart=")
		if !ok {
			continue
		}
		f := strings.Fields(cmd)
		p, err := parseCLI(t, f[1:], nil)
		if err != nil || p.command != "agent" {
			t.Errorf("ExecStart %q: %q, %v", cmd, p.command, err)
		}
		if p.values["config"] != deploy.ConfigPath {
			t.Errorf("ExecStart reads %s, the user data writes %s", p.values["config"], deploy.ConfigPath)
		}
		return
	}
	t.Error("no ExecStart in the unit")
}

// shellWords splits a shell command line: quotes, backslash escapes,
// comments; it stops at a redirection or a pipe.
func shellWords(line string) []string {
	var words []string
	var cur strings.Builder
	in, quote := false, rune(0)
	flush := func() {
		if in {
			words = append(words, cur.String())
			cur.Reset()
			in = false
		}
	}
	rs := []rune(line)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, in = r, true
		case r == '\\' && i+1 < len(rs):
			i++
			cur.WriteRune(rs[i])
			in = true
		case r == ' ' || r == '\t':
			flush()
		case r == '#' && !in:
			flush()
			return words
		case (r == '>' || r == '|' || r == '<') && !in:
			flush()
			return words
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	flush()
	return words
}

// composeRunFlagsWithValue are `docker compose run` flags that take a value.
var composeRunFlagsWithValue = map[string]bool{"-v": true, "--volume": true, "-e": true, "--env": true, "-w": true, "--workdir": true, "-u": true, "--user": true, "--name": true, "--entrypoint": true, "-p": true, "--publish": true}

// commandLines finds the anyscope command lines in text: lines (in comments
// or shell blocks) that start with `anyscope`, or with `docker compose run`
// on a service (whose entrypoint is anyscope). Each is returned without the
// program.
func commandLines(text string) [][]string {
	var out [][]string
	text = strings.ReplaceAll(text, "\\\n", " ")
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		line = strings.TrimSpace(strings.TrimLeft(line, "#"))
		line = strings.TrimPrefix(line, "$ ")
		w := shellWords(line)
		switch {
		case len(w) > 1 && w[0] == "anyscope":
			out = append(out, w[1:])
		case len(w) > 3 && w[0] == "docker" && w[1] == "compose":
			i := 2
			for i < len(w) && w[i] != "run" {
				i++
			}
			for i++; i < len(w) && strings.HasPrefix(w[i], "-"); i++ {
				if composeRunFlagsWithValue[w[i]] {
					i++
				}
			}
			if i+1 < len(w) { // w[i] is the service
				out = append(out, w[i+1:])
			}
		}
	}
	return out
}

// TestDeployDocsCommands parses every anyscope command the deployment files
// and guides show, with the real parser.
func TestDeployDocsCommands(t *testing.T) {
	for _, file := range []string{
		"docker-compose.yml", "collector/deploy/targets.example.yaml",
		"collector/deploy/README.md", "agent/deploy/README.md", "agent/deploy/compose-agent.yaml",
	} {
		b, err := os.ReadFile(filepath.Join(repoRoot, file))
		if err != nil {
			t.Error(err)
			continue
		}
		text := string(b)
		if strings.HasSuffix(file, ".md") {
			// Only what is inside fenced code blocks is a command.
			var code strings.Builder
			for i, part := range strings.Split(text, "```") {
				if i%2 == 1 {
					code.WriteString(part + "\n")
				}
			}
			text = code.String()
		}
		lines := commandLines(text)
		if len(lines) == 0 {
			t.Errorf("%s: no anyscope command found (is the extraction broken?)", file)
		}
		for _, args := range lines {
			if _, err := parseCLI(t, args, nil); err != nil {
				t.Errorf("%s: anyscope %s: %v", file, strings.Join(args, " "), err)
			}
		}
	}
}

func TestShellWords(t *testing.T) {
	for line, want := range map[string][]string{
		`anyscope agents add vp1 --lat 52.37 > vp1.token`:  {"anyscope", "agents", "add", "vp1", "--lat", "52.37"},
		`anyscope report --since 6h   # six hours`:         {"anyscope", "report", "--since", "6h"},
		`anyscope x --a 'b c' --d "e f" g\ h`:              {"anyscope", "x", "--a", "b c", "--d", "e f", "g h"},
		`docker compose run --rm -T collector agents list`: {"docker", "compose", "run", "--rm", "-T", "collector", "agents", "list"},
		`sha256sum anyscope | cut -d' ' -f1`:               {"sha256sum", "anyscope"},
	} {
		if got := shellWords(line); !slices.Equal(got, want) {
			t.Errorf("shellWords(%q) = %q, want %q", line, got, want)
		}
	}
	got := commandLines("# docker compose run --rm -v a:b collector report --since 1h\n  $ anyscope agents list \\\n   --db x\n")
	if len(got) != 2 || strings.Join(got[0], " ") != "report --since 1h" || strings.Join(got[1], " ") != "agents list --db x" {
		t.Errorf("commandLines = %q", got)
	}
}

// TestDeployDocsMetrics checks every metric the guides name is defined.
func TestDeployDocsMetrics(t *testing.T) {
	var sources []string
	for _, dir := range []string{"collector", "agent"} {
		filepath.WalkDir(filepath.Join(repoRoot, dir), func(path string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
				b, _ := os.ReadFile(path)
				sources = append(sources, string(b))
			}
			return err
		})
	}
	metric := regexp.MustCompile(`anyscope_(collector|agent|shipper)_([a-z_]+[a-z])`)
	for _, file := range []string{"collector/deploy/README.md", "agent/deploy/README.md"} {
		b, err := os.ReadFile(filepath.Join(repoRoot, file))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range metric.FindAllStringSubmatch(string(b), -1) {
			defined := slices.ContainsFunc(sources, func(src string) bool {
				return strings.Contains(src, `"`+m[1]+`"`) && strings.Contains(src, `Name: "`+m[2]+`"`)
			})
			if !defined {
				t.Errorf("%s names %s, which no package defines", file, m[0])
			}
		}
	}
}
