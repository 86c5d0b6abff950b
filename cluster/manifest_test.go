package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestChunkSizeFor(t *testing.T) {
	for _, tc := range []struct {
		size, want int64
	}{
		{0, MinChunkSize},
		{1, MinChunkSize},
		{MinChunkSize * MaxChunks, MinChunkSize},
		{MinChunkSize*MaxChunks + 1, 2 * MinChunkSize},
		{1 << 40, 16 << 20},
	} {
		t.Run(strconv.FormatInt(tc.size, 10), func(t *testing.T) {
			got := ChunkSizeFor(tc.size)
			if got != tc.want {
				t.Errorf("ChunkSizeFor(%d) = %d, want %d", tc.size, got, tc.want)
			}
			if (tc.size+got-1)/got > MaxChunks {
				t.Errorf("%d chunks > MaxChunks", (tc.size+got-1)/got)
			}
		})
	}
}

func TestManifestRoundTrip(t *testing.T) {
	for _, size := range []int{0, 1, MinChunkSize - 1, MinChunkSize, 3*MinChunkSize + 17} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			data := randomBytes(size, uint64(size))
			man, err := ComputeManifest(bytes.NewReader(data), int64(size))
			if err != nil {
				t.Fatal(err)
			}
			if want := (size + MinChunkSize - 1) / MinChunkSize; man.NumChunks() != want {
				t.Fatalf("%d chunks, want %d", man.NumChunks(), want)
			}
			b, _ := man.MarshalBinary()
			back, err := ParseManifest(b, man.Digest())
			if err != nil {
				t.Fatal(err)
			}
			if back.Digest() != man.Digest() || back.Size != man.Size || len(back.Hashes) != len(man.Hashes) {
				t.Fatalf("round trip: %+v, want %+v", back, man)
			}
			for i := range man.NumChunks() {
				off, n := man.ChunkRange(i)
				if err := man.VerifyChunk(i, data[off:off+n]); err != nil {
					t.Errorf("chunk %d: %v", i, err)
				}
			}
			// Any change to the encoding changes the digest.
			if len(b) > 0 {
				b[len(b)-1] ^= 1
				if _, err := ParseManifest(b, man.Digest()); !errors.Is(err, ErrManifest) {
					t.Errorf("tampered manifest: %v, want ErrManifest", err)
				}
			}
		})
	}
	// The digest depends on content, not only on size.
	a, _ := ComputeManifest(bytes.NewReader(randomBytes(1000, 1)), 1000)
	b, _ := ComputeManifest(bytes.NewReader(randomBytes(1000, 2)), 1000)
	if a.Digest() == b.Digest() {
		t.Error("different files, same digest")
	}
	if _, err := ComputeManifest(bytes.NewReader(make([]byte, 10)), 20); err == nil {
		t.Error("short reader accepted")
	}
}

func TestChunksCovering(t *testing.T) {
	man := &Manifest{Size: 10 * MinChunkSize, ChunkSize: MinChunkSize}
	for _, tc := range []struct {
		name       string
		off, n     int64
		first, end int
	}{
		{"empty", 5, 0, 0, 0},
		{"first byte", 0, 1, 0, 1},
		{"one chunk exactly", MinChunkSize, MinChunkSize, 1, 2},
		{"straddles", MinChunkSize - 1, 2, 0, 2},
		{"clipped at the end", 9 * MinChunkSize, 5 * MinChunkSize, 9, 10},
		{"past the end", 10 * MinChunkSize, 1, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first, end := man.ChunksCovering(tc.off, tc.n)
			if first != tc.first || end != tc.end {
				t.Errorf("ChunksCovering(%d, %d) = [%d, %d), want [%d, %d)", tc.off, tc.n, first, end, tc.first, tc.end)
			}
		})
	}
}

