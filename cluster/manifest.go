package cluster

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// A model file is identified in the cluster by the root of a hash list, as
// BitTorrent does: the file is cut into fixed-size chunks, the manifest
// lists their sha256 hashes, and the model digest (router.Model.Digest) is
// the sha256 of the manifest's canonical encoding. A node that fetches the
// file from a peer can then verify the manifest against the digest in the
// Raft-replicated map, and every chunk against the manifest, as it arrives,
// without ever holding the whole file.

const (
	// MinChunkSize is the smallest chunk: small files are still cut fine
	// enough that a node fetches only about the experts it hosts.
	MinChunkSize = 64 << 10
	// MaxChunks bounds a manifest at 2 MiB of hashes: bigger files get
	// bigger chunks (a power of two), so a 1 TB file has 16 MiB chunks.
	MaxChunks = 1 << 16

	manifestMagic  = "conclave-manifest-v1\n"
	manifestHeader = len(manifestMagic) + 16 // magic, size, chunk size
)

var (
	// ErrChunkDigest means a chunk's bytes do not hash to the manifest's
	// entry for it (a corrupt or wrong peer); it is never marked held.
	ErrChunkDigest = errors.New("cluster: model chunk digest mismatch")
	// ErrManifest means a manifest is malformed or does not hash to the
	// model digest it was fetched for.
	ErrManifest = errors.New("cluster: bad model manifest")
)

// Manifest describes a model file as chunks and their sha256 hashes.
type Manifest struct {
	Size      int64      // file bytes
	ChunkSize int64      // bytes per chunk, the last one shorter; ChunkSizeFor(Size)
	Hashes    [][32]byte // sha256 of each chunk, ⌈Size/ChunkSize⌉ of them
}

// ChunkSizeFor is the chunk size of a file of size bytes: the smallest power
// of two ≥ MinChunkSize that cuts it into at most MaxChunks chunks.
func ChunkSizeFor(size int64) int64 {
	c := int64(MinChunkSize)
	for (size+c-1)/c > MaxChunks {
		c <<= 1
	}
	return c
}

// ComputeManifest reads size bytes from r (streamed, one chunk buffered) and
// hashes them chunk by chunk.
func ComputeManifest(r io.Reader, size int64) (*Manifest, error) {
	if size < 0 {
		return nil, fmt.Errorf("%w: negative size %d", ErrManifest, size)
	}
	m := &Manifest{Size: size, ChunkSize: ChunkSizeFor(size)}
	buf := make([]byte, min(m.ChunkSize, max(size, 1)))
	h := sha256.New()
	for i := 0; i < m.NumChunks(); i++ {
		_, n := m.ChunkRange(i)
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			return nil, fmt.Errorf("cluster: manifest: chunk %d: %w", i, err)
		}
		h.Reset()
		h.Write(buf[:n])
		var sum [32]byte
		h.Sum(sum[:0])
		m.Hashes = append(m.Hashes, sum)
	}
	return m, nil
}

// NumChunks is the number of chunks.
func (m *Manifest) NumChunks() int { return int((m.Size + m.ChunkSize - 1) / m.ChunkSize) }

// ChunkRange is chunk i's file offset and length in bytes.
func (m *Manifest) ChunkRange(i int) (off, n int64) {
	off = int64(i) * m.ChunkSize
	return off, min(m.ChunkSize, m.Size-off)
}

// ChunksCovering returns the chunk indexes [first, end) holding the bytes
// [off, off+n) of the file (clipped to it); empty when n ≤ 0.
func (m *Manifest) ChunksCovering(off, n int64) (first, end int) {
	if n <= 0 || off >= m.Size {
		return 0, 0
	}
	off = max(off, 0)
	last := min(off+n, m.Size) - 1
	return int(off / m.ChunkSize), int(last/m.ChunkSize) + 1
}

// MarshalBinary is the canonical encoding the digest is taken over: the
// magic line, size and chunk size as little-endian uint64, then the hashes.
func (m *Manifest) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, manifestHeader+32*len(m.Hashes))
	b = append(b, manifestMagic...)
	b = binary.LittleEndian.AppendUint64(b, uint64(m.Size))
	b = binary.LittleEndian.AppendUint64(b, uint64(m.ChunkSize))
	for _, h := range m.Hashes {
		b = append(b, h[:]...)
	}
	return b, nil
}

// Digest is the model digest: hex sha256 of the canonical encoding.
func (m *Manifest) Digest() string {
	b, _ := m.MarshalBinary()
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// ParseManifest decodes a canonical encoding and checks that it hashes to
// digest (hex) and is self-consistent; errors wrap ErrManifest.
func ParseManifest(b []byte, digest string) (*Manifest, error) {
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != digest {
		return nil, fmt.Errorf("%w: hashes to %s, want %s", ErrManifest, got, digest)
	}
	if len(b) < manifestHeader || !bytes.HasPrefix(b, []byte(manifestMagic)) || (len(b)-manifestHeader)%32 != 0 {
		return nil, fmt.Errorf("%w: %d bytes is not a manifest", ErrManifest, len(b))
	}
	m := &Manifest{
		Size:      int64(binary.LittleEndian.Uint64(b[len(manifestMagic):])),
		ChunkSize: int64(binary.LittleEndian.Uint64(b[len(manifestMagic)+8:])),
	}
	if m.Size < 0 || m.ChunkSize != ChunkSizeFor(m.Size) || (len(b)-manifestHeader)/32 != m.NumChunks() {
		return nil, fmt.Errorf("%w: size %d, chunk size %d, %d hashes", ErrManifest, m.Size, m.ChunkSize, (len(b)-manifestHeader)/32)
	}
	for p := manifestHeader; p < len(b); p += 32 {
		m.Hashes = append(m.Hashes, [32]byte(b[p:p+32]))
	}
	return m, nil
}

// VerifyChunk checks data against chunk i's length and hash; the error
// wraps ErrChunkDigest and names the chunk.
func (m *Manifest) VerifyChunk(i int, data []byte) error {
	return m.verifySum(i, int64(len(data)), sha256.Sum256(data))
}

func (m *Manifest) verifySum(i int, n int64, sum [32]byte) error {
	if i < 0 || i >= m.NumChunks() {
		return fmt.Errorf("%w: chunk %d of %d does not exist", ErrChunkDigest, i, m.NumChunks())
	}
	off, want := m.ChunkRange(i)
	if n != want {
		return fmt.Errorf("%w: chunk %d (offset %d): %d bytes, want %d", ErrChunkDigest, i, off, n, want)
	}
	if sum != m.Hashes[i] {
		return fmt.Errorf("%w: chunk %d (offset %d, %d bytes): sha256 %x, want %x", ErrChunkDigest, i, off, n, sum[:6], m.Hashes[i][:6])
	}
	return nil
}
