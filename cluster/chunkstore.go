package cluster

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"sync"
)

// ChunkStore keeps the verified chunks of one model file (a Manifest) on
// this node. Only verified chunks count as held, so a node never computes
// on bytes it does not hold. Methods are safe for concurrent use; writes of
// distinct chunks may run in parallel.
type ChunkStore interface {
	// Has reports whether chunk i is held (written and verified). It never
	// blocks on I/O.
	Has(i int) bool
	// WriteChunk streams chunk i from r into place, hashing as it goes, and
	// marks it held only when its length and hash match the manifest
	// (otherwise the error wraps ErrChunkDigest and names the chunk). It
	// returns the bytes read from r. It blocks on r and on disk writes.
	WriteChunk(i int, r io.Reader) (int64, error)
	// Sync makes the held chunks durable: data first, then the record of
	// which chunks are held, so a crash never leaves a chunk recorded as held
	// that was not written.
	Sync() error
	// Close syncs and releases the store.
	Close() error
}

// fileChunkStore is a sparse file of the model's full size plus a bitmap
// file of the held chunks (<path>.chunks). Unfetched ranges are holes; the
// file can be mapped (gguf.Open) while chunks are still arriving.
type fileChunkStore struct {
	man       *Manifest
	f         *os.File
	statePath string

	mu    sync.Mutex
	held  []byte // bitmap, bit i = chunk i
	dirty bool

	dropped int // chunks recorded as held whose bytes no longer verified at open
}

// openFileChunkStore opens (creating, sized to the manifest) the model
// file at path and its bitmap, resuming from chunks held before a restart.
// With verify it first hashes the chunks the bitmap records (reverify);
// ctx stops that.
func openFileChunkStore(ctx context.Context, path string, man *Manifest, verify bool) (*fileChunkStore, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err == nil && st.Size() != man.Size {
		err = f.Truncate(man.Size) // sparse: holes cost no disk
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	s := &fileChunkStore{man: man, f: f, statePath: path + ".chunks", held: make([]byte, (man.NumChunks()+7)/8)}
	if b, err := os.ReadFile(s.statePath); err == nil && len(b) == len(s.held) && st.Size() == man.Size {
		copy(s.held, b)
		if verify {
			if err := s.reverify(ctx); err != nil {
				f.Close()
				return nil, err
			}
		}
	}
	return s, nil
}

// reverify hashes every chunk the record says is held and drops those whose
// bytes no longer match the manifest or cannot be read (a disk error, an
// edited file), so a restarted node fetches them again instead of
// computing on them. It costs a read of the held bytes, as a node with the
// whole file pays at start; callers do it once per process (FetchModel).
func (s *fileChunkStore) reverify(ctx context.Context) error {
	var buf []byte
	for i := range s.man.NumChunks() {
		if s.held[i/8]&(1<<(i%8)) == 0 {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		off, n := s.man.ChunkRange(i)
		if int64(cap(buf)) < n {
			buf = make([]byte, n)
		}
		b := buf[:n]
		if _, err := s.f.ReadAt(b, off); err != nil || s.man.verifySum(i, n, sha256.Sum256(b)) != nil {
			s.held[i/8] &^= 1 << (i % 8)
			s.dirty = true
			s.dropped++
		}
	}
	return nil
}

func (s *fileChunkStore) Has(i int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return i >= 0 && i < s.man.NumChunks() && s.held[i/8]&(1<<(i%8)) != 0
}

// count returns the held chunks and their bytes.
func (s *fileChunkStore) count() (chunks int, bytes int64) {
	for i := range s.man.NumChunks() {
		if s.Has(i) {
			_, n := s.man.ChunkRange(i)
			chunks, bytes = chunks+1, bytes+n
		}
	}
	return chunks, bytes
}

func (s *fileChunkStore) WriteChunk(i int, r io.Reader) (int64, error) {
	if i < 0 || i >= s.man.NumChunks() {
		return 0, fmt.Errorf("%w: chunk %d of %d does not exist", ErrChunkDigest, i, s.man.NumChunks())
	}
	off, n := s.man.ChunkRange(i)
	h := sha256.New()
	// One byte more than the chunk tells a too-long answer from a right one.
	got, err := io.Copy(io.MultiWriter(h, io.NewOffsetWriter(s.f, off)), io.LimitReader(r, n+1))
	if err != nil {
		return got, fmt.Errorf("cluster: model chunk %d: %w", i, err)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	if err := s.man.verifySum(i, got, sum); err != nil {
		// The bytes written stay unreferenced: the chunk is not marked held.
		return got, err
	}
	s.mu.Lock()
	s.held[i/8] |= 1 << (i % 8)
	s.dirty = true
	s.mu.Unlock()
	return got, nil
}

func (s *fileChunkStore) Sync() error {
	s.mu.Lock()
	if !s.dirty {
		s.mu.Unlock()
		return nil
	}
	held := append([]byte(nil), s.held...)
	s.dirty = false
	s.mu.Unlock()
	if err := s.f.Sync(); err != nil {
		return err
	}
	tmp := s.statePath + ".tmp"
	if err := os.WriteFile(tmp, held, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, s.statePath)
}

func (s *fileChunkStore) Close() error {
	err := s.Sync()
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// MemChunkStore is an in-memory ChunkStore for tests.
type MemChunkStore struct {
	Man  *Manifest
	mu   sync.Mutex
	Data []byte // the whole file; unheld ranges are zero
	held map[int]bool
}

// NewMemChunkStore returns an empty in-memory store for man.
func NewMemChunkStore(man *Manifest) *MemChunkStore {
	return &MemChunkStore{Man: man, Data: make([]byte, man.Size), held: map[int]bool{}}
}

func (s *MemChunkStore) Has(i int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held[i]
}

func (s *MemChunkStore) WriteChunk(i int, r io.Reader) (int64, error) {
	if i < 0 || i >= s.Man.NumChunks() {
		return 0, fmt.Errorf("%w: chunk %d of %d does not exist", ErrChunkDigest, i, s.Man.NumChunks())
	}
	off, n := s.Man.ChunkRange(i)
	b, err := io.ReadAll(io.LimitReader(r, n+1))
	if err != nil {
		return int64(len(b)), err
	}
	if err := s.Man.VerifyChunk(i, b); err != nil {
		return int64(len(b)), err
	}
	s.mu.Lock()
	copy(s.Data[off:], b)
	s.held[i] = true
	s.mu.Unlock()
	return int64(len(b)), nil
}

func (s *MemChunkStore) Sync() error  { return nil }
func (s *MemChunkStore) Close() error { return nil }
