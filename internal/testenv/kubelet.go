package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

// Kubelet is the fake kubelet of a Kube's node: an HTTPS server on
// 127.0.0.1 that serves the endpoints the API server proxies a pod's
// subresources to, with the server side of the real streaming protocols
// (k8s.io/cri-streaming, which the kubelet's container runtimes use):
//
//   - /exec/{namespace}/{pod}/{container}?command=...: runs the command on
//     this machine, as the test's user, in Dir, with a pseudo-terminal when
//     tty=1 (80x24, then resized as the client asks: kubectl's first size
//     may come just after the command started, as on a real kubelet).
//     Its exit status goes back to the client as the kubelet reports it
//     (NonZeroExitCode).
//   - /attach/...: behaves like a container whose process is cat: what
//     the client sends on stdin comes back on stdout, until stdin ends.
//   - /portForward/{namespace}/{pod}: forwards each requested port to
//     127.0.0.1:port on this machine, as if the pod shared its network.
//   - /containerLogs/{namespace}/{pod}/{container}: the text SetLog gave.
//
// The API server reaches it through the node's InternalIP and kubelet
// port, checks its certificate against Kube.CAPEM, and authenticates with
// a client certificate from Kube's client CA, which the kubelet demands:
// nothing else on the machine can make it run commands.
//
// No pod or container exists: the kubelet serves any pod the API server
// names. It records every request it gets (Requests).
type Kubelet struct {
	Host string // 127.0.0.1
	Port int
	// Dir is the working directory of the commands it runs.
	Dir string

	srv    *httptest.Server
	ctx    context.Context // cancelled at cleanup: every command is killed
	cancel context.CancelFunc

	mu   sync.Mutex
	reqs []KubeletRequest
	logs map[string]string
}

// KubeletRequest is one request the fake kubelet got.
type KubeletRequest struct {
	Method string
	Path   string
	Query  url.Values
	// Upgrade is the protocol the API server asked to switch to:
	// "SPDY/3.1" for exec, attach and port-forward translated by the API
	// server, "websocket" when it passes a client's WebSocket through,
	// "" for a plain request (logs).
	Upgrade string
	// Protocols are the stream protocols offered (X-Stream-Protocol-Version,
	// or Sec-WebSocket-Protocol), such as v4.channel.k8s.io.
	Protocols []string
}

// startKubelet starts the fake kubelet on a free port of 127.0.0.1 with a
// serving certificate from ca, demanding client certificates from
// clientCA, and stops it at cleanup. dir is created for the commands.
func startKubelet(t testing.TB, ca, clientCA *kubeCA, dir string) *Kubelet {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: KubeNode},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:    []string{KubeNode, "localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		t.Fatalf("issue the kubelet's certificate: %v", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	clients := x509.NewCertPool()
	clients.AddCert(clientCA.cert)

	kl := &Kubelet{Host: "127.0.0.1", Dir: dir, logs: map[string]string{}}
	kl.ctx, kl.cancel = context.WithCancel(context.Background())
	mux := http.NewServeMux()
	// The API server's paths have no pod UID; the kubelet's API also
	// takes one before the container.
	for _, p := range []string{"/exec/{ns}/{pod}/{container}", "/exec/{ns}/{pod}/{uid}/{container}"} {
		mux.HandleFunc(p, kl.serveExec)
	}
	for _, p := range []string{"/attach/{ns}/{pod}/{container}", "/attach/{ns}/{pod}/{uid}/{container}"} {
		mux.HandleFunc(p, kl.serveAttach)
	}
	for _, p := range []string{"/portForward/{ns}/{pod}", "/portForward/{ns}/{pod}/{uid}"} {
		mux.HandleFunc(p, kl.servePortForward)
	}
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", kl.serveLogs)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })

	// httptest picks the port itself: no race for a free one.
	kl.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kl.record(r)
		mux.ServeHTTP(w, r)
	}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("kubelet: listen: %v", err)
	}
	kl.srv.Listener.Close()
	kl.srv.Listener = l
	// SPDY upgrades need HTTP/1.1: httptest offers only that unless
	// EnableHTTP2 is set.
	kl.srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clients,
	}
	kl.srv.StartTLS()
	kl.Port = l.Addr().(*net.TCPAddr).Port
	t.Cleanup(kl.close)
	return kl
}

// close kills the commands still running, whose streams then end, and
// stops the server once its handlers have returned.
func (kl *Kubelet) close() {
	kl.cancel()
	kl.srv.Close()
}

