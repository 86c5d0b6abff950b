package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/conclave-ai/conclave/cluster"
	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/gguf"
	"github.com/conclave-ai/conclave/router"
)

const expertUsage = `Usage:
  conclave expert update   --layer L --expert E --from FILE.gguf [--addr URL] [--timeout 2m] [--json]
  conclave expert rollback --layer L --expert E [--addr URL] [--timeout 2m] [--json]

update takes expert E of layer L from FILE.gguf (a model of the same shape, or
an expert file), uploads it to the node at --addr, loads it beside the live
version on every replica and flips the cluster map to it; in-flight requests
finish. rollback flips back to the previous version, which stays loaded.
`

// cmdExpert runs hot expert updates against a node's admin API.
func cmdExpert(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, expertUsage)
		return fmt.Errorf("%w: expert needs a command", errUsage)
	}
	sub, args := args[0], args[1:]
	if isHelp(sub) {
		fmt.Fprint(stdout, expertUsage)
		return nil
	}
	if sub != "update" && sub != "rollback" {
		fmt.Fprint(stderr, expertUsage)
		return fmt.Errorf("%w: unknown expert command %q", errUsage, sub)
	}
	fs := newFlags("expert "+sub, stderr)
	addr := fs.String("addr", "http://127.0.0.1:8080", "admin API of any node")
	akey := fs.String("admin-key", "", adminKeyUsage)
	layer := fs.Int("layer", -1, "layer of the expert (required)")
	index := fs.Int("expert", -1, "expert index within the layer (required)")
	from := fs.String("from", "", "update: GGUF model or expert file holding the new weights")
	timeout := fs.Duration("timeout", cluster.DefaultExpertUpdateTimeout, "how long every replica may take to load the version")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) != 0:
		return fmt.Errorf("%w: expert %s takes no arguments, got %q", errUsage, sub, pos)
	case *layer < 0 || *index < 0:
		return fmt.Errorf("%w: expert %s needs --layer and --expert", errUsage, sub)
	case sub == "update" && *from == "":
		return fmt.Errorf("%w: expert update needs --from FILE.gguf", errUsage)
	}
	base := *addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	ac := &cluster.AdminClient{Base: base, Key: adminKey(*akey)}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout+30*time.Second)
	defer cancel()
	id := router.ExpertID{Layer: *layer, Index: *index}
	req := cluster.ExpertUpdateRequest{Expert: id, TimeoutMS: timeout.Milliseconds()}
	var rep cluster.ExpertUpdateReply
	if sub == "update" {
		file, err := expertFileFrom(*from, id)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(file)
		req.Version = hex.EncodeToString(sum[:])
		if _, err := ac.PutExpertFile(ctx, req.Version, file); err != nil {
			return fmt.Errorf("upload expert file: %w", err)
		}
		rep, err = ac.UpdateExpert(ctx, req)
		if err != nil {
			return err
		}
	} else if rep, err = ac.RollbackExpert(ctx, req); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, rep)
	}
	fmt.Fprintf(stdout, "expert %d of layer %d: live %s, previous %s; %d replicas loaded it in %d ms (epoch %d",
		id.Index, id.Layer, versionName(rep.State.Live), versionName(rep.State.Prev), rep.Replicas, rep.StagedMS, rep.Epoch)
	if rep.Nodes > 0 {
		fmt.Fprintf(stdout, ", in effect on %d of %d nodes", rep.Applied, rep.Nodes)
	}
	fmt.Fprintln(stdout, ")")
	if rep.Applied < rep.Nodes {
		fmt.Fprintf(stderr, "conclave: %d of %d nodes had not applied the change when the answer came: they use the new live version once they do\n",
			rep.Nodes-rep.Applied, rep.Nodes)
	}
	return nil
}

func versionName(v string) string {
	if v == router.BaseVersion {
		return "base"
	}
	return v[:min(12, len(v))]
}

// expertFileFrom returns the expert file for expert id taken from path: a
// model file of the cluster's shape, or an expert file for id.
func expertFileFrom(path string, id router.ExpertID) ([]byte, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if arch, _ := f.StringOr("general.architecture", ""); arch == model.ExpertFileArch {
		x, err := model.LoadExpertFile(f)
		if err != nil {
			return nil, err
		}
		if x.Layer != id.Layer || x.Index != id.Index {
			return nil, fmt.Errorf("%w: %s holds expert %d of layer %d, not %d of layer %d",
				errUsage, path, x.Index, x.Layer, id.Index, id.Layer)
		}
		return os.ReadFile(path)
	}
	w, err := model.Load(f)
	if err != nil {
		return nil, err
	}
	return model.EncodeExpertFile(w, id.Layer, id.Index, fmt.Sprintf("%s layer %d expert %d", filepath.Base(path), id.Layer, id.Index))
}
