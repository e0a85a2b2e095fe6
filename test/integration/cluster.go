package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/testcontainers/testcontainers-go"
	tcnetwork "github.com/testcontainers/testcontainers-go/network"
)

// Names and ports inside the cluster.
const (
	streamName    = "AMI_EVENTS"
	subjectPrefix = "ami"
	ingestUser    = "ami"  // the ingest's AMI user; amisim counts sessions per user
	actorUser     = "ami2" // the actor's own AMI user
	simAlias      = "pbx"  // amisim's host name on the PBX network
	simFirstPort  = 5038   // node i listens on simFirstPort+i-1
	simControl    = "8080/tcp"
	natsClient    = "4222/tcp"
	natsMonitor   = "8222/tcp"
	ingestHTTP    = "9090/tcp"
	actorHTTP     = "9091/tcp"
	configPath    = "/etc/amibus/amibus.yaml"

	// readyTimeout bounds one container's start until it answers ready,
	// on a busy 2-core machine.
	readyTimeout = 60 * time.Second
	// pollEvery paces the waits on an HTTP endpoint of a container: a
	// separate process offers nothing to block on, so these (and only
	// these) waits poll.
	pollEvery = 200 * time.Millisecond
)

// Spec describes a cluster. Zero fields take the defaults of scenario 1.
type Spec struct {
	Nodes          int           // simulated PBXs; default 12
	Listed         int           // nodes in the first file, pbx1..pbxListed; default Nodes
	Ingest         int           // ami-ingest replicas; default 3
	Actors         int           // ami-actor replicas; default 2, -1 for none
	TTL            time.Duration // ingest.ha.ttl; default 3s
	CallsPerSecond float64       // live calls per node; default 0.5 (~42 events/s per node)
	// Simultaneous starts every ingest replica at once; by default the
	// first one starts alone and creates the stream.
	Simultaneous bool
	// State adds QueueStatus to the ingest's snapshots and a state:
	// section (leases on) to the file, for ami-state replicas
	// (state_test.go starts them).
	State bool
}

func (s Spec) withDefaults() Spec {
	if s.Nodes == 0 {
		s.Nodes = 12
	}
	if s.Ingest == 0 {
		s.Ingest = 3
	}
	if s.Listed == 0 {
		s.Listed = s.Nodes
	}
	switch {
	case s.Actors == 0:
		s.Actors = 2
	case s.Actors < 0:
		s.Actors = 0
	}
	if s.TTL == 0 {
		s.TTL = 3 * time.Second
	}
	if s.CallsPerSecond == 0 {
		s.CallsPerSecond = 0.5
	}
	return s
}

// Cluster is one test's deployment: three NATS servers on the NATS
// network, amisim on the PBX network, ingest and actor replicas on both.
type Cluster struct {
	t     *testing.T
	Spec  Spec
	p     *testcontainers.DockerProvider
	image string
	// Nodes are the nodes of the file: pbx1..pbxListed at start, then
	// those of the last SetNodes. amisim simulates pbx1..pbxN whatever
	// the file lists.
	Nodes []string
	// ever are the nodes any file listed, in the order first listed: the
	// nodes whose histories Verify checks.
	ever []string

	natsNet, pbxNet *testcontainers.DockerNetwork

	NATS   []*Box
	Sim    *Box
	Ingest []*Box
	Actors []*Box

	NC   *nats.Conn // the test's own connection, through the mapped ports
	JS   jetstream.JetStream
	Tail *Tail
	Ctl  *Sim

	mu    sync.Mutex
	boxes []*Box // every container ever started, for logs and clean-up

	kvMu  sync.Mutex
	kvOps []kvOp // writes to the lease bucket (recordLeases)
}

// Box is one container of the cluster.
type Box struct {
	Name string
	Role string // nats, amisim, ingest, actor
	cl   *Cluster
	ctr  *testcontainers.DockerContainer
	port string // the HTTP port tests talk to

	mu       sync.Mutex
	instance string // ingest: the process instance of the current run
}

