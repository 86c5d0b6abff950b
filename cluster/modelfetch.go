package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conclave-ai/conclave/model/gguf"
	"github.com/conclave-ai/conclave/router"
	"github.com/hashicorp/go-hclog"
)

// Model distribution. A node started with --model holds the complete file
// and serves its manifest and chunks on the admin API; a node without it
// fetches, from such holders, only the chunks it needs: the GGUF header and
// every non-expert tensor (to run attention, gate and output itself), then
// the slices of the experts the map places on it. Every chunk is verified
// against the manifest, which is verified against the map's digest.

// FetchConfig tunes fetching a model from peers.
type FetchConfig struct {
	// Concurrency is the number of chunk requests in flight.
	Concurrency int
	// ChunkTimeout bounds one chunk request.
	ChunkTimeout time.Duration
	// Rounds is how many times a chunk is tried on every holder before the
	// fetch fails (callers retry the whole fetch later).
	Rounds int
	// Backoff is the wait between rounds.
	Backoff time.Duration
}

// DefaultFetchConfig: 4 chunks in flight, 30 s per chunk, 5 rounds 250 ms
// apart.
func DefaultFetchConfig() FetchConfig {
	return FetchConfig{Concurrency: 4, ChunkTimeout: 30 * time.Second, Rounds: 5, Backoff: 250 * time.Millisecond}
}

// Validate checks the fields.
func (c FetchConfig) Validate() error {
	if c.Concurrency < 1 || c.ChunkTimeout <= 0 || c.Rounds < 1 || c.Backoff < 0 {
		return fmt.Errorf("%w: model fetch: concurrency %d, chunk timeout %v, rounds %d, backoff %v", ErrInvalidConfig,
			c.Concurrency, c.ChunkTimeout, c.Rounds, c.Backoff)
	}
	return nil
}

// ErrNotHeld means a node was asked for a model file it does not hold
// completely (GET …/models/{digest}/…).
var ErrNotHeld = errors.New("cluster: model file not held here")

// maxManifestBytes bounds a fetched manifest (MaxChunks hashes).
const maxManifestBytes = manifestHeader + 32*MaxChunks

// heldModel is the complete model file a node started with.
type heldModel struct {
	path string
	man  *Manifest
}

func (n *Node) heldFile(digest string) (*heldModel, error) {
	if n.held == nil || n.model == nil || n.model.Digest != digest {
		return nil, fmt.Errorf("%w: %s", ErrNotHeld, digest)
	}
	return n.held, nil
}