func TestChunkStoreRejectsCorruptChunk(t *testing.T) {
	data := randomBytes(3*MinChunkSize+100, 7)
	man, err := ComputeManifest(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "m.gguf")
	for _, tc := range []struct {
		name  string
		store func(t *testing.T) ChunkStore
	}{
		{"file", func(t *testing.T) ChunkStore {
			s, err := openFileChunkStore(context.Background(), path, man, true)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}},
		{"memory", func(t *testing.T) ChunkStore { return NewMemChunkStore(man) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.store(t)
			off, n := man.ChunkRange(2)
			bad := bytes.Clone(data[off : off+n])
			bad[100] ^= 0x40
			_, err := s.WriteChunk(2, bytes.NewReader(bad))
			if !errors.Is(err, ErrChunkDigest) || !strings.Contains(err.Error(), "chunk 2 ") {
				t.Fatalf("corrupt chunk: %v, want ErrChunkDigest naming chunk 2", err)
			}
			if s.Has(2) {
				t.Fatal("a corrupt chunk is held")
			}
			// Too long and too short answers are rejected too.
			if _, err := s.WriteChunk(1, bytes.NewReader(data[MinChunkSize:3*MinChunkSize])); !errors.Is(err, ErrChunkDigest) {
				t.Errorf("long chunk: %v", err)
			}
			if _, err := s.WriteChunk(1, bytes.NewReader(data[MinChunkSize:MinChunkSize+10])); !errors.Is(err, ErrChunkDigest) {
				t.Errorf("short chunk: %v", err)
			}
			if _, err := s.WriteChunk(2, bytes.NewReader(data[off:off+n])); err != nil || !s.Has(2) {
				t.Fatalf("good chunk: %v held=%v", err, s.Has(2))
			}
			if err := s.Sync(); err != nil {
				t.Fatal(err)
			}
		})
	}
	// The file store resumes: chunk 2 is still held after reopening, and
	// its bytes are in place.
	s, err := openFileChunkStore(context.Background(), path, man, true)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Has(2) || s.Has(1) || s.Has(0) {
		t.Errorf("after reopen: held 0:%v 1:%v 2:%v, want only 2", s.Has(0), s.Has(1), s.Has(2))
	}
	got, _ := os.ReadFile(path)
	off, n := man.ChunkRange(2)
	if int64(len(got)) != man.Size || !bytes.Equal(got[off:off+n], data[off:off+n]) {
		t.Error("chunk 2's bytes are not in the file")
	}
}

