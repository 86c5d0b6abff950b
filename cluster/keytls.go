package cluster

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"time"
)

// keyCAInfo separates the CA key derived from the cluster key from every
// other use of that key (gossip encryption, request signatures).
const keyCAInfo = "conclave cluster CA v1"

// keyTLS is mutual TLS for the Raft transport and the actor remote when a
// cluster has a key but no certificate files (Config.TLS): every node
// derives the same Ed25519 CA key from the cluster key, and signs a fresh
// certificate of its own at start. A peer is whoever presents a certificate
// from that CA, that is, a holder of the cluster key; anyone else, and a
// node of another cluster whose address it happens to dial, fails the
// handshake. Without it the Raft port took AppendEntries and RequestVote
// from any host that reached it, whatever gossip's key said.
//
// The CA certificate is deterministic in all that matters for verification
// (subject, key, key id), so each node builds its own copy. Leaf
// certificates name the node and the hosts of its Raft and actor addresses
// (and loopback), which is what peers dial and verify.
func keyTLS(key []byte, node string, addrs ...string) (*tlsConfigs, error) {
	seed, err := hkdf.Key(sha256.New, key, nil, keyCAInfo, ed25519.SeedSize)
	if err != nil {
		return nil, fmt.Errorf("%w: deriving the CA key: %v", ErrTLS, err)
	}
	caKey := ed25519.NewKeyFromSeed(seed)
	// Fixed validity: a CA every node rebuilds needs no expiry of its own;
	// rotating the cluster key is how it is replaced.
	notBefore := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	notAfter := time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "conclave cluster-key CA", Organization: []string{"conclave"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("%w: CA certificate: %v", ErrTLS, err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("%w: CA certificate: %v", ErrTLS, err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	leaf := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: node, Organization: []string{"conclave"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:     []string{"localhost", node},
	}
	for _, a := range addrs {
		h, _, err := net.SplitHostPort(a)
		if err != nil || h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			leaf.IPAddresses = append(leaf.IPAddresses, ip)
		} else {
			leaf.DNSNames = append(leaf.DNSNames, h)
		}
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("%w: node certificate: %v", ErrTLS, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return mutualTLS(tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}, pool), nil
}
