// Command bench_caller makes the benchmark's gRPC calls: compiled callers cost the shared CPUs
// about half what Python ones do, as pgbench costs the limit less than any Python client would.
//
// bench/callers.py builds and drives it; the requests and answers it passes are
// encoded protobuf messages, so it needs no generated code and calls any unary method.
//
//	bench_caller -address 127.0.0.1:PORT -candidates 96
//
// The conversation, one JSON object per line:
//
//	out: {"ports": [local port of each candidate connection]}
//	in:  {"keep": [indexes of the connections to keep]}     (the others are closed)
//	in:  {"method": "/pkg.Service/Method", "concurrency": 32, "timeout_seconds": 30,
//	      "requests": [base64 of each encoded request]}
//	out: {"seconds": wall time of the calls, "latencies_ns": [...], "codes": [gRPC code...],
//	      "answers": [base64 of the encoded answer, or ""],
//	      "statuses": [base64 of the encoded google.rpc.Status of a failure, or ""]}
//
// Call i goes over connection i modulo the connections kept, as the Python callers' stubs
// take their channels in turn. The program ends when its input does.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang/protobuf/proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// rawCodec passes encoded messages through: requests arrive encoded, answers leave encoded.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *v.(*[]byte), nil }

func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}

// Name is "proto": the server sees the content type of any protobuf client.
func (rawCodec) Name() string { return "proto" }

type keepCommand struct {
	Keep []int `json:"keep"`
}

type phaseCommand struct {
	Method         string   `json:"method"`
	Concurrency    int      `json:"concurrency"`
	TimeoutSeconds float64  `json:"timeout_seconds"`
	Requests       [][]byte `json:"requests"`
}

type phaseResult struct {
	Seconds     float64  `json:"seconds"`
	LatenciesNs []int64  `json:"latencies_ns"`
	Codes       []uint32 `json:"codes"`
	Answers     [][]byte `json:"answers"`
	Statuses    [][]byte `json:"statuses"`
}

func main() {
	address := flag.String("address", "", "the server's host:port (plain HTTP/2)")
	candidates := flag.Int("candidates", 32, "connections to open before choosing which to keep")
	flag.Parse()
	// One thread runs the callers: on two CPUs shared with the server and Postgres, Go's idle
	// threads spinning for work cost more than they save (0.15-0.17 against 0.19-0.22 ms of CPU
	// per call, measured against bench_floor.py's server).
	runtime.GOMAXPROCS(1)
	if err := run(*address, *candidates); err != nil {
		fmt.Fprintln(os.Stderr, "bench_caller:", err)
		os.Exit(1)
	}
}

func run(address string, candidates int) error {
	in := bufio.NewReaderSize(os.Stdin, 1<<20)
	out := json.NewEncoder(os.Stdout)
	conns, ports, err := dial(address, candidates)
	if err != nil {
		return err
	}
	if err := out.Encode(map[string][]int{"ports": ports}); err != nil {
		return err
	}
	var keep keepCommand
	if err := readLine(in, &keep); err != nil {
		return fmt.Errorf("reading which connections to keep: %w", err)
	}
	kept, err := choose(conns, keep.Keep)
	if err != nil {
		return err
	}
	for {
		var phase phaseCommand
		if err := readLine(in, &phase); err != nil {
			if err == errEnd {
				return nil
			}
			return fmt.Errorf("reading a phase: %w", err)
		}
		if err := out.Encode(call(kept, phase)); err != nil {
			return err
		}
	}
}

// dial opens `count` connections, each a client of its own, and the local port of each.
func dial(address string, count int) ([]*grpc.ClientConn, []int, error) {
	conns := make([]*grpc.ClientConn, 0, count)
	ports := make([]int, 0, count)
	for i := 0; i < count; i++ {
		var port int
		dialer := func(ctx context.Context, target string) (net.Conn, error) {
			conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", target)
			if err == nil {
				port = conn.LocalAddr().(*net.TCPAddr).Port
			}
			return conn, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		// grpc-go 1.33 (Debian) predates credentials/insecure; WithInsecure is its plaintext option.
		conn, err := grpc.DialContext(ctx, address, grpc.WithInsecure(), grpc.WithBlock(),
			grpc.WithContextDialer(dialer))
		cancel()
		if err != nil {
			return nil, nil, fmt.Errorf("connecting to %s: %w", address, err)
		}
		conns = append(conns, conn)
		ports = append(ports, port)
	}
	return conns, ports, nil
}

// choose keeps the connections at `indexes`, in that order, and closes the others.
func choose(conns []*grpc.ClientConn, indexes []int) ([]*grpc.ClientConn, error) {
	wanted := make(map[int]bool, len(indexes))
	kept := make([]*grpc.ClientConn, 0, len(indexes))
	for _, i := range indexes {
		if i < 0 || i >= len(conns) || wanted[i] {
			return nil, fmt.Errorf("cannot keep connection %d of %d", i, len(conns))
		}
		wanted[i] = true
		kept = append(kept, conns[i])
	}
	if len(kept) == 0 {
		return nil, fmt.Errorf("no connection to keep")
	}
	for i, conn := range conns {
		if !wanted[i] {
			conn.Close()
		}
	}
	return kept, nil
}

// call makes every call of a phase with `Concurrency` callers and keeps each one's result.
func call(conns []*grpc.ClientConn, phase phaseCommand) phaseResult {
	count := len(phase.Requests)
	result := phaseResult{
		LatenciesNs: make([]int64, count),
		Codes:       make([]uint32, count),
		Answers:     make([][]byte, count),
		Statuses:    make([][]byte, count),
	}
	timeout := time.Duration(phase.TimeoutSeconds * float64(time.Second))
	codec := grpc.ForceCodec(rawCodec{})
	var next int64 = -1
	var callers sync.WaitGroup
	began := time.Now()
	for c := 0; c < phase.Concurrency; c++ {
		callers.Add(1)
		go func() {
			defer callers.Done()
			for {
				i := int(atomic.AddInt64(&next, 1))
				if i >= count {
					return
				}
				request, answer := phase.Requests[i], []byte(nil)
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				start := time.Now()
				err := conns[i%len(conns)].Invoke(ctx, phase.Method, &request, &answer, codec)
				result.LatenciesNs[i] = time.Since(start).Nanoseconds()
				cancel()
				if err != nil {
					failure := status.Convert(err)
					result.Codes[i] = uint32(failure.Code())
					result.Statuses[i], _ = proto.Marshal(failure.Proto())
					continue
				}
				result.Answers[i] = answer
			}
		}()
	}
	callers.Wait()
	result.Seconds = time.Since(began).Seconds()
	return result
}

var errEnd = errors.New("end of input")

// readLine decodes the next line of input into `v`; errEnd when the input has ended.
func readLine(in *bufio.Reader, v interface{}) error {
	line, err := in.ReadBytes('\n')
	if len(line) == 0 && err != nil {
		return errEnd
	}
	return json.Unmarshal(line, v)
}
