package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/conclave-ai/conclave/cluster"
	"github.com/conclave-ai/conclave/router"
)

const clusterUsage = `Usage:
  conclave cluster status    [--addr URL] [--json]
  conclave cluster nodes     [--addr URL] [--json]
  conclave cluster experts   [--addr URL] [--json]
  conclave cluster drain NODE [--addr URL] [--timeout 2m] [--json]
  conclave cluster rebalance [--addr URL] [--json]
  conclave cluster init-tls  --dir D [--nodes n1,n2] [--hosts IP,NAME] [--days 365]

--addr is any node's admin API (default http://127.0.0.1:8080). The admin API
is plain HTTP: expose it only on a trusted network.

cluster status exits 0 when the cluster's health is ok, 3 when it is not
(degraded, or no Raft leader: then the map shown is the node's last copy),
1 when the node could not be asked.
`

// errUnhealthy is cluster status's error when the health it printed is not
// ok: exit status 3, so scripts and probes can tell it from a failed call.
var errUnhealthy = errors.New("cluster health is not ok")

// cmdCluster runs the SRE commands against a node's admin API.
func cmdCluster(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, clusterUsage)
		return fmt.Errorf("%w: cluster needs a command", errUsage)
	}
	sub, args := args[0], args[1:]
	if isHelp(sub) {
		fmt.Fprint(stdout, clusterUsage)
		return nil
	}
	if sub == "init-tls" {
		return cmdInitTLS(args, stdout, stderr)
	}
	fs := newFlags("cluster "+sub, stderr)
	addr := fs.String("addr", "http://127.0.0.1:8080", "admin API of any node")
	akey := fs.String("admin-key", "", adminKeyUsage)
	asJSON := fs.Bool("json", false, "print JSON")
	timeout := fs.Duration("timeout", 2*time.Minute, "drain: how long to wait for the node to empty; others: request timeout")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if *timeout <= 0 {
		return fmt.Errorf("%w: --timeout %v is not positive", errUsage, *timeout)
	}
	base := *addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	ac := &cluster.AdminClient{Base: base, Key: adminKey(*akey)}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	wantArgs := 0
	if sub == "drain" {
		wantArgs = 1
	}
	if len(pos) != wantArgs {
		return fmt.Errorf("%w: cluster %s takes %d argument(s), got %q", errUsage, sub, wantArgs, pos)
	}
	switch sub {
	case "status":
		st, err := ac.Status(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			err = printJSON(stdout, st)
		} else {
			printStatus(stdout, st, modelFiles(ctx, st, ac.Key))
		}
		if err == nil && st.Health != "ok" {
			err = fmt.Errorf("%w: %s", errUnhealthy, st.Health)
		}
		return err
	case "nodes":
		r, err := ac.Nodes(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, r)
		}
		printNodes(stdout, r.Nodes, nil)
	case "experts":
		r, err := ac.Experts(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, r)
		}
		printExperts(stdout, r)
	case "drain":
		return drain(ctx, ac, pos[0], *asJSON, stdout)
	case "rebalance":
		r, err := ac.Rebalance(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, r)
		}
		fmt.Fprintf(stdout, "rebalanced: %d replica moves, epoch %d\n", r.Moves, r.Epoch)
	default:
		fmt.Fprint(stderr, clusterUsage)
		return fmt.Errorf("%w: unknown cluster command %q", errUsage, sub)
	}
	return nil
}

// parseInterspersed parses flags that may come before or after positional
// arguments and returns the positional ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parse(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// drain sets the node draining and waits until it holds no experts and no
// sessions.
func drain(ctx context.Context, ac *cluster.AdminClient, node string, asJSON bool, stdout io.Writer) error {
	r, err := ac.Drain(ctx, node)
	if err != nil {
		return err
	}
	if !asJSON {
		fmt.Fprintf(stdout, "%s draining: %d experts, %d sessions to move\n", node, r.Experts, r.Sessions)
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for r.Experts > 0 || r.Sessions > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("drain %s: %d experts and %d sessions left: %w", node, r.Experts, r.Sessions, ctx.Err())
		case <-tick.C:
		}
		nr, err := ac.Nodes(ctx)
		if err != nil {
			continue // the answering node may be changing leader; keep polling
		}
		for _, ns := range nr.Nodes {
			if ns.ID == node {
				r.Experts, r.Sessions, r.Epoch, r.State = ns.Experts, ns.Sessions, nr.Epoch, string(ns.State)
			}
		}
	}
	if asJSON {
		return printJSON(stdout, r)
	}
	fmt.Fprintf(stdout, "%s drained (epoch %d): no experts, no sessions\n", node, r.Epoch)
	return nil
}

func cmdInitTLS(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("cluster init-tls", stderr)
	dir := fs.String("dir", "", "output directory (an existing ca.crt/ca.key there is reused)")
	nodes := fs.String("nodes", "", "comma-separated node ids to issue certificates for")
	hosts := fs.String("hosts", "", "extra SANs (IPs or DNS names) for every node certificate")
	days := fs.Int("days", 365, "validity in days")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *dir == "" || *days <= 0 || fs.NArg() > 0 {
		return fmt.Errorf("%w: init-tls needs --dir and a positive --days", errUsage)
	}
	written, err := cluster.InitTLS(*dir, splitList(*nodes), splitList(*hosts), time.Duration(*days)*24*time.Hour)
	for _, p := range written {
		fmt.Fprintln(stdout, "wrote", p)
	}
	return err
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

func printJSON(w io.Writer, v any) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(v)
}