// handleManifest is GET /admin/v1/models/{digest}/manifest: the manifest's
// canonical encoding (application/octet-stream).
func (n *Node) handleManifest(w http.ResponseWriter, r *http.Request) {
	h, err := n.heldFile(r.PathValue("digest"))
	if err != nil {
		writeError(w, err)
		return
	}
	b, _ := h.man.MarshalBinary()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

// handleChunk is GET /admin/v1/models/{digest}/chunks/{i}: chunk i's bytes,
// streamed from the file.
func (n *Node) handleChunk(w http.ResponseWriter, r *http.Request) {
	h, err := n.heldFile(r.PathValue("digest"))
	if err != nil {
		writeError(w, err)
		return
	}
	i, err := strconv.Atoi(r.PathValue("i"))
	if err != nil || i < 0 || i >= h.man.NumChunks() {
		writeError(w, fmt.Errorf("%w: chunk %q of %d", errBadRequest, r.PathValue("i"), h.man.NumChunks()))
		return
	}
	f, err := os.Open(h.path)
	if err != nil {
		writeError(w, err)
		return
	}
	defer f.Close()
	off, size := h.man.ChunkRange(i)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	io.Copy(w, io.NewSectionReader(f, off, size))
}

// ModelCopy is this node's partial copy of the cluster's model file, under
// <data-dir>/models/<digest>.gguf: a sparse file holding the header and
// dense tensors, plus the experts fetched so far. It implements
// ExpertSource. Safe for concurrent use.
type ModelCopy struct {
	digest string
	path   string
	man    *Manifest
	store  *fileChunkStore
	layout ModelLayout
	f      *chunkFetcher
}

// Path is the model file (map it with gguf.Open; only held ranges may be read).
func (c *ModelCopy) Path() string { return c.path }

// ModelDigest is the digest of the model the copy is of.
func (c *ModelCopy) ModelDigest() string { return c.digest }

// Manifest returns the model's manifest.
func (c *ModelCopy) Manifest() *Manifest { return c.man }

// Holds reports whether every byte of expert id is held and verified.
func (c *ModelCopy) Holds(id router.ExpertID) bool {
	rs, ok := c.layout.Experts[id]
	if !ok {
		return false
	}
	for _, i := range chunksOf(c.man, rs) {
		if !c.store.Has(i) {
			return false
		}
	}
	return true
}

// Fetch fetches the experts ids (their chunks not held yet) from holders.
// It blocks until they are held or it fails (every holder failed Rounds
// times) or ctx ends.
func (c *ModelCopy) Fetch(ctx context.Context, ids []router.ExpertID) error {
	var rs []ByteRange
	for _, id := range ids {
		r, ok := c.layout.Experts[id]
		if !ok {
			return fmt.Errorf("cluster: model %.12s has no expert %v", c.digest, id)
		}
		rs = append(rs, r...)
	}
	return c.f.fetch(ctx, chunksOf(c.man, rs))
}

// CopyStats describes a partial copy.
type CopyStats struct {
	HeldChunks   int   `json:"held_chunks"`
	Chunks       int   `json:"chunks"`
	HeldBytes    int64 `json:"held_bytes"`
	Size         int64 `json:"size"`
	FetchedBytes int64 `json:"fetched_bytes"` // over the network since the copy was opened
	Rejected     int64 `json:"rejected"`      // chunks that failed verification
}

// Stats returns the copy's progress.
func (c *ModelCopy) Stats() CopyStats {
	held, bytes := c.store.count()
	return CopyStats{HeldChunks: held, Chunks: c.man.NumChunks(), HeldBytes: bytes, Size: c.man.Size,
		FetchedBytes: c.f.fetched.Load(), Rejected: c.f.rejected.Load()}
}

// Close syncs the chunk record and closes the file.
func (c *ModelCopy) Close() error { return c.store.Close() }

// FetchModel opens this node's copy of mod's file under
// <data-dir>/models, resuming from what a previous run fetched, and fetches
// what any node needs to load and run the model's dense part (header,
// metadata, tensor directory, non-expert tensors) from the nodes that hold
// the complete file. Experts are fetched later, as placement asks (Fetch).
// It fails when no holder is known or all of them fail; call it again.
func (n *Node) FetchModel(ctx context.Context, mod router.Model) (*ModelCopy, error) {
	if len(mod.Digest) != 64 {
		return nil, fmt.Errorf("cluster: model %q has no digest to fetch by", mod.ID)
	}
	dir := filepath.Join(n.cfg.DataDir, "models")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f := &chunkFetcher{digest: mod.Digest, cfg: n.cfg.Fetch, log: n.log.Named("fetch"),
		client:  n.peerHTTP,
		holders: func() []string { return n.modelHolders(mod.Digest) }}
	man, err := loadOrFetchManifest(ctx, f, filepath.Join(dir, mod.Digest+".manifest"))
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, mod.Digest+".gguf")
	// The held chunks are hashed again once per process: a retry after a
	// failed fetch reopens the store, and hashing a large copy every time
	// would cost minutes of disk and CPU each round.
	_, verified := n.verifiedCopies.Load(path)
	store, err := openFileChunkStore(ctx, path, man, !verified)
	if err != nil {
		return nil, err
	}
	n.verifiedCopies.Store(path, true)
	if store.dropped > 0 {
		n.log.Warn("model copy: chunks recorded as held no longer match the manifest; fetching them again",
			"model", mod.ID, "digest", mod.Digest[:12], "chunks", store.dropped)
	}
	f.man, f.store = man, store
	c := &ModelCopy{digest: mod.Digest, path: path, man: man, store: store, f: f}
	if err := c.fetchDense(ctx); err != nil {
		store.Close()
		return nil, err
	}
	st := c.Stats()
	n.copy.Store(c)
	n.log.Info("model dense part held", "model", mod.ID, "digest", mod.Digest[:12], "held_bytes", st.HeldBytes,
		"size", st.Size, "fetched_bytes", st.FetchedBytes)
	return c, nil
}

// HasModelCopy reports whether this node's data dir holds a copy of the
// model file digest that an earlier run began (its verified manifest):
// FetchModel may then need no other node, when every chunk it needs is
// held already.
func (n *Node) HasModelCopy(digest string) bool {
	if len(digest) != 64 {
		return false
	}
	b, err := os.ReadFile(filepath.Join(n.cfg.DataDir, "models", digest+".manifest"))
	if err != nil {
		return false
	}
	_, err = ParseManifest(b, digest)
	return err == nil
}

