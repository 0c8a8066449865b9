package main

// Tests of dial() against the real Python server: `python -m ticketing_service serve` on port 0
// with an embedded Postgres in a fresh directory. They run when TICKETING_REPO names the
// repository (its .venv made by `uv sync`), as scripts/check-generated sets it, and are skipped
// otherwise.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	ticketingv1 "github.com/moim/ticketing/clients/go/moim/ticketing/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var ready = regexp.MustCompile(`serving moim\.ticketing\.v1\.TicketingService on [\d.]+:(\d+)`)

// server is a running `ticketing_service serve`.
type server struct {
	address string
	cmd     *exec.Cmd
	mu      sync.Mutex
	lines   []string
}

func (s *server) logTail() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.lines, "\n")
}

// startServer starts the server with `env` added and stops it when the test ends.
func startServer(t *testing.T, env ...string) *server {
	t.Helper()
	repo := os.Getenv("TICKETING_REPO")
	if repo == "" {
		t.Skip("TICKETING_REPO (the repository, after uv sync) is unset: no real server to call")
	}
	// The interpreter itself, not `uv run`: the test stops the server's own process (SIGSTOP).
	cmd := exec.Command(filepath.Join(repo, ".venv", "bin", "python"), "-m", "ticketing_service",
		"serve", "--listen", "127.0.0.1:0")
	cmd.Dir = repo
	cmd.Env = append(serverEnv(t.TempDir()), env...)
	output, writer := io.Pipe()
	cmd.Stdout, cmd.Stderr = writer, writer
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the server: %v", err)
	}
	s := &server{cmd: cmd}
	t.Cleanup(func() { s.stop(t) })
	port := make(chan string, 1)
	go s.read(output, port)
	select {
	case p := <-port:
		s.address = "127.0.0.1:" + p
	case <-time.After(60 * time.Second):
		t.Fatalf("the server did not start serving within 60 s:\n%s", s.logTail())
	}
	return s
}

// serverEnv is this process's environment without a database or token of its own, with a
// payment service that nothing calls here and a fresh embedded Postgres in dataDir.
func serverEnv(dataDir string) []string {
	var env []string
	for _, variable := range os.Environ() {
		if !strings.HasPrefix(variable, "DATABASE_URL=") && !strings.HasPrefix(variable, "TICKETING_") {
			env = append(env, variable)
		}
	}
	return append(env, "TICKETING_DATA_DIR="+dataDir,
		"TICKET_PAYMENT_SERVICE_URL=http://127.0.0.1:9", "TICKET_PAYMENT_SERVICE_TOKEN=go-test")
}

// read keeps the last lines of the server's output (a full pipe would block it) and sends the
// port it serves on once.
func (s *server) read(output io.Reader, port chan<- string) {
	scanner := bufio.NewScanner(output)
	for scanner.Scan() {
		line := scanner.Text()
		s.mu.Lock()
		s.lines = append(s.lines, line)
		if len(s.lines) > 60 {
			s.lines = s.lines[1:]
		}
		s.mu.Unlock()
		if match := ready.FindStringSubmatch(line); match != nil {
			select {
			case port <- match[1]:
			default:
			}
		}
	}
}

// stop resumes a stopped server, ends it with SIGTERM (SIGKILL past 20 s) and waits.
func (s *server) stop(t *testing.T) {
	process := s.cmd.Process
	_ = process.Signal(syscall.SIGCONT)
	_ = process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = process.Kill()
		<-done
	}
}

func requireRetries(t *testing.T) {
	t.Helper()
	if !retriesEnabled() {
		t.Fatal("grpc-go before 1.40 retries nothing without GRPC_GO_RETRY=on: run the tests with it")
	}
}

func TestAColdBurstAgainstASmallCallLimitAllSucceed(t *testing.T) {
	requireRetries(t)
	s := startServer(t, "TICKETING_GRPC_MAX_CONCURRENT_RPCS=4")
	conn, err := dial(context.Background(), s.address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := ticketingv1.NewTicketingServiceClient(conn)

	// A fresh connection sends streams past the server's limit before it learns the limit; the
	// server refuses them (REFUSED_STREAM: UNAVAILABLE) or answers RESOURCE_EXHAUSTED
	// SERVER_BUSY. Nothing of those calls ran, and each is retried.
	const calls = 100
	failures := make(chan string, calls)
	var wg sync.WaitGroup
	for i := 0; i < calls; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			request := &ticketingv1.GetTicketingSettingsRequest{EventId: "no-such-event"}
			if _, err := client.GetTicketingSettings(ctx, request); status.Code(err) != codes.NotFound {
				failures <- fmt.Sprintf("%s %q", status.Code(err), status.Convert(err).Message())
			}
		}()
	}
	wg.Wait()
	close(failures)
	var failed []string
	for failure := range failures {
		failed = append(failed, failure)
	}
	if len(failed) > 0 {
		t.Fatalf("%d of %d calls did not reach the service (want NOT_FOUND), e.g. %s", len(failed), calls, failed[0])
	}
}

func TestAWatchOfAServerThatHangsEnds(t *testing.T) {
	s := startServer(t)
	conn, err := dial(context.Background(), s.address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := ticketingv1.NewTicketingServiceClient(conn)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := client.WatchRegistrationEvents(ctx, &ticketingv1.WatchRegistrationEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				ended <- err
				return
			}
		}
	}()
	// A unary call on the same connection: once it is answered the watch is open on the server.
	call, done := context.WithTimeout(context.Background(), 10*time.Second)
	defer done()
	_, err = client.GetTicketingSettings(call, &ticketingv1.GetTicketingSettingsRequest{EventId: "x"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("GetTicketingSettings: %v", err)
	}

	// The machine hangs: its kernel still holds the TCP connection, nothing answers on it.
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	bound := keepaliveParams.Time + keepaliveParams.Timeout + 10*time.Second
	select {
	case err := <-ended:
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("the watch ended with %v, want UNAVAILABLE", err)
		}
		t.Logf("the watch ended %.1f s after the server stopped: %v", time.Since(stopped).Seconds(), err)
	case <-time.After(bound):
		t.Fatalf("the watch of a stopped server was still open after %s", bound)
	}
}