// modelFiles asks every node (1 s each) how much of the live model's file
// it holds: node id → "held", "partial 43% (7.0 MiB)", "-" (none) or "?"
// (no answer).
func modelFiles(ctx context.Context, st cluster.Status, key string) map[string]string {
	out := map[string]string{}
	describe := func(f *cluster.ModelFileStatus) string {
		switch {
		case f == nil:
			return "-"
		case st.ModelDigest != "" && f.Digest != st.ModelDigest:
			return fmt.Sprintf("other model (%.12s)", f.Digest)
		case f.State == "held":
			return "held"
		}
		pct := 0.0
		if f.Size > 0 {
			pct = 100 * float64(f.HeldBytes) / float64(f.Size)
		}
		return fmt.Sprintf("%s %.0f%% (%s)", f.State, pct, ibytes(f.HeldBytes))
	}
	for _, n := range st.Nodes {
		if n.ID == st.Node {
			out[n.ID] = describe(st.ModelFile)
			continue
		}
		out[n.ID] = "?"
		if n.State == router.NodeDead || n.HTTPAddr == "" {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		ns, err := (&cluster.AdminClient{Base: "http://" + n.HTTPAddr, Key: key}).Status(cctx)
		cancel()
		if err == nil {
			out[n.ID] = describe(ns.ModelFile)
		}
	}
	return out
}

func printStatus(w io.Writer, st cluster.Status, files map[string]string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	leader := st.Leader
	if leader == "" {
		leader = "(none)"
	} else if st.LeaderHTTP != "" {
		leader += "  http://" + st.LeaderHTTP
	}
	model := st.Model
	if model == "" {
		model = "(none)"
	}
	fmt.Fprintf(tw, "node\t%s (%s)\n", st.Node, st.RaftState)
	fmt.Fprintf(tw, "leader\t%s\n", leader)
	fmt.Fprintf(tw, "term\t%d\n", st.Term)
	fmt.Fprintf(tw, "epoch\t%d\n", st.Epoch)
	fmt.Fprintf(tw, "model\t%s\n", model)
	fmt.Fprintf(tw, "replication\t%d\n", st.Replication)
	fmt.Fprintf(tw, "experts\t%d placed\n", st.Experts)
	fmt.Fprintf(tw, "sessions\t%d\n", st.Sessions)
	fmt.Fprintf(tw, "health\t%s\n", st.Health)
	if st.Leader == "" {
		fmt.Fprintf(tw, "\t- no Raft leader: this is node %s's last copy of the map\n", st.Node)
	}
	for _, p := range st.Problems {
		fmt.Fprintf(tw, "\t- %s\n", p)
	}
	tw.Flush()
	fmt.Fprintln(w)
	printNodes(w, st.Nodes, files)
}

// printNodes prints the nodes table, with a MODEL FILE column when files
// is not nil.
func printNodes(w io.Writer, nodes []cluster.NodeStatus, files map[string]string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := "NODE\tSTATE\tRAFT\tGOSSIP\tHTTP\tEXPERTS\tSESSIONS\tCAPACITY\tVERSION"
	if files != nil {
		head += "\tMODEL FILE"
	}
	fmt.Fprintln(tw, head)
	for _, n := range nodes {
		role := "non-voter"
		if n.Voter {
			role = "voter"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s", n.ID, n.State, role, n.Gossip, n.HTTPAddr,
			n.Experts, n.Sessions, ibytes(n.Capacity), n.Version)
		if files != nil {
			fmt.Fprintf(tw, "\t%s", files[n.ID])
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}

// versionText describes an expert's version state: "base" for the model
// file's weights, else the live expert file digest's first 12 digits, with
// a staged version and a rollback target when there are.
func versionText(v router.ExpertVersion) string {
	name := func(d string) string {
		if d == router.BaseVersion {
			return "base"
		}
		return d[:min(12, len(d))]
	}
	s := name(v.Live)
	if v.Staging {
		s += " (staging " + name(v.Staged) + ")"
	}
	if v.HasPrev {
		s += " (prev " + name(v.Prev) + ")"
	}
	return s
}

func printExperts(w io.Writer, r cluster.ExpertsReply) {
	if r.Model == nil {
		fmt.Fprintf(w, "no model set (epoch %d)\n", r.Epoch)
		return
	}
	fmt.Fprintf(w, "model %s v%d: %d layers × %d experts, %s each, replication %d, epoch %d\n\n",
		r.Model.ID, r.Model.Version, r.Model.Layers, r.Model.Experts, ibytes(r.Model.ExpertBytes), r.Replication, r.Epoch)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LAYER\tEXPERT\tREADY\tREPLICAS\tVERSION")
	versions := map[router.ExpertID]router.ExpertVersion{}
	for _, v := range r.Versions {
		versions[v.Expert] = v.State
	}
	placed := map[router.ExpertID]router.PlacementEntry{}
	for _, pe := range r.Placement {
		placed[pe.Expert] = pe
	}
	for l := 0; l < r.Model.Layers; l++ {
		for e := 0; e < r.Model.Experts; e++ {
			pe := placed[router.ExpertID{Layer: l, Index: e}]
			ready := 0
			var reps []string
			for _, rep := range pe.Replicas {
				mark := "…"
				if rep.Ready {
					mark = "✓"
					ready++
				}
				reps = append(reps, fmt.Sprintf("%s/%s%s", rep.Node, rep.Device, mark))
			}
			if len(reps) == 0 {
				reps = []string{"(unplaced)"}
			}
			fmt.Fprintf(tw, "%d\t%d\t%d/%d\t%s\t%s\n", l, e, ready, len(pe.Replicas), strings.Join(reps, " "),
				versionText(versions[router.ExpertID{Layer: l, Index: e}]))
		}
	}
	tw.Flush()
}

func ibytes(b int64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%dB", b)
	}
	div, exp := int64(unit), 0
	for n := b / unit; n >= unit && exp < 4; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(b)/float64(div), "KMGTP"[exp])
}