// fetchDense fetches the header (growing the prefix until the GGUF header
// parses within held bytes: a parse that ends inside held chunks read only
// verified bytes) and then every non-expert tensor.
func (c *ModelCopy) fetchDense(ctx context.Context) error {
	k := 1
	for {
		if err := c.f.fetch(ctx, seq(min(k, c.man.NumChunks()))); err != nil {
			return err
		}
		held := min(int64(k)*c.man.ChunkSize, c.man.Size)
		gf, err := gguf.Open(c.path)
		if err != nil {
			if k >= c.man.NumChunks() {
				return err
			}
			k *= 2
			continue
		}
		if int64(gf.DataOffset) > held {
			_, end := c.man.ChunksCovering(0, int64(gf.DataOffset))
			k = max(end, k+1)
			gf.Close()
			continue
		}
		c.layout, err = LayoutOf(gf)
		gf.Close()
		if err != nil {
			return err
		}
		break
	}
	return c.f.fetch(ctx, chunksOf(c.man, c.layout.Dense))
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// modelFileStatus describes this node's model file; nil when it has none.
func (n *Node) modelFileStatus() *ModelFileStatus {
	if n.held != nil {
		return &ModelFileStatus{Digest: n.model.Digest, State: "held", CopyStats: CopyStats{
			HeldChunks: n.held.man.NumChunks(), Chunks: n.held.man.NumChunks(), HeldBytes: n.held.man.Size, Size: n.held.man.Size}}
	}
	if c := n.copy.Load(); c != nil {
		return &ModelFileStatus{Digest: c.digest, State: "partial", CopyStats: c.Stats()}
	}
	return nil
}

// modelHolders are the HTTP base URLs of the other live nodes that hold the
// complete file of digest.
func (n *Node) modelHolders(digest string) []string {
	m := n.fsm.Map()
	var out []string
	for _, id := range ModelHosts(m, digest) {
		if nd := m.Nodes[id]; id != n.cfg.ID && nd.HTTPAddr != "" {
			out = append(out, "http://"+nd.HTTPAddr)
		}
	}
	return out
}

// loadOrFetchManifest reads a manifest saved by an earlier run, or fetches
// it from a holder (verified against the digest) and saves it.
func loadOrFetchManifest(ctx context.Context, f *chunkFetcher, path string) (*Manifest, error) {
	if b, err := os.ReadFile(path); err == nil {
		if man, err := ParseManifest(b, f.digest); err == nil {
			return man, nil
		}
	}
	man, b, err := f.fetchManifest(ctx)
	if err != nil {
		return nil, err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return nil, err
	}
	return man, os.Rename(tmp, path)
}

// chunkFetcher fetches verified chunks of one model into a store.
type chunkFetcher struct {
	digest  string
	man     *Manifest
	store   ChunkStore
	holders func() []string // base URLs, in preference order
	client  *http.Client
	cfg     FetchConfig
	log     hclog.Logger

	fetched  atomic.Int64 // bytes received
	rejected atomic.Int64 // chunks that failed verification
}

// fetchManifest asks each holder in turn for the manifest.
func (f *chunkFetcher) fetchManifest(ctx context.Context) (*Manifest, []byte, error) {
	var last error = fmt.Errorf("%w with digest %s", ErrNoHost, f.digest)
	for _, h := range f.holders() {
		b, err := f.get(ctx, h+"/admin/v1/models/"+f.digest+"/manifest", func(r io.Reader) ([]byte, error) {
			return io.ReadAll(io.LimitReader(r, int64(maxManifestBytes)+1))
		})
		if err == nil {
			var man *Manifest
			if man, err = ParseManifest(b, f.digest); err == nil {
				return man, b, nil
			}
		}
		f.log.Warn("manifest fetch failed", "holder", h, "error", err)
		last = err
	}
	return nil, nil, last
}

// get runs one GET with the chunk timeout and hands a 200 body to read.
func (f *chunkFetcher) get(ctx context.Context, url string, read func(io.Reader) ([]byte, error)) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, f.cfg.ChunkTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("cluster: GET %s: %s: %s", url, resp.Status, b)
	}
	return read(resp.Body)
}

// fetch makes every chunk of chunks held, Concurrency at a time, then syncs
// the store.
func (f *chunkFetcher) fetch(ctx context.Context, chunks []int) error {
	var need []int
	for _, i := range chunks {
		if !f.store.Has(i) {
			need = append(need, i)
		}
	}
	if len(need) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan int)
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for range min(f.cfg.Concurrency, len(need)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if err := f.chunk(ctx, i); err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
				}
			}
		}()
	}
feed:
	for _, i := range need {
		select {
		case work <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if err := f.store.Sync(); err != nil && firstErr == nil {
		firstErr = err
	}
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return firstErr
}

// chunk fetches chunk i, trying the holders in turn (starting at a
// different one per chunk to spread load), Rounds rounds.
func (f *chunkFetcher) chunk(ctx context.Context, i int) error {
	var last error
	for round := 0; round < f.cfg.Rounds; round++ {
		hs := f.holders()
		if len(hs) == 0 {
			last = fmt.Errorf("%w with digest %s", ErrNoHost, f.digest)
		}
		for k := range hs {
			h := hs[(i+round+k)%len(hs)]
			_, err := f.get(ctx, fmt.Sprintf("%s/admin/v1/models/%s/chunks/%d", h, f.digest, i), func(r io.Reader) ([]byte, error) {
				n, err := f.store.WriteChunk(i, r)
				f.fetched.Add(n)
				return nil, err
			})
			if err == nil {
				return nil
			}
			if errors.Is(err, ErrChunkDigest) {
				f.rejected.Add(1)
			}
			last = err
			f.log.Warn("chunk fetch failed", "holder", h, "chunk", i, "error", err)
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(f.cfg.Backoff):
		}
	}
	return fmt.Errorf("cluster: model %.12s: chunk %d: every holder failed %d times: %w", f.digest, i, f.cfg.Rounds, last)
}
