package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/conclave-ai/conclave/model"
	"github.com/conclave-ai/conclave/model/gguf"
	"github.com/conclave-ai/conclave/router"
)

// MaxExpertFile bounds an uploaded or fetched expert file (bytes).
const MaxExpertFile = 2 << 30

// ErrExpertFile is wrapped by errors about an expert file: a digest that
// does not match its bytes, a file that is not a valid expert file, or one
// that does not fit the cluster's model.
var ErrExpertFile = errors.New("cluster: bad expert file")

// ErrNoExpertFile means no node could provide an expert file by digest.
var ErrNoExpertFile = errors.New("cluster: expert file not found")

// expertFiles stores expert files (model.ExpertFile) by digest, the hex
// sha256 of the file, under <data-dir>/experts. A file is written to a
// temporary name, verified, synced and renamed, so a stored file is always
// whole: an acknowledged upload survives a crash. Opened files stay mapped
// until Close (the expert actors compute from them).
type expertFiles struct {
	dir string

	mu   sync.Mutex
	open map[string]*openExpert
}

type openExpert struct {
	f *gguf.File
	x *model.ExpertFile
}

func newExpertFiles(dir string) *expertFiles {
	return &expertFiles{dir: dir, open: map[string]*openExpert{}}
}

func (s *expertFiles) path(digest string) string { return filepath.Join(s.dir, digest+".gguf") }

// has reports whether the file is stored.
func (s *expertFiles) has(digest string) bool {
	_, err := os.Stat(s.path(digest))
	return err == nil
}

// put stores the bytes read from r as the file with digest, verifying the
// digest and that the bytes are an expert file. Storing a file that is
// already there reads r to the end and keeps the stored one.
func (s *expertFiles) put(digest string, r io.Reader, check func(*model.ExpertFile) error) (int64, error) {
	if !validDigest(digest) {
		return 0, fmt.Errorf("%w: digest %q is not 64 lowercase hex digits", ErrExpertFile, digest)
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return 0, err
	}
	tmp, err := os.CreateTemp(s.dir, ".upload-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp.Name()) // after a successful rename this fails harmlessly
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r, MaxExpertFile+1))
	if err == nil && n > MaxExpertFile {
		err = fmt.Errorf("%w: over %d bytes", ErrExpertFile, MaxExpertFile)
	}
	if err == nil {
		if got := hex.EncodeToString(h.Sum(nil)); got != digest {
			err = fmt.Errorf("%w: bytes have sha256 %s, not %s", ErrExpertFile, got, digest)
		}
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, err
	}
	f, err := gguf.Open(tmp.Name())
	if err != nil {
		return n, fmt.Errorf("%w: %w", ErrExpertFile, err)
	}
	xf, err := model.LoadExpertFile(f)
	if err == nil && check != nil {
		err = check(xf) // before it is stored: a file refused is not served either
	}
	f.Close()
	if err != nil {
		return n, fmt.Errorf("%w: %w", ErrExpertFile, err)
	}
	if err := os.Rename(tmp.Name(), s.path(digest)); err != nil {
		return n, err
	}
	if d, err := os.Open(s.dir); err == nil {
		d.Sync()
		d.Close()
	}
	return n, nil
}

// load opens (once) and binds the stored file with digest.
func (s *expertFiles) load(digest string) (*model.ExpertFile, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o, ok := s.open[digest]; ok {
		return o.x, nil
	}
	f, err := gguf.Open(s.path(digest))
	if err != nil {
		return nil, err
	}
	x, err := model.LoadExpertFile(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: %w", ErrExpertFile, err)
	}
	s.open[digest] = &openExpert{f: f, x: x}
	return x, nil
}

// close unmaps every opened file. Experts bound from them must be stopped.
func (s *expertFiles) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for d, o := range s.open {
		o.f.Close()
		delete(s.open, d)
	}
}

