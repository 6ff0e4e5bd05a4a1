package mqtttest

import (
	"crypto"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/transport/mqtt/mosquitto"
)

// MosquittoPath is where Debian's mosquitto package installs the broker. When it is not there,
// StartMosquitto looks for "mosquitto" in PATH.
const MosquittoPath = "/usr/sbin/mosquitto"

// Timeouts of the Mosquitto fixture. They bound waits for events; nothing sleeps for them.
const (
	mosquittoReadyTimeout = 20 * time.Second
	mosquittoStopTimeout  = 15 * time.Second
)

// Mosquitto is a real Mosquitto process for one test, configured by transport/mqtt/mosquitto
// with its configuration, ACL, certificates, persistence and log under t.TempDir().
type Mosquitto struct {
	pki   *PKI
	opts  options
	bin   string
	dir   string
	port  int
	probe *tls.Config // for readiness checks

	mu   sync.Mutex
	proc *process // nil while stopped
}

// process is one run of the mosquitto binary.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once cmd.Wait returned
	err  error         // cmd.Wait's result, set before done is closed
}

// StartMosquitto starts /usr/sbin/mosquitto on a free 127.0.0.1 port with TLS from pki and an
// ACL from transport/mqtt/mosquitto, waits until it accepts TLS connections, and stops it when
// the test ends. Mosquitto's output is shown if the test fails. A missing mosquitto binary
// fails the test.
//
// The ACL has a user block for every non-device identity pki issued before this call and for
// those named by WithIdentities; Restart renders it again.
func StartMosquitto(t testing.TB, pki *PKI, opts ...Option) *Mosquitto {
	t.Helper()
	o := collect(opts)
	if o.onPublish != nil {
		t.Fatalf("mqtttest: WithOnPublish needs the embedded broker: Mosquitto cannot observe publishes")
	}
	if o.now != nil {
		t.Fatalf("mqtttest: WithClock needs the embedded broker: Mosquitto uses the system clock")
	}
	m := &Mosquitto{pki: pki, opts: o, bin: mosquittoBinary(t), dir: t.TempDir()}
	m.writeStatic(t)
	t.Cleanup(func() {
		m.Stop(t)
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", m.log())
		}
	})
	// Another process may take the free port between its discovery and Mosquitto's bind; try
	// a few ports before giving up.
	var err error
	for range 5 {
		m.port = freePort(t)
		if err = m.start(t); err == nil {
			return m
		}
		if !strings.Contains(m.log(), "Address already in use") {
			break
		}
	}
	t.Fatalf("mqtttest: start mosquitto: %v\n%s", err, m.log())
	return nil
}

func mosquittoBinary(t testing.TB) string {
	t.Helper()
	if fi, err := os.Stat(MosquittoPath); err == nil && !fi.IsDir() {
		return MosquittoPath
	}
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	t.Fatal("mosquitto is not installed: run apt-get install mosquitto (make test installs it)")
	return ""
}

func (m *Mosquitto) path(name string) string { return filepath.Join(m.dir, name) }

// writeStatic writes what does not change across restarts: certificates, key, CRL and the
// persistence directory.
func (m *Mosquitto) writeStatic(t testing.TB) {
	t.Helper()
	server := m.pki.ServerCert(t)
	key, err := certs.MarshalKeyPEM(server.PrivateKey.(crypto.Signer))
	mustf(t, err, "server key")
	type file struct {
		name string
		data []byte
		mode os.FileMode
	}
	files := []file{
		{"ca.pem", m.pki.CAPEM, 0o644},
		{"server.pem", certs.EncodeCertPEM(server.Leaf), 0o644},
		{"server.key", key, 0o600},
	}
	if m.opts.crl != nil {
		revokedSet(t, m.pki, m.opts.crl) // fail early on a CRL Mosquitto would reject
		files = append(files, file{"crl.pem", m.opts.crl, 0o644})
	}
	for _, f := range files {
		mustf(t, os.WriteFile(m.path(f.name), f.data, f.mode), "write %s", f.name)
	}
	mustf(t, os.Mkdir(m.path("data"), 0o700), "persistence dir")

	m.probe = m.pki.ClientTLS(t, m.pki.issue(t, certs.IssueRequest{
		Role: certs.RoleDevice, Name: "mqtttest-probe", Now: time.Now(),
	}))
}

// writeConfig renders mosquitto.conf and the ACL for the current port and identities.
func (m *Mosquitto) writeConfig(t testing.TB) {
	t.Helper()
	conf := mosquitto.Conf{
		Bind:           "127.0.0.1",
		Port:           m.port,
		CAFile:         m.path("ca.pem"),
		CertFile:       m.path("server.pem"),
		KeyFile:        m.path("server.key"),
		ACLFile:        m.path("acl"),
		PersistenceDir: m.path("data"),
		LogDest:        "stderr",
	}
	if m.opts.crl != nil {
		conf.CRLFile = m.path("crl.pem")
	}
	if os.Geteuid() == 0 {
		// Started as root, Mosquitto 2.0 drops to the "mosquitto" user, which cannot read
		// t.TempDir() (0700, owned by root). "user root" keeps it as it was started; as
		// any other user Mosquitto cannot switch and ignores the setting.
		conf.User = "root"
	}
	mustf(t, conf.Validate(), "mosquitto configuration")
	identities := append(m.pki.Identities(), m.opts.identities...)
	mustf(t, os.WriteFile(m.path("acl"), mosquitto.RenderACL(identities), 0o644), "write acl")
	mustf(t, os.WriteFile(m.path("mosquitto.conf"), mosquitto.RenderConf(conf), 0o644), "write mosquitto.conf")
	mustf(t, os.WriteFile(m.path(mosquitto.OpenSSLConfFile), mosquitto.RenderOpenSSLConf(), 0o644), "write %s", mosquitto.OpenSSLConfFile)
}