// Addr is Host:Port.
func (kl *Kubelet) Addr() string { return net.JoinHostPort(kl.Host, strconv.Itoa(kl.Port)) }

// Requests returns the requests the kubelet got so far, oldest first.
func (kl *Kubelet) Requests() []KubeletRequest {
	kl.mu.Lock()
	defer kl.mu.Unlock()
	return append([]KubeletRequest(nil), kl.reqs...)
}

// SetLog sets what the kubelet returns as the log of ns/pod's container
// (kubectl logs); it returns nothing for a container without one.
func (kl *Kubelet) SetLog(ns, pod, container, text string) {
	kl.mu.Lock()
	defer kl.mu.Unlock()
	kl.logs[ns+"/"+pod+"/"+container] = text
}

func (kl *Kubelet) record(r *http.Request) {
	req := KubeletRequest{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Upgrade: r.Header.Get("Upgrade")}
	req.Protocols = append(req.Protocols, r.Header.Values("X-Stream-Protocol-Version")...)
	req.Protocols = append(req.Protocols, r.Header.Values("Sec-WebSocket-Protocol")...)
	kl.mu.Lock()
	kl.reqs = append(kl.reqs, req)
	kl.mu.Unlock()
}

// The kubelet's defaults: a stream idle for 4 hours is closed, and a
// client has 30 s to open its streams.
const kubeletIdleTimeout = 4 * time.Hour

func (kl *Kubelet) serveExec(w http.ResponseWriter, r *http.Request) {
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	cmd := r.URL.Query()["command"]
	if len(cmd) == 0 {
		http.Error(w, "no command", http.StatusBadRequest)
		return
	}
	remotecommand.ServeExec(w, r, kubeletRuntime{kl}, r.PathValue("ns")+"/"+r.PathValue("pod"), r.PathValue("uid"),
		r.PathValue("container"), cmd, opts, kubeletIdleTimeout, remotecommand.DefaultStreamCreationTimeout,
		remotecommand.SupportedStreamingProtocols)
}

func (kl *Kubelet) serveAttach(w http.ResponseWriter, r *http.Request) {
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	remotecommand.ServeAttach(w, r, kubeletRuntime{kl}, r.PathValue("ns")+"/"+r.PathValue("pod"), r.PathValue("uid"),
		r.PathValue("container"), opts, kubeletIdleTimeout, remotecommand.DefaultStreamCreationTimeout,
		remotecommand.SupportedStreamingProtocols)
}

func (kl *Kubelet) servePortForward(w http.ResponseWriter, r *http.Request) {
	opts, err := portforward.NewV4Options(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	portforward.ServePortForward(w, r, kubeletRuntime{kl}, r.PathValue("ns")+"/"+r.PathValue("pod"), r.PathValue("uid"),
		opts, kubeletIdleTimeout, remotecommand.DefaultStreamCreationTimeout, portforward.SupportedProtocols)
}

func (kl *Kubelet) serveLogs(w http.ResponseWriter, r *http.Request) {
	kl.mu.Lock()
	text := kl.logs[r.PathValue("ns")+"/"+r.PathValue("pod")+"/"+r.PathValue("container")]
	kl.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain")
	io.WriteString(w, text)
}

// kubeletRuntime is the container runtime behind the fake kubelet: the
// Executor, Attacher and PortForwarder the streaming servers call.
type kubeletRuntime struct{ kl *Kubelet }

// ExecInContainer runs cmd as a child of the test, in its own process
// group (its own session with a terminal when tty is set), killed when the
// client goes away or at cleanup.
func (rt kubeletRuntime) ExecInContainer(ctx context.Context, name, uid, container string, cmd []string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, timeout time.Duration) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(rt.kl.ctx, cancel)
	defer stop()
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	c := exec.CommandContext(ctx, cmd[0], cmd[1:]...)
	c.Dir = rt.kl.Dir
	c.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + rt.kl.Dir, "HOSTNAME=" + name}
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	// A command that leaves a child holding its output does not keep the
	// stream open for longer than this after it exits.
	c.WaitDelay = 2 * time.Second
	if tty {
		return execTTY(c, in, out, resize)
	}
	if out != nil {
		c.Stdout = out
	}
	if errOut != nil {
		c.Stderr = errOut
	}
	var stdin io.WriteCloser
	if in != nil {
		var err error
		if stdin, err = c.StdinPipe(); err != nil {
			return err
		}
	}
	if err := c.Start(); err != nil {
		return err
	}
	if stdin != nil {
		// Not through c.Stdin: Wait would wait for the client to end its
		// stdin, which it need not do before the command ends.
		go func() { io.Copy(stdin, in); stdin.Close() }()
	}
	return exitError(c.Wait())
}