func validDigest(d string) bool {
	if len(d) != 64 {
		return false
	}
	_, err := hex.DecodeString(d)
	return err == nil && d == lowerHex(d)
}

func lowerHex(d string) string {
	b := []byte(d)
	for i, c := range b {
		if 'A' <= c && c <= 'F' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// handlePutExpertFile is PUT /admin/v1/expert-files/{digest}: the body is
// the expert file. It is stored once its sha256 matches and it parses; when
// this node runs the cluster's model, the expert must fit it.
func (n *Node) handlePutExpertFile(w http.ResponseWriter, r *http.Request) {
	digest := r.PathValue("digest")
	var fits func(*model.ExpertFile) error
	if x := n.xp.Load(); x != nil {
		fits = func(xf *model.ExpertFile) error { return xf.Fits(x.w) }
	}
	size, err := n.files.put(digest, r.Body, fits)
	if err != nil {
		if errors.Is(err, ErrExpertFile) {
			err = fmt.Errorf("%w: %w", errBadRequest, err)
		}
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ExpertFileReply{Digest: digest, Bytes: size})
}

// ExpertFileReply is PUT /admin/v1/expert-files/{digest}.
type ExpertFileReply struct {
	Digest string `json:"digest"`
	Bytes  int64  `json:"bytes"`
}

// handleGetExpertFile is GET /admin/v1/expert-files/{digest}: peers fetch
// the files of versions they must host.
func (n *Node) handleGetExpertFile(w http.ResponseWriter, r *http.Request) {
	digest := r.PathValue("digest")
	if !validDigest(digest) || !n.files.has(digest) {
		writeError(w, fmt.Errorf("%w: %.64q", ErrNoExpertFile, digest))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeFile(w, r, n.files.path(digest))
}

// fetchExpertFile copies the file with digest from a peer: the version's
// source first, then every other known node, verifying the digest.
func (n *Node) fetchExpertFile(ctx context.Context, id router.ExpertID, digest string) error {
	m := n.fsm.Map()
	var order []string
	if src := m.ExpertVersions[id].Source; src != "" && src != n.cfg.ID {
		order = append(order, src)
	}
	for _, nd := range m.ActiveNodes() {
		if nd.ID != n.cfg.ID && !slices.Contains(order, nd.ID) {
			order = append(order, nd.ID)
		}
	}
	var errs []error
	for _, id := range order {
		nd, ok := m.Nodes[id]
		if !ok || nd.HTTPAddr == "" {
			continue
		}
		err := n.fetchExpertFileFrom(ctx, nd.HTTPAddr, digest)
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("from %s: %w", id, err))
	}
	return fmt.Errorf("%w: %.12s: %w", ErrNoExpertFile, digest, errors.Join(errs...))
}

func (n *Node) fetchExpertFileFrom(ctx context.Context, addr, digest string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/admin/v1/expert-files/"+digest, nil)
	if err != nil {
		return err
	}
	resp, err := n.peerHTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	_, err = n.files.put(digest, resp.Body, nil)
	return err
}

// expertVersion is the expert.VersionSource of a node's host: the stored
// file, fetched from a peer first if this node lacks it, checked against
// the node's model.
func (x *Experts) expertVersion(id router.ExpertID, digest string) (*model.Expert, error) {
	n := x.n
	if !n.files.has(digest) {
		ctx, cancel := context.WithTimeout(n.ctx, 2*time.Minute)
		err := n.fetchExpertFile(ctx, id, digest)
		cancel()
		if err != nil {
			return nil, err
		}
	}
	xf, err := n.files.load(digest)
	if err != nil {
		return nil, err
	}
	if err := xf.Fits(x.w); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrExpertFile, err)
	}
	if xf.Layer != id.Layer || xf.Index != id.Index {
		return nil, fmt.Errorf("%w: file holds expert %d of layer %d, placed as %v", ErrExpertFile, xf.Index, xf.Layer, id)
	}
	return &xf.Expert, nil
}
