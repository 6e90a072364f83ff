// Package lab builds an anycast network on this machine out of network
// namespaces, so that anyscope can be tested against real routing: routers
// speaking eBGP (bird2), sites that announce the same anycast prefixes and
// answer on the same addresses with their own identity (NSD: CHAOS
// hostname.bind / id.server and NSID; a tiny HTTP responder), and vantage
// points behind routers. BGP decides which site each vantage point reaches,
// exactly as on the Internet; Truth reads that decision from the routers'
// forwarding tables, and scenarios (withdraw, black-hole, flap, broken vantage
// point) change it on purpose, each step logged with its time.
//
// Every namespace's name starts with a prefix ("as-" by default) and every
// file lives in one state directory, so Down can find and remove everything,
// even after a crash. The lab needs root and the Debian packages bird2, nsd
// and nftables. It only uses documentation and benchmark address ranges and
// is never connected to the host's outside network: the only link to the
// host is the management network's veth (a /24 with no routes beyond it).
package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Sentinel errors callers branch on.
var (
	ErrNotRoot   = errors.New("the lab needs root (network namespaces, veth pairs, BGP daemons): run it as root or with sudo")
	ErrAlreadyUp = errors.New("the lab is already up")
	ErrNotUp     = errors.New("the lab is not up")
)

// Defaults.
const (
	DefaultStateDir = "/run/anyscope-lab"
	DefaultPrefix   = "as-"
	stateFile       = "state.json"
	eventsFile      = "events.jsonl"
)

// Options configure a Lab.
type Options struct {
	StateDir string // where configs, sockets, logs and the event log live
	Prefix   string // of every namespace and of the host's management veth
	// HTTPD is the command line that runs the HTTP identity responder
	// (`anyscope lab httpd`); "--site NAME --listen ADDR…" is appended.
	// Default: this executable followed by "lab httpd".
	HTTPD []string
	// ConvergeTimeout bounds the wait for BGP in Up (default 25s).
	ConvergeTimeout time.Duration
	Logger          *slog.Logger
	// Events receives every scenario event as a JSON line, besides the
	// event log file (the CLI passes stdout).
	Events io.Writer
}

// Lab manages one lab on this machine.
type Lab struct {
	dir, prefix string
	httpd       []string
	converge    time.Duration
	log         *slog.Logger
	events      io.Writer
}

// New validates options and returns a Lab; it touches nothing yet.
func New(o Options) (*Lab, error) {
	l := &Lab{dir: o.StateDir, prefix: o.Prefix, httpd: o.HTTPD, converge: o.ConvergeTimeout, log: o.Logger, events: o.Events}
	if l.dir == "" {
		l.dir = DefaultStateDir
	}
	if l.prefix == "" {
		l.prefix = DefaultPrefix
	}
	if !nameRE.MatchString(strings.TrimSuffix(l.prefix, "-")) || !strings.HasSuffix(l.prefix, "-") || len(l.prefix) > 4 {
		return nil, fmt.Errorf("lab prefix %q: want 1-3 lower-case letters or digits and a dash, e.g. %q", l.prefix, DefaultPrefix)
	}
	if l.converge <= 0 {
		l.converge = 25 * time.Second
	}
	if l.log == nil {
		l.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if len(l.httpd) == 0 {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("lab: find own executable for the HTTP responder: %w", err)
		}
		// In a Go test binary "lab httpd" would run the whole test suite in
		// every site (labs within labs, each tearing the others down).
		if strings.HasSuffix(self, ".test") {
			return nil, errors.New("lab: running inside a Go test binary: set Options.HTTPD to a command that runs the HTTP responder (e.g. the anyscope binary's \"lab httpd\")")
		}
		l.httpd = []string{self, "lab", "httpd"}
	}
	return l, nil
}

// StateDir is where the lab keeps its files.
func (l *Lab) StateDir() string { return l.dir }