// execTTY runs c on a new pseudo-terminal: the terminal's output goes to
// out, in goes to its input, and each size from resize is set on it.
func execTTY(c *exec.Cmd, in io.Reader, out io.Writer, resize <-chan remotecommand.TerminalSize) error {
	ptmx, pts, err := openKubeletPTY()
	if err != nil {
		return err
	}
	defer ptmx.Close()
	setWinsize(ptmx, remotecommand.TerminalSize{Width: 80, Height: 24})
	c.Env = append(c.Env, "TERM=xterm")
	c.Stdin, c.Stdout, c.Stderr = pts, pts, pts
	c.SysProcAttr.Setpgid = false
	c.SysProcAttr.Setsid, c.SysProcAttr.Setctty, c.SysProcAttr.Ctty = true, true, 0
	err = c.Start()
	pts.Close()
	if err != nil {
		return err
	}
	output := make(chan struct{})
	go func() {
		defer close(output)
		if out != nil {
			io.Copy(out, ptmx) // ends with EIO once no process holds the terminal
		} else {
			io.Copy(io.Discard, ptmx)
		}
	}()
	if in != nil {
		go io.Copy(ptmx, in)
	}
	exited := make(chan struct{})
	defer close(exited)
	go func() {
		for {
			select {
			case size, ok := <-resize:
				if !ok {
					return
				}
				setWinsize(ptmx, size)
			case <-exited:
				return
			}
		}
	}()
	err = c.Wait()
	// What the command wrote before it ended is still to be read; a
	// child it left on the terminal must not hold the stream open.
	select {
	case <-output:
	case <-time.After(2 * time.Second):
	}
	return exitError(err)
}

// openKubeletPTY opens a new pseudo-terminal pair: the master, which the Go
// runtime polls (so Close ends a Read, unlike openPTY's, whose Fd
// makes it blocking), and the slave for the command.
func openKubeletPTY() (ptmx, pts *os.File, err error) {
	ptmx, err = os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open /dev/ptmx: %w", err)
	}
	var n int
	ctl := func(fd uintptr) {
		if err = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); err == nil {
			n, err = unix.IoctlGetInt(int(fd), unix.TIOCGPTN)
		}
	}
	if cerr := control(ptmx, ctl); cerr != nil || err != nil {
		ptmx.Close()
		return nil, nil, fmt.Errorf("unlock pseudo-terminal: %w", errors.Join(cerr, err))
	}
	pts, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		ptmx.Close()
		return nil, nil, err
	}
	return ptmx, pts, nil
}

func setWinsize(ptmx *os.File, size remotecommand.TerminalSize) {
	control(ptmx, func(fd uintptr) {
		unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: size.Height, Col: size.Width})
	})
}

// control runs f on f's descriptor without taking it out of the Go
// runtime's poller, as File.Fd would.
func control(f *os.File, fn func(fd uintptr)) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(fn)
}

// exitError turns a command's exit status into the error the streaming
// server reports as NonZeroExitCode with that code (128+n for a signal,
// as a shell says).
func exitError(err error) error {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return err
	}
	code := ee.ExitCode()
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		code = 128 + int(ws.Signal())
	}
	return utilexec.CodeExitError{Err: err, Code: code}
}

// AttachContainer copies in to out, as a container running cat would,
// until in ends; without stdin it waits until the client goes away.
func (rt kubeletRuntime) AttachContainer(ctx context.Context, name, uid, container string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	if in == nil {
		select {
		case <-ctx.Done():
		case <-rt.kl.ctx.Done():
		}
		return nil
	}
	if out == nil {
		out = nopWriteCloser{io.Discard}
	}
	_, err := io.Copy(out, in)
	return err
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// PortForward connects stream to 127.0.0.1:port.
func (rt kubeletRuntime) PortForward(ctx context.Context, name, uid string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		return fmt.Errorf("forward to port %d: %w", port, err)
	}
	defer conn.Close()
	done := make(chan struct{}, 2)
	go func() { io.Copy(conn, stream); conn.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { io.Copy(stream, conn); done <- struct{}{} }()
	select {
	case <-done:
		<-done
	case <-rt.kl.ctx.Done():
	}
	return nil
}