// StartCluster starts spec's cluster and returns once every node is owned
// by an ingest replica, fairly shared, and every actor is ready. Everything
// is removed when the test ends; when it failed, each container's log is
// saved first (the test log says where).
func StartCluster(t *testing.T, spec Spec) *Cluster {
	t.Helper()
	p, image := setup(t)
	c := &Cluster{t: t, Spec: spec.withDefaults(), p: p, image: image}
	for i := 1; i <= c.Spec.Listed; i++ {
		c.Nodes = append(c.Nodes, "pbx"+strconv.Itoa(i))
	}
	c.ever = slices.Clone(c.Nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()

	var err error
	if c.natsNet, err = tcnetwork.New(ctx); err != nil {
		t.Fatalf("nats network: %v", err)
	}
	t.Cleanup(func() { c.removeNetwork(c.natsNet) })
	if c.pbxNet, err = tcnetwork.New(ctx); err != nil {
		t.Fatalf("pbx network: %v", err)
	}
	t.Cleanup(func() { c.removeNetwork(c.pbxNet) })
	t.Cleanup(c.terminateAll) // before the networks go
	t.Cleanup(c.saveLogsIfFailed)

	// NATS and amisim first, in parallel: they need nothing else.
	c.NATS = make([]*Box, 3)
	err = parallel(4, func(i int) error {
		if i == 3 {
			var err error
			c.Sim, err = c.startSim(ctx)
			return err
		}
		var err error
		c.NATS[i], err = c.startNATS(ctx, i+1)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Ctl = &Sim{base: func(ctx context.Context) (string, error) { return c.Sim.URL(ctx, simControl) }}
	if err := c.connectTest(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.recordLeases(); err != nil {
		t.Fatal(err)
	}

	// The first ingest replica starts alone and creates the stream; the
	// others start together once it is ready. Replicas that all start at
	// once on a fresh cluster expose a bug (see TestSimultaneousStart).
	c.Ingest = make([]*Box, c.Spec.Ingest)
	first := 1
	if c.Spec.Simultaneous {
		first = 0
	}
	for _, batch := range [][2]int{{0, first}, {first, c.Spec.Ingest}} {
		if err := parallel(batch[1]-batch[0], func(i int) error {
			var err error
			c.Ingest[batch[0]+i], err = c.startService(ctx, "ingest", batch[0]+i+1)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	// The first ingest created the stream before it was ready.
	if c.Tail, err = StartTail(ctx, c.JS, streamName, subjectPrefix); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Tail.Stop)
	c.Actors = make([]*Box, c.Spec.Actors) // none with Actors -1
	if err := parallel(c.Spec.Actors, func(i int) error {
		var err error
		c.Actors[i], err = c.startService(ctx, "actor", i+1)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	c.WaitSettled(ctx, c.Ingest...)
	t.Logf("cluster up in %v: 3 NATS servers, %d nodes, %d ingest (ttl %v), %d actors",
		time.Since(start).Round(time.Millisecond), c.Spec.Nodes, c.Spec.Ingest, c.Spec.TTL, c.Spec.Actors)
	return c
}

// StartLive is StartCluster for a scenario that disturbs live traffic: it
// returns the cluster, with the context the scenario runs in, once every
// node has stored 100 more messages than when the cluster was up.
func StartLive(t *testing.T, spec Spec) (*Cluster, context.Context) {
	t.Helper()
	c := StartCluster(t, spec)
	ctx := context.Background()
	c.WaitEvents(ctx, 100)
	return c, ctx
}

// parallel runs f(0..n-1) at once and joins their errors.
func parallel(n int, f func(i int) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(i)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (c *Cluster) startNATS(ctx context.Context, i int) (*Box, error) {
	name := "nats" + strconv.Itoa(i)
	var routes []string
	for j := 1; j <= 3; j++ {
		routes = append(routes, fmt.Sprintf("nats://nats%d:6222", j))
	}
	b, err := c.run(ctx, "nats", name, natsMonitor, testcontainers.ContainerRequest{
		Entrypoint: []string{"/nats-server"},
		Cmd: []string{"--name", name, "-p", "4222", "-m", "8222", "--js", "--store_dir", "/data",
			"--cluster_name", "amibus", "--cluster", "nats://0.0.0.0:6222", "--routes", strings.Join(routes, ","),
			// Clients (the test through mapped ports) must not learn
			// the servers' addresses on the private network.
			"--no_advertise"},
		ExposedPorts:   []string{natsClient, natsMonitor},
		Networks:       []string{c.natsNet.Name},
		NetworkAliases: map[string][]string{c.natsNet.Name: {name}},
		// JetStream needs a writable store; scratch has no writable
		// directory for the image's unprivileged user.
		ConfigModifier: func(cfg *container.Config) { cfg.User = "0:0" },
	})
	if err != nil {
		return nil, err
	}
	// /healthz answers 200 once JetStream is up and current.
	return b, b.waitHTTP(ctx, "/healthz")
}

func (c *Cluster) startSim(ctx context.Context) (*Box, error) {
	b, err := c.run(ctx, "amisim", "amisim", simControl, testcontainers.ContainerRequest{
		Entrypoint: []string{"/amisim"},
		Cmd: []string{"--listen", fmt.Sprintf("0.0.0.0:%d", simFirstPort), "--nodes", strconv.Itoa(c.Spec.Nodes),
			"--users", ingestUser + ":amisecret," + actorUser + ":amisecret2",
			"--calls-per-second", strconv.FormatFloat(c.Spec.CallsPerSecond, 'g', -1, 64),
			"--control", "0.0.0.0:8080",
			// Enough for every action and event of a test run.
			"--record-limit", "1000000"},
		ExposedPorts:   []string{simControl},
		Networks:       []string{c.pbxNet.Name},
		NetworkAliases: map[string][]string{c.pbxNet.Name: {simAlias}},
	})
	if err != nil {
		return nil, err
	}
	return b, b.waitHTTP(ctx, "/nodes")
}

// startService starts replica i of ami-ingest or ami-actor. Its first
// network is the PBX network, which carries the mapped HTTP port, so that
// cutting it off the NATS network leaves its /metrics reachable.
func (c *Cluster) startService(ctx context.Context, role string, i int) (*Box, error) {
	name := fmt.Sprintf("%s%d", role, i)
	port, bin := ingestHTTP, "/ami-ingest"
	if role == "actor" {
		port, bin = actorHTTP, "/ami-actor"
	}
	cmd := []string{"--config", configPath}
	// AMIBUS_IT_LOG_LEVEL=debug makes the saved container logs say more
	// when a scenario fails.
	if lvl := os.Getenv("AMIBUS_IT_LOG_LEVEL"); lvl != "" {
		cmd = append(cmd, "--log-level", lvl)
	}
	b, err := c.run(ctx, role, name, port, testcontainers.ContainerRequest{
		Entrypoint:   []string{bin},
		Cmd:          cmd,
		ExposedPorts: []string{port},
		Networks:     []string{c.pbxNet.Name, c.natsNet.Name},
		Files: []testcontainers.ContainerFile{{
			Reader: strings.NewReader(c.config(role)), ContainerFilePath: configPath, FileMode: 0o444,
		}},
	})
	if err != nil {
		return nil, err
	}
	return b, b.waitReady(ctx)
}

// config is the YAML configuration of role: every node of amisim, NATS
// through the cluster, R3 stream, HA leases with the spec's TTL.
func (c *Cluster) config(role string) string {
	var b strings.Builder
	b.WriteString("nats:\n  url: nats://nats1:4222,nats://nats2:4222,nats://nats3:4222\n")
	b.WriteString("stream:\n  replicas: 3\n  max_age: 1h\n")
	b.WriteString("nodes:\n")
	for _, n := range c.Nodes {
		fmt.Fprintf(&b, "  - name: %s\n    address: %s:%d\n    username: %s\n    secret: amisecret\n"+
			"    actor_username: %s\n    actor_secret: amisecret2\n", n, simAlias, simPort(n), ingestUser, actorUser)
	}
	listen := "0.0.0.0:9090"
	if role == "actor" {
		listen = "0.0.0.0:9091"
	}
	fmt.Fprintf(&b, "http:\n  listen: %s\n", listen)
	fmt.Fprintf(&b, "ingest:\n  ha:\n    enabled: true\n    ttl: %s\n", c.Spec.TTL)
	if c.Spec.State {
		fmt.Fprintf(&b, "  snapshot_actions: [CoreShowChannels, BridgeList, QueueStatus]\n"+
			"state:\n  replicas: 3\n  ha:\n    enabled: true\n    ttl: %s\n", c.Spec.TTL)
	}
	return b.String()
}

// simPort is the port amisim serves node pbxK on.
func simPort(node string) int {
	k, _ := strconv.Atoi(strings.TrimPrefix(node, "pbx"))
	return simFirstPort + k - 1
}

// SetNodes makes nodes the node list of the file that Reload writes (and
// that containers started from now on read); the checks follow it.
func (c *Cluster) SetNodes(nodes []string) {
	c.Nodes = slices.Clone(nodes)
	for _, n := range nodes {
		if !slices.Contains(c.ever, n) {
			c.ever = append(c.ever, n)
		}
	}
}

// Reload writes the cluster's current file (SetNodes) over the box's
// configuration file and sends it SIGHUP, as `kill -HUP` after a
// ConfigMap update would; it returns once the process counted the reload
// as applied (ami_config_reloads_total), failing on any other result.
func (b *Box) Reload(ctx context.Context) error {
	before, err := b.Metrics(ctx)
	if err != nil {
		return err
	}
	count := func(m Metrics, result string) float64 { return m.Sum("ami_config_reloads_total", "result", result) }
	if err := b.ctr.CopyToContainer(ctx, []byte(b.cl.config(b.Role)), configPath, 0o444); err != nil {
		return fmt.Errorf("write %s's configuration: %w", b.Name, err)
	}
	if _, err := b.cl.p.Client().ContainerKill(ctx, b.ctr.GetContainerID(), client.ContainerKillOptions{Signal: "SIGHUP"}); err != nil {
		return fmt.Errorf("SIGHUP %s: %w", b.Name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var other error // a result other than applied: no use waiting on
	err = pollUntil(ctx, b.Name+" reload", func() error {
		m, err := b.Metrics(ctx)
		if err != nil {
			return err
		}
		for _, r := range []string{"invalid", "refused", "unchanged"} {
			if count(m, r) > count(before, r) {
				other = fmt.Errorf("%s: reload counted %s, want applied", b.Name, r)
				return nil
			}
		}
		if count(m, "applied") == count(before, "applied") {
			return errors.New("not applied yet")
		}
		return nil
	})
	return errors.Join(err, other)
}

// run creates and starts a container of the suite's image.
func (c *Cluster) run(ctx context.Context, role, name, port string, req testcontainers.ContainerRequest) (*Box, error) {
	req.Image = c.image
	req.Name = fmt.Sprintf("amibus-it-%s-%s-%d", c.t.Name(), name, time.Now().UnixNano())
	req.Name = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, req.Name)
	ctr, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{
		ContainerRequest: req, Started: true,
	})
	b := &Box{Name: name, Role: role, cl: c, port: port}
	if dc, ok := ctr.(*testcontainers.DockerContainer); ok && dc != nil {
		b.ctr = dc
		c.mu.Lock()
		c.boxes = append(c.boxes, b)
		c.mu.Unlock()
	}
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return b, nil
}

// connectTest connects the test to the three NATS servers' mapped ports
// and waits for JetStream to answer.
func (c *Cluster) connectTest(ctx context.Context) error {
	var urls []string
	for _, b := range c.NATS {
		hp, err := b.HostPort(ctx, natsClient)
		if err != nil {
			return err
		}
		urls = append(urls, "nats://"+hp)
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.Name("amibus-it"), nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond), nats.Timeout(2*time.Second))
	if err != nil {
		return fmt.Errorf("test connection to NATS: %w", err)
	}
	c.t.Cleanup(nc.Close)
	c.NC = nc
	if c.JS, err = jetstream.New(nc); err != nil {
		return err
	}
	// The servers report healthy before the JetStream meta leader of the
	// cluster is elected; an account info request needs it.
	return pollUntil(ctx, "JetStream of the NATS cluster", func() error {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := c.JS.AccountInfo(rctx)
		return err
	})
}

// pollUntil calls f every pollEvery until it returns nil or ctx ends.
func pollUntil(ctx context.Context, what string, f func() error) error {
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not ready: %w (last error: %v)", what, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// HostPort is where the test reaches the container's port.
func (b *Box) HostPort(ctx context.Context, port string) (string, error) {
	mp, err := b.ctr.MappedPort(ctx, port)
	if err != nil {
		return "", fmt.Errorf("%s: port %s: %w", b.Name, port, err)
	}
	p := strconv.Itoa(int(mp.Num()))
	host, err := publishedHost(ctx, b.cl.p, p)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(host, p), nil
}

// URL is http://host:port of the container's port.
func (b *Box) URL(ctx context.Context, port string) (string, error) {
	hp, err := b.HostPort(ctx, port)
	if err != nil {
		return "", err
	}
	return "http://" + hp, nil
}

// waitHTTP waits until GET path on the box's HTTP port answers 200.
func (b *Box) waitHTTP(ctx context.Context, path string) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	return pollUntil(ctx, b.Name+" "+path, func() error {
		base, err := b.URL(ctx, b.port)
		if err != nil {
			return err
		}
		return call(ctx, http.MethodGet, base, path, http.StatusOK, nil)
	})
}

// waitReady waits for /readyz of an ingest or actor replica, and for an
// ingest, reads the instance it records as owner.
func (b *Box) waitReady(ctx context.Context) error {
	if err := b.waitHTTP(ctx, "/readyz"); err != nil {
		return err
	}
	if b.Role != "ingest" {
		return nil
	}
	prev := b.Instance() // a restarted container's log holds every run
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return pollUntil(ctx, b.Name+" instance in its log", func() error {
		inst, err := b.instanceFromLog(ctx)
		if err != nil {
			return err
		}
		if inst == prev {
			return errors.New("no \"ami-ingest started\" line of the new run yet")
		}
		b.mu.Lock()
		b.instance = inst
		b.mu.Unlock()
		return nil
	})
}

// Instance is the ingest process instance of the box's current run, as in
// the owner field of its session_start markers.
func (b *Box) Instance() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.instance
}

// instanceFromLog returns the instance of the last "ami-ingest started"
// line of the container's log (a restarted container logs one per run).
func (b *Box) instanceFromLog(ctx context.Context) (string, error) {
	rc, err := b.ctr.Logs(ctx)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	inst := ""
	sc := bufio.NewScanner(rc)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !strings.Contains(string(line), `"ami-ingest started"`) {
			continue
		}
		var l struct {
			Instance string `json:"instance"`
		}
		if json.Unmarshal(line, &l) == nil && l.Instance != "" {
			inst = l.Instance
		}
	}
	if inst == "" {
		return "", errors.New("no \"ami-ingest started\" line yet")
	}
	return inst, nil
}

// Metrics scrapes the box's /metrics.
func (b *Box) Metrics(ctx context.Context) (Metrics, error) {
	base, err := b.URL(ctx, b.port)
	if err != nil {
		return nil, err
	}
	return scrape(ctx, base+"/metrics")
}

// Kill sends SIGKILL and waits until the container is no longer running.
func (b *Box) Kill(ctx context.Context) error {
	cli := b.cl.p.Client()
	if _, err := cli.ContainerKill(ctx, b.ctr.GetContainerID(), client.ContainerKillOptions{Signal: "SIGKILL"}); err != nil {
		return fmt.Errorf("kill %s: %w", b.Name, err)
	}
	w := cli.ContainerWait(ctx, b.ctr.GetContainerID(), client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	select {
	case <-w.Result:
		return nil
	case err := <-w.Error:
		return fmt.Errorf("wait for %s to stop: %w", b.Name, err)
	}
}

// Stop sends SIGTERM, waits up to grace for the process to exit (then
// SIGKILL), and returns its exit code.
func (b *Box) Stop(ctx context.Context, grace time.Duration) (int, error) {
	if err := b.ctr.Stop(ctx, &grace); err != nil {
		return -1, fmt.Errorf("stop %s: %w", b.Name, err)
	}
	st, err := b.ctr.State(ctx)
	if err != nil {
		return -1, err
	}
	return st.ExitCode, nil
}

// Start starts a stopped container again and waits until it is ready.
func (b *Box) Start(ctx context.Context) error {
	if err := b.ctr.Start(ctx); err != nil {
		return fmt.Errorf("start %s again: %w", b.Name, err)
	}
	switch b.Role {
	case "ingest", "actor":
		return b.waitReady(ctx)
	case "nats":
		return b.waitHTTP(ctx, "/healthz")
	}
	return nil
}

// Disconnect cuts the container off the NATS network (it keeps the PBX
// network, and its mapped ports).
func (b *Box) Disconnect(ctx context.Context) error {
	_, err := b.cl.p.Client().NetworkDisconnect(ctx, b.cl.natsNet.ID, client.NetworkDisconnectOptions{
		Container: b.ctr.GetContainerID(), Force: true,
	})
	return err
}

// Reconnect attaches the container to the NATS network again.
func (b *Box) Reconnect(ctx context.Context) error {
	_, err := b.cl.p.Client().NetworkConnect(ctx, b.cl.natsNet.ID, client.NetworkConnectOptions{
		Container: b.ctr.GetContainerID(), EndpointConfig: &network.EndpointSettings{},
	})
	return err
}

// logs returns the container's whole log.
func (b *Box) logs(ctx context.Context) (string, error) {
	rc, err := b.ctr.Logs(ctx)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	var sb strings.Builder
	sc := bufio.NewScanner(rc)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		sb.Write(sc.Bytes())
		sb.WriteByte('\n')
	}
	return sb.String(), sc.Err()
}

// saveLogsIfFailed writes every container's log to a directory that
// outlives the test, when the test failed.
func (c *Cluster) saveLogsIfFailed() {
	if !c.t.Failed() {
		return
	}
	dir := filepath.Join(os.TempDir(), "amibus-it-logs", strings.ReplaceAll(c.t.Name(), "/", "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		c.t.Logf("container logs not saved: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c.mu.Lock()
	boxes := append([]*Box(nil), c.boxes...)
	c.mu.Unlock()
	for _, b := range boxes {
		l, err := b.logs(ctx)
		if err != nil {
			l += fmt.Sprintf("\n(log read failed: %v)\n", err)
		}
		_ = os.WriteFile(filepath.Join(dir, b.Name+".log"), []byte(l), 0o644)
	}
	c.t.Logf("container logs saved in %s", dir)
}

// terminateAll removes every container, in parallel.
func (c *Cluster) terminateAll() {
	c.mu.Lock()
	boxes := append([]*Box(nil), c.boxes...)
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = parallel(len(boxes), func(i int) error {
		if err := boxes[i].ctr.Terminate(ctx, testcontainers.StopTimeout(0)); err != nil {
			c.t.Logf("remove container %s: %v", boxes[i].Name, err)
		}
		return nil
	})
}

func (c *Cluster) removeNetwork(n *testcontainers.DockerNetwork) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Remove(ctx); err != nil {
		c.t.Logf("remove network %s: %v", n.Name, err)
	}
}