// state is what Up leaves in the state directory for later commands.
type state struct {
	Prefix       string    `json:"prefix"`
	TopologyName string    `json:"topology_name"`
	Topology     string    `json:"topology"` // the YAML source
	Started      time.Time `json:"started"`
}

func (l *Lab) loadState() (*state, *plan, error) {
	b, err := os.ReadFile(filepath.Join(l.dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("%w (no %s; start it with `anyscope lab up`)", ErrNotUp, filepath.Join(l.dir, stateFile))
	}
	if err != nil {
		return nil, nil, fmt.Errorf("lab state: %w", err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, nil, fmt.Errorf("lab state %s: %w", filepath.Join(l.dir, stateFile), err)
	}
	t, err := ParseTopology(st.TopologyName, []byte(st.Topology))
	if err != nil {
		return nil, nil, fmt.Errorf("lab state: %w", err)
	}
	return &st, newPlan(t, st.Prefix), nil
}

func requireRoot() error {
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	return nil
}

// tools maps each program the lab runs to the Debian package providing it.
var tools = []struct{ bin, pkg string }{
	{"ip", "iproute2"}, {"bird", "bird2"}, {"birdc", "bird2"}, {"nsd", "nsd"},
	{"nft", "nftables"}, {"sysctl", "procps"},
}

// EnsureTools installs the missing Debian packages the lab needs (as root,
// with apt-get), or names them in the error.
func EnsureTools(ctx context.Context, log *slog.Logger) error {
	missing := func() []string {
		var pkgs []string
		seen := map[string]bool{}
		for _, t := range tools {
			if _, err := exec.LookPath(t.bin); err != nil && !seen[t.pkg] {
				seen[t.pkg] = true
				pkgs = append(pkgs, t.pkg)
			}
		}
		return pkgs
	}
	pkgs := missing()
	if len(pkgs) == 0 {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("the lab needs the Debian packages %s: apt-get install -y %s", strings.Join(pkgs, ", "), strings.Join(pkgs, " "))
	}
	if log != nil {
		log.Info("installing the lab's Debian packages", "packages", pkgs)
	}
	install := func() error {
		cmd := exec.CommandContext(ctx, "apt-get", append([]string{"install", "-y", "-qq", "--no-install-recommends"}, pkgs...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get install %s: %w: %s", strings.Join(pkgs, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	if err := install(); err != nil {
		if _, uerr := run(ctx, "", "apt-get", "update", "-qq"); uerr != nil {
			return fmt.Errorf("the lab needs the Debian packages %s: %w", strings.Join(pkgs, ", "), err)
		}
		if err := install(); err != nil {
			return fmt.Errorf("the lab needs the Debian packages %s: %w", strings.Join(pkgs, ", "), err)
		}
	}
	if still := missing(); len(still) > 0 {
		return fmt.Errorf("the lab needs the Debian packages %s (installed, but their programs are not on PATH)", strings.Join(still, ", "))
	}
	return nil
}

// Up builds the topology (src is its YAML, name is used in errors), starts
// bird on every router and site, NSD and the HTTP responder on every site,
// and waits until BGP has converged. Up on a running lab returns
// ErrAlreadyUp; leftovers of a crashed lab are removed first. On failure
// everything built so far is torn down.
func (l *Lab) Up(ctx context.Context, name string, src []byte) (err error) {
	t, err := ParseTopology(name, src)
	if err != nil {
		return err
	}
	if err := requireRoot(); err != nil {
		return err
	}
	if err := EnsureTools(ctx, l.log); err != nil {
		return err
	}
	if st, p, lerr := l.loadState(); lerr == nil {
		existing, err := listNamespaces(ctx, l.prefix)
		if err != nil {
			return err
		}
		if len(existing) == len(p.namespaces()) {
			return fmt.Errorf("%w (topology %s, since %s; `anyscope lab down` first)", ErrAlreadyUp, st.TopologyName, st.Started.Format(time.RFC3339))
		}
	}
	// Remove what a crashed or half-built lab left behind.
	if _, err := l.Down(ctx); err != nil {
		return fmt.Errorf("clean up before up: %w", err)
	}
	if err := hostAddrFree(t.Management.Host); err != nil {
		return err
	}
	p := newPlan(t, l.prefix)
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		return fmt.Errorf("lab state dir: %w", err)
	}
	defer func() {
		if err != nil {
			if _, derr := l.Down(context.Background()); derr != nil {
				err = errors.Join(err, fmt.Errorf("tear down after failed up: %w", derr))
			}
		}
	}()
	start := time.Now()
	if err := buildNetwork(ctx, p); err != nil {
		return err
	}
	l.log.Debug("lab network built", "namespaces", len(p.namespaces()), "elapsed", time.Since(start))
	if err := l.startDaemons(ctx, p); err != nil {
		return err
	}
	st := state{Prefix: l.prefix, TopologyName: name, Topology: string(src), Started: time.Now().UTC()}
	b, _ := json.MarshalIndent(st, "", "  ")
	if err := os.WriteFile(filepath.Join(l.dir, stateFile), b, 0o644); err != nil {
		return fmt.Errorf("lab state: %w", err)
	}
	if err := l.waitConverged(ctx, p); err != nil {
		return err
	}
	l.log.Info("lab up", "topology", name, "routers", len(t.Routers), "sites", len(t.Sites),
		"vantage_points", len(t.VantagePoints), "elapsed", time.Since(start).Round(time.Millisecond))
	return l.event(Event{Event: "up", Detail: name})
}

// hostAddrFree fails when host, the management network's address in this
// host's namespace, is already on one of its interfaces: another lab (of
// another prefix) with the same management network is up, and the two would
// mix their agents' traffic. Lab commands that give the host an address run
// one at a time (tests and scripts take flock /tmp/anyscope-lab.lock).
func hostAddrFree(host netip.Addr) error {
	if !host.IsValid() {
		return nil
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return fmt.Errorf("lab: list interfaces: %w", err)
	}
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == host {
					return fmt.Errorf("lab: the management host address %s is already on interface %s: another lab with this management network is up (take it down, or wait for it: flock /tmp/anyscope-lab.lock)", host, ifc.Name)
				}
			}
		}
	}
	return nil
}