// TestChunkStoreReverifiesAtOpen: a held chunk whose bytes change on disk
// while the store is closed is no longer held when it is opened again, and
// the record is rewritten; the others stay held.
func TestChunkStoreReverifiesAtOpen(t *testing.T) {
	data := randomBytes(3*MinChunkSize+100, 11)
	man, err := ComputeManifest(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "m.gguf")
	s, err := openFileChunkStore(context.Background(), path, man, true)
	if err != nil {
		t.Fatal(err)
	}
	for i := range man.NumChunks() {
		off, n := man.ChunkRange(i)
		if _, err := s.WriteChunk(i, bytes.NewReader(data[off:off+n])); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	off, _ := man.ChunkRange(1)
	if _, err := f.WriteAt([]byte{data[off+5] ^ 1}, off+5); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s, err = openFileChunkStore(context.Background(), path, man, true)
	if err != nil {
		t.Fatal(err)
	}
	if s.Has(1) || !s.Has(0) || !s.Has(2) || !s.Has(3) || s.dropped != 1 {
		t.Errorf("after reopen: held %v %v %v %v, dropped %d; want chunk 1 dropped, the others held",
			s.Has(0), s.Has(1), s.Has(2), s.Has(3), s.dropped)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Unverified, an open trusts the record; verifying stops at a canceled
	// context.
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := openFileChunkStore(canceled, path, man, true); !errors.Is(err, context.Canceled) {
		t.Errorf("verifying open with a canceled context: %v", err)
	}
	// The record was rewritten: a third open finds chunk 1 missing without
	// hashing it.
	s, err = openFileChunkStore(context.Background(), path, man, true)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Has(1) || s.dropped != 0 {
		t.Errorf("third open: chunk 1 held %v, dropped %d", s.Has(1), s.dropped)
	}
}

// TestFetcherRetriesAnotherHolder: one holder serves corrupt chunks, the
// other good ones; every chunk ends up held and verified, and the corrupt
// answers are counted as rejected.
func TestFetcherRetriesAnotherHolder(t *testing.T) {
	data := randomBytes(5*MinChunkSize+3, 9)
	man, _ := ComputeManifest(bytes.NewReader(data), int64(len(data)))
	digest := man.Digest()
	serve := func(corrupt bool) *httptest.Server {
		mux := http.NewServeMux()
		mux.HandleFunc("GET /admin/v1/models/{digest}/manifest", func(w http.ResponseWriter, r *http.Request) {
			b, _ := man.MarshalBinary()
			if corrupt {
				b[len(b)-1] ^= 1
			}
			w.Write(b)
		})
		mux.HandleFunc("GET /admin/v1/models/{digest}/chunks/{i}", func(w http.ResponseWriter, r *http.Request) {
			i, _ := strconv.Atoi(r.PathValue("i"))
			off, n := man.ChunkRange(i)
			b := bytes.Clone(data[off : off+n])
			if corrupt {
				b[0] ^= 1
			}
			w.Write(b)
		})
		s := httptest.NewServer(mux)
		t.Cleanup(s.Close)
		return s
	}
	bad, good := serve(true), serve(false)
	store := NewMemChunkStore(man)
	cfg := DefaultFetchConfig()
	cfg.Backoff = time.Millisecond
	f := &chunkFetcher{digest: digest, store: store, cfg: cfg, client: &http.Client{},
		log:     hclog.New(&hclog.LoggerOptions{Output: io.Discard}),
		holders: func() []string { return []string{bad.URL, good.URL} }}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, _, err := f.fetchManifest(ctx)
	if err != nil || got.Digest() != digest {
		t.Fatalf("manifest: %v", err)
	}
	f.man = got
	if err := f.fetch(ctx, seq(man.NumChunks())); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(store.Data, data) {
		t.Error("fetched bytes differ from the file")
	}
	if f.rejected.Load() == 0 {
		t.Error("no corrupt chunk was rejected")
	}
	t.Logf("fetched %d bytes, %d corrupt answers rejected", f.fetched.Load(), f.rejected.Load())

	// With only the corrupt holder, the fetch fails naming the chunk.
	f.holders = func() []string { return []string{bad.URL} }
	f.cfg.Rounds = 2
	f.store = NewMemChunkStore(man)
	err = f.fetch(ctx, []int{3})
	if !errors.Is(err, ErrChunkDigest) || !strings.Contains(err.Error(), "chunk 3") {
		t.Errorf("corrupt-only holder: %v, want ErrChunkDigest naming chunk 3", err)
	}
}

// FuzzParseManifest: any input parses or fails cleanly, and what parses
// (against its own hash) encodes back to the same bytes.
func FuzzParseManifest(f *testing.F) {
	for _, size := range []int{0, 5, MinChunkSize + 1} {
		man, _ := ComputeManifest(bytes.NewReader(make([]byte, size)), int64(size))
		b, _ := man.MarshalBinary()
		f.Add(b)
	}
	f.Add([]byte(manifestMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		sum := sha256.Sum256(b)
		man, err := ParseManifest(b, hex.EncodeToString(sum[:]))
		if err != nil {
			if !errors.Is(err, ErrManifest) {
				t.Fatalf("error %v does not wrap ErrManifest", err)
			}
			return
		}
		back, _ := man.MarshalBinary()
		if !bytes.Equal(back, b) {
			t.Fatal("parsed manifest encodes differently")
		}
	})
}
