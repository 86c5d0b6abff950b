package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
)

// ErrTLS is wrapped by errors about TLS files and handshakes.
var ErrTLS = errors.New("cluster: tls")

// TLSLayout names the files InitTLS writes into a directory: ca.crt and
// ca.key for the cluster CA, NODE.crt and NODE.key for each node.
func TLSLayout(dir, node string) TLSFiles {
	return TLSFiles{
		CAFile:   filepath.Join(dir, "ca.crt"),
		CertFile: filepath.Join(dir, node+".crt"),
		KeyFile:  filepath.Join(dir, node+".key"),
	}
}

// InitTLS creates a cluster CA in dir (reusing ca.crt/ca.key if present) and
// a certificate and key per node, valid for client and server auth, with
// SANs 127.0.0.1, ::1, localhost, the node id and any extra hosts (IPs or DNS
// names). Keys are ECDSA P-256, written with mode 0600. It returns the paths
// written.
func InitTLS(dir string, nodes, hosts []string, validity time.Duration) ([]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var written []string
	caCertPath, caKeyPath := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	caCert, caKey, err := loadCA(caCertPath, caKeyPath)
	if errors.Is(err, os.ErrNotExist) {
		caCert, caKey, err = newCA(validity)
		if err == nil {
			err = writePEM(caCertPath, caKeyPath, caCert.Raw, caKey)
			written = append(written, caCertPath, caKeyPath)
		}
	}
	if err != nil {
		return nil, err
	}
	for _, n := range nodes {
		if !idPattern.MatchString(n) {
			return written, fmt.Errorf("%w: node name %q", ErrTLS, n)
		}
		der, key, err := newLeaf(caCert, caKey, n, hosts, validity)
		if err != nil {
			return written, err
		}
		f := TLSLayout(dir, n)
		if err := writePEM(f.CertFile, f.KeyFile, der, key); err != nil {
			return written, err
		}
		written = append(written, f.CertFile, f.KeyFile)
	}
	return written, nil
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func newCA(validity time.Duration) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "conclave cluster CA", Organization: []string{"conclave"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func newLeaf(ca *x509.Certificate, caKey *ecdsa.PrivateKey, node string, hosts []string, validity time.Duration) ([]byte, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: node, Organization: []string{"conclave"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:     []string{"localhost", node},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	return der, key, err
}

func writePEM(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
}

func loadCA(certPath, keyPath string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		if _, statErr := os.Stat(certPath); errors.Is(statErr, os.ErrNotExist) {
			return nil, nil, statErr
		}
		return nil, nil, fmt.Errorf("%w: CA: %v", ErrTLS, err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, nil, err
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || !cert.IsCA {
		return nil, nil, fmt.Errorf("%w: %s is not an ECDSA CA", ErrTLS, certPath)
	}
	return cert, key, nil
}

// tlsConfigs are a node's mutual-TLS settings: Server requires and verifies
// a client certificate from the cluster CA; Client presents the node's
// certificate and verifies the server against the CA.
type tlsConfigs struct {
	Server *tls.Config
	Client *tls.Config
}

// loadTLS reads the files and builds both sides' configs.
func loadTLS(f TLSFiles) (*tlsConfigs, error) {
	pair, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("%w: node certificate: %v", ErrTLS, err)
	}
	caPEM, err := os.ReadFile(f.CAFile)
	if err != nil {
		return nil, fmt.Errorf("%w: CA: %v", ErrTLS, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%w: no certificate in %s", ErrTLS, f.CAFile)
	}
	return mutualTLS(pair, pool), nil
}

// mutualTLS is both sides' TLS 1.3 settings for a node presenting pair and
// trusting the CAs in pool.
func mutualTLS(pair tls.Certificate, pool *x509.CertPool) *tlsConfigs {
	return &tlsConfigs{
		Server: &tls.Config{
			Certificates: []tls.Certificate{pair},
			ClientCAs:    pool,
			ClientAuth:   tls.RequireAndVerifyClientCert,
			MinVersion:   tls.VersionTLS13,
		},
		Client: &tls.Config{
			Certificates: []tls.Certificate{pair},
			RootCAs:      pool,
			MinVersion:   tls.VersionTLS13,
		},
	}
}

// tlsStreamLayer is a raft.StreamLayer over mutual TLS.
type tlsStreamLayer struct {
	net.Listener
	client *tls.Config
	adv    advertisedAddr
}

func newTLSStreamLayer(addr string, c *tlsConfigs) (*tlsStreamLayer, error) {
	l, err := tls.Listen("tcp", addr, c.Server)
	if err != nil {
		return nil, err
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		l.Close()
		return nil, err
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return &tlsStreamLayer{Listener: l, client: c.Client, adv: advertisedAddr(net.JoinHostPort(host, port))}, nil
}

// Addr is the address as configured (with the port bound), not the one
// the listener resolved: it is what a bootstrapping node writes into the
// Raft configuration, so peers later dial, and verify the certificate for,
// the host name the certificate carries rather than the IP it resolved to.
func (s *tlsStreamLayer) Addr() net.Addr { return s.adv }

// advertisedAddr is a TCP address kept as text (a host name stays a name).
type advertisedAddr string

func (a advertisedAddr) Network() string { return "tcp" }
func (a advertisedAddr) String() string  { return string(a) }

// Dial connects and completes the handshake within timeout, verifying the
// server certificate against the cluster CA for the dialled host.
func (s *tlsStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	host, _, err := net.SplitHostPort(string(address))
	if err != nil {
		return nil, err
	}
	cfg := s.client.Clone()
	cfg.ServerName = host
	d := &net.Dialer{Timeout: timeout}
	return tls.DialWithDialer(d, "tcp", string(address), cfg)
}