func (l *Lab) nodeDir(node string) string { return filepath.Join(l.dir, node) }
func (l *Lab) birdSock(node string) string {
	return filepath.Join(l.nodeDir(node), "bird.ctl")
}

// startDaemons writes every configuration and starts the daemons, each in
// its node's namespace, in the foreground of its own session (logs in the
// node's directory).
func (l *Lab) startDaemons(ctx context.Context, p *plan) error {
	for _, r := range p.topo.Routers {
		dir := l.nodeDir(r.Name)
		if err := writeFiles(dir, map[string]string{"bird.conf": routerBird(p, r.Name, dir)}); err != nil {
			return err
		}
		if err := l.startBird(ctx, p, r.Name); err != nil {
			return err
		}
	}
	for _, s := range p.topo.Sites {
		dir := l.nodeDir(s.Name)
		if err := writeFiles(dir, map[string]string{
			"bird.conf":        siteBird(p, s, dir),
			"nsd.conf":         nsdConf(p, s, dir),
			"lab.example.zone": nsdZone,
		}); err != nil {
			return err
		}
		if err := l.startBird(ctx, p, s.Name); err != nil {
			return err
		}
		if _, err := run(ctx, "", "nsd-checkconf", filepath.Join(dir, "nsd.conf")); err != nil {
			return err
		}
		if err := l.spawn(p, s.Name, "nsd", "nsd", "-d", "-c", filepath.Join(dir, "nsd.conf")); err != nil {
			return err
		}
		args := append(append([]string(nil), l.httpd...), "--site", s.Name)
		for _, a := range p.topo.Anycast {
			args = append(args, "--listen", netJoin(a.Address.String(), "80"))
		}
		if err := l.spawn(p, s.Name, "httpd", args...); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) startBird(ctx context.Context, p *plan, node string) error {
	conf := filepath.Join(l.nodeDir(node), "bird.conf")
	if _, err := run(ctx, "", "bird", "-p", "-c", conf); err != nil {
		return fmt.Errorf("bird configuration of %s: %w", node, err)
	}
	return l.spawn(p, node, "bird", "bird", "-f", "-c", conf, "-s", l.birdSock(node), "-P", filepath.Join(l.nodeDir(node), "bird.pid"))
}

// spawn starts a daemon in a node's namespace. It outlives this process
// (its own session, output to a log file); Down finds it by namespace.
func (l *Lab) spawn(p *plan, node, what string, args ...string) error {
	logf, err := os.OpenFile(filepath.Join(l.nodeDir(node), what+".out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", p.ns(node)}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s in %s: %s: %w", what, p.ns(node), strings.Join(cmd.Args, " "), err)
	}
	pid := cmd.Process.Pid
	if err := os.WriteFile(filepath.Join(l.nodeDir(node), what+".pid.lab"), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return err
	}
	// Reap it if it dies while we run (tests); after we exit, init does.
	go cmd.Wait()
	// A daemon that fails at once (bad config, address in use) is reported
	// here rather than as a convergence timeout.
	time.Sleep(20 * time.Millisecond)
	if !alive(pid) {
		out, _ := os.ReadFile(logf.Name())
		return fmt.Errorf("%s in %s exited at once: %s", what, p.ns(node), strings.TrimSpace(string(out)))
	}
	l.log.Debug("started", "node", node, "daemon", what, "pid", pid)
	return nil
}

// alive reports whether pid is a running (not zombie) process.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

// exists reports whether pid is in the process table, zombie or not.
func exists(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err == nil
}

func writeFiles(dir string, files map[string]string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func netJoin(host, port string) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + port
	}
	return host + ":" + port
}