// start runs mosquitto and waits until it completes TLS handshakes. On error the process is
// gone.
func (m *Mosquitto) start(t testing.TB) error {
	t.Helper()
	m.writeConfig(t)
	logf, err := os.OpenFile(m.path("mosquitto.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	mustf(t, err, "mosquitto log")
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(m.bin, "-c", m.path("mosquitto.conf"))
	cmd.Dir = m.dir
	// As deployed (fleetctl mosquitto-config says so): no TLS 1.3 session tickets, unless the
	// test asked for OpenSSL's defaults.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "OPENSSL_CONF=") })
	if !m.opts.opensslDefaults {
		cmd.Env = append(cmd.Env, "OPENSSL_CONF="+m.path(mosquitto.OpenSSLConfFile))
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", m.bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := m.waitReady(p); err != nil {
		p.kill()
		return err
	}
	m.mu.Lock()
	m.proc = p
	m.mu.Unlock()
	return nil
}

// waitReady dials TLS until a handshake succeeds, the process exits, or the deadline passes.
func (m *Mosquitto) waitReady(p *process) error {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(m.port))
	deadline := time.NewTimer(mosquittoReadyTimeout)
	defer deadline.Stop()
	retry := 5 * time.Millisecond
	for {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr, m.probe)
		if err == nil {
			conn.Close()
			return nil
		}
		wait := time.NewTimer(retry)
		select {
		case <-p.done:
			wait.Stop()
			return fmt.Errorf("mosquitto exited before accepting connections: %v", p.err)
		case <-deadline.C:
			wait.Stop()
			return fmt.Errorf("mosquitto not accepting TLS on %s after %v: %v", addr, mosquittoReadyTimeout, err)
		case <-wait.C:
		}
		retry = min(2*retry, 100*time.Millisecond)
	}
}

// kill ends the process at once and waits for it.
func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// URL returns "mqtts://127.0.0.1:<port>".
func (m *Mosquitto) URL() string {
	return "mqtts://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(m.port))
}

// Name returns "mosquitto".
func (m *Mosquitto) Name() string { return "mosquitto" }

// Pid returns the process id of the running Mosquitto, 0 when it is stopped (for a benchmark
// that reads its CPU time).
func (m *Mosquitto) Pid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil || m.proc.cmd.Process == nil {
		return 0
	}
	return m.proc.cmd.Process.Pid
}

// Dir returns the directory holding mosquitto.conf, acl, the certificates, the persistence
// directory "data" and mosquitto.log.
func (m *Mosquitto) Dir() string { return m.dir }

// Restart stops Mosquitto with SIGTERM (which saves its persistence database) and starts it
// again on the same port, with the ACL rendered again.
func (m *Mosquitto) Restart(t testing.TB) {
	t.Helper()
	m.Stop(t)
	if err := m.start(t); err != nil {
		t.Fatalf("mqtttest: restart mosquitto: %v\n%s", err, m.log())
	}
}

// RestartWithCRL replaces Mosquitto's crlfile with crlPEM (a broker started WithCRL) and
// restarts it, the one way Mosquitto 2.0 applies a new CRL.
func (m *Mosquitto) RestartWithCRL(t testing.TB, crlPEM []byte) {
	t.Helper()
	if m.opts.crl == nil {
		t.Fatal("mqtttest: RestartWithCRL on a Mosquitto started without WithCRL")
	}
	revokedSet(t, m.pki, crlPEM) // fail early on a CRL Mosquitto would reject
	mustf(t, os.WriteFile(m.path("crl.pem"), crlPEM, 0o644), "write crl.pem")
	m.Restart(t)
}

// RestartWithServerCert makes Mosquitto present cert (its certificate and key, issued by the
// same CA) and restarts it: what an operator does after giving the broker a new key. cert must
// name what ServerCert names (ServerName, 127.0.0.1, ::1).
func (m *Mosquitto) RestartWithServerCert(t testing.TB, cert *tls.Certificate) {
	t.Helper()
	signer, ok := cert.PrivateKey.(crypto.Signer)
	if !ok || cert.Leaf == nil {
		t.Fatal("mqtttest: RestartWithServerCert needs a parsed leaf and a crypto.Signer key")
	}
	key, err := certs.MarshalKeyPEM(signer)
	mustf(t, err, "server key")
	mustf(t, os.WriteFile(m.path("server.key"), key, 0o600), "write server.key")
	mustf(t, os.WriteFile(m.path("server.pem"), certs.EncodeCertPEM(cert.Leaf), 0o644), "write server.pem")
	m.Restart(t)
}

// Stop sends SIGTERM, so Mosquitto saves its persistence database, and waits for it to exit;
// one that does not exit in time is killed and fails the test. Stopping a stopped broker does
// nothing.
func (m *Mosquitto) Stop(t testing.TB) {
	t.Helper()
	m.mu.Lock()
	p := m.proc
	m.proc = nil
	m.mu.Unlock()
	if p == nil {
		return
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("mqtttest: signal mosquitto: %v", err)
	}
	timeout := time.NewTimer(mosquittoStopTimeout)
	defer timeout.Stop()
	select {
	case <-p.done:
		if p.err != nil {
			t.Errorf("mqtttest: mosquitto exited with %v\n%s", p.err, m.log())
		}
	case <-timeout.C:
		p.kill()
		t.Errorf("mqtttest: mosquitto ignored SIGTERM for %v and was killed\n%s", mosquittoStopTimeout, m.log())
	}
}

func (m *Mosquitto) log() string {
	b, err := os.ReadFile(m.path("mosquitto.log"))
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	mustf(t, err, "find a free port")
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