// waitConverged waits until every BGP session is established, every vantage
// point has a route to every anycast address, and the answer has stayed the
// same for a moment.
func (l *Lab) waitConverged(ctx context.Context, p *plan) error {
	ctx, cancel := context.WithTimeout(ctx, l.converge)
	defer cancel()
	var last string
	var problem error
	for {
		problem = l.convergence(ctx, p)
		if problem == nil {
			tr, err := truth(ctx, p, l)
			if err == nil {
				b, _ := json.Marshal(tr.VantagePoints)
				if string(b) == last {
					return nil
				}
				last = string(b)
			}
			problem = err
		} else {
			last = ""
		}
		select {
		case <-ctx.Done():
			if problem == nil {
				problem = errors.New("routes still changing")
			}
			return fmt.Errorf("BGP did not converge within %s: %w", l.converge, problem)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// convergence returns nil when all sessions are up and every VP has a path
// to a site for every anycast address, or else what is missing.
func (l *Lab) convergence(ctx context.Context, p *plan) error {
	var down []string
	nodes := append(nodeNames(p.topo.Routers, func(r Router) string { return r.Name }), nodeNames(p.topo.Sites, func(s Site) string { return s.Name })...)
	for _, n := range nodes {
		sess, err := bgpSessions(ctx, l.birdSock(n))
		if err != nil {
			return err
		}
		for proto, s := range sess {
			if s != "Established" {
				down = append(down, n+"/"+proto+" "+s)
			}
		}
	}
	if len(down) > 0 {
		sort.Strings(down)
		return fmt.Errorf("BGP sessions not established: %s", strings.Join(down, ", "))
	}
	tr, err := truth(ctx, p, l)
	if err != nil {
		return err
	}
	var missing []string
	for _, e := range tr.VantagePoints {
		if len(e.Sites) == 0 {
			missing = append(missing, e.VantagePoint+"→"+e.Address+" ("+e.Problem+")")
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("no route to a site: %s", strings.Join(missing, ", "))
	}
	return nil
}

// DownReport says what Down removed.
type DownReport struct {
	Namespaces []string `json:"namespaces"`
	Processes  int      `json:"processes"`
	HostLink   bool     `json:"host_link"`
}

// Down stops every process in the lab's namespaces, deletes the namespaces
// and the host's management veth, and removes the state (the event log
// stays). It finds everything by the name prefix, so it also cleans up
// after a crash; on a lab that is not up it does nothing.
func (l *Lab) Down(ctx context.Context) (*DownReport, error) {
	if err := requireRoot(); err != nil {
		return nil, err
	}
	rep := &DownReport{}
	nss, err := listNamespaces(ctx, l.prefix)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, ns := range nss {
		out, err := run(ctx, "", "ip", "netns", "pids", ns)
		if err != nil {
			return rep, err
		}
		for _, f := range strings.Fields(out) {
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				pids = append(pids, pid)
			}
		}
	}
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(3 * time.Second)
	for _, pid := range pids {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	// Dead daemons started by an earlier `lab up` are reaped by init, a
	// moment later: wait for that too, so nothing of the lab is listed
	// once Down returns.
	deadline = time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for exists(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	rep.Processes = len(pids)
	var errs []error
	for _, ns := range nss {
		if _, err := run(ctx, "", "ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
			continue
		}
		rep.Namespaces = append(rep.Namespaces, ns)
	}
	host := l.prefix + "mgmt"
	if _, err := os.Stat("/sys/class/net/" + host); err == nil {
		if _, err := run(ctx, "", "ip", "link", "del", host); err != nil {
			errs = append(errs, err)
		} else {
			rep.HostLink = true
		}
	}
	if err := l.clearState(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return rep, err
	}
	if len(rep.Namespaces) > 0 {
		if err := l.event(Event{Event: "down"}); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// clearState removes everything in the state directory but the event log.
func (l *Lab) clearState() error {
	ents, err := os.ReadDir(l.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.Name() == eventsFile {
			continue
		}
		if err := os.RemoveAll(filepath.Join(l.dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// nodeNS returns the namespace of a lab node (router, site, vantage point
// or "mgmt").
func (l *Lab) nodeNS(node string) (string, *plan, error) {
	_, p, err := l.loadState()
	if err != nil {
		return "", nil, err
	}
	if node == "mgmt" {
		return p.mgmtNS(), p, nil
	}
	if _, ok := p.kinds[node]; !ok {
		var names []string
		for n := range p.kinds {
			names = append(names, n)
		}
		sort.Strings(names)
		return "", nil, fmt.Errorf("no lab node %q (nodes: %s, mgmt)", node, strings.Join(names, ", "))
	}
	return p.ns(node), p, nil
}

// Exec runs a command inside a node's namespace with the given standard
// streams and returns its error (an *exec.ExitError for a non-zero exit).
func (l *Lab) Exec(ctx context.Context, node string, argv []string, stdin io.Reader, stdout, stderr io.Writer) error {
	cmd, err := l.Command(ctx, node, argv...)
	if err != nil {
		return err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	return cmd.Run()
}

// Command returns, unstarted, a command that runs argv inside a node's
// namespace (`ip netns exec` replaces itself with argv, so signals sent to
// the process reach argv): for long-running programs such as an agent, which
// the caller starts, signals and waits for.
func (l *Lab) Command(ctx context.Context, node string, argv ...string) (*exec.Cmd, error) {
	if err := requireRoot(); err != nil {
		return nil, err
	}
	if len(argv) == 0 {
		return nil, errors.New("lab exec: no command given")
	}
	ns, _, err := l.nodeNS(node)
	if err != nil {
		return nil, err
	}
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...), nil
}
