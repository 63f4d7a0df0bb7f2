// Command spiffe-client is an independent SPIFFE Workload API client built on
// go-spiffe v2. The end-to-end tests of spire-rs run it against the real
// spire-agent to prove that a client nobody in this project wrote works
// unchanged.
//
// Every subcommand prints one JSON object per result line on stdout. On
// failure it prints "error: code=<gRPC code> <message>" on stderr and exits
// with status 1; usage errors print "error: usage: ..." and exit with status 2.
//
// The Workload API address comes from -socket, else SPIFFE_ENDPOINT_SOCKET.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/status"
)

const usage = `usage: spiffe-client <subcommand> [flags]

subcommands:
  x509            fetch the X.509 context (SVIDs and bundles) [-out DIR]
  jwt             fetch a JWT-SVID -audience A [-spiffeID ID]
  validate        validate a JWT-SVID through the Workload API -audience A -token T
  watch-rotation  exit 0 after observing -count N distinct SVID serials within -timeout D
  mtls-server     accept mTLS connections on -addr A from -allow-id ID
  mtls-client     connect over mTLS to -addr A expecting -server-id ID

common flags: -socket ADDR (default $SPIFFE_ENDPOINT_SOCKET), -timeout D
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	var err error
	switch cmd {
	case "x509":
		err = runX509(args)
	case "jwt":
		err = runJWT(args)
	case "validate":
		err = runValidate(args)
	case "watch-rotation":
		err = runWatchRotation(args)
	case "mtls-server":
		err = runMTLSServer(args)
	case "mtls-client":
		err = runMTLSClient(args)
	case "-h", "-help", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "error: usage: unknown subcommand %q\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(os.Stderr, "error: usage: %v\n", err)
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "error: code=%s %v\n", codeOf(err), err)
		os.Exit(1)
	}
}

type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

// codeOf extracts the gRPC status code from an error chain ("Unknown" when
// there is none).
func codeOf(err error) string {
	if s, ok := status.FromError(err); ok {
		return s.Code().String()
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return se.GRPCStatus().Code().String()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "DeadlineExceeded"
	}
	return "Unknown"
}

type common struct {
	socket  string
	timeout time.Duration
}

func newFlags(name string) (*flag.FlagSet, *common) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	c := &common{}
	fs.StringVar(&c.socket, "socket", "", "Workload API address (default $SPIFFE_ENDPOINT_SOCKET)")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "overall timeout")
	return fs, c
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected arguments: %v", fs.Args())}
	}
	return nil
}

func (c *common) clientOptions() ([]workloadapi.ClientOption, error) {
	addr := c.socket
	if addr == "" {
		var ok bool
		addr, ok = workloadapi.GetDefaultAddress()
		if !ok {
			return nil, usageError{"no Workload API address: pass -socket or set SPIFFE_ENDPOINT_SOCKET"}
		}
	}
	if !strings.Contains(addr, "://") && !strings.HasPrefix(addr, "unix:") {
		addr = "unix://" + addr
	}
	return []workloadapi.ClientOption{workloadapi.WithAddr(addr)}, nil
}

func (c *common) context() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.timeout)
}

func printJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Println(string(b))
	return err
}

func writePEM(path string, mode os.FileMode, blockType string, ders ...[]byte) error {
	var out []byte
	for _, d := range ders {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: d})...)
	}
	return os.WriteFile(path, out, mode)
}

type svidOut struct {
	SpiffeID  string `json:"spiffe_id"`
	Hint      string `json:"hint"`
	Serial    string `json:"serial"`
	NotAfter  string `json:"not_after"`
	ChainLen  int    `json:"chain_len"`
	ChainPath string `json:"chain_path,omitempty"`
	KeyPath   string `json:"key_path,omitempty"`
}

type bundleOut struct {
	Authorities int    `json:"authorities"`
	Path        string `json:"path,omitempty"`
}

func runX509(args []string) error {
	fs, c := newFlags("x509")
	out := fs.String("out", "", "directory to write svid_N.pem, svid_N.key and bundle_<td>.pem into")
	if err := parse(fs, args); err != nil {
		return err
	}
	opts, err := c.clientOptions()
	if err != nil {
		return err
	}
	ctx, cancel := c.context()
	defer cancel()
	xc, err := workloadapi.FetchX509Context(ctx, opts...)
	if err != nil {
		return fmt.Errorf("fetch x509 context: %w", err)
	}
	if *out != "" {
		if err := os.MkdirAll(*out, 0o700); err != nil {
			return err
		}
	}
	ids := []string{}
	svids := []svidOut{}
	for i, s := range xc.SVIDs {
		leaf := s.Certificates[0]
		o := svidOut{
			SpiffeID: s.ID.String(),
			Hint:     s.Hint,
			Serial:   leaf.SerialNumber.Text(16),
			NotAfter: leaf.NotAfter.UTC().Format(time.RFC3339),
			ChainLen: len(s.Certificates),
		}
		if *out != "" {
			o.ChainPath = filepath.Join(*out, fmt.Sprintf("svid_%d.pem", i))
			o.KeyPath = filepath.Join(*out, fmt.Sprintf("svid_%d.key", i))
			ders := make([][]byte, 0, len(s.Certificates))
			for _, cert := range s.Certificates {
				ders = append(ders, cert.Raw)
			}
			if err := writePEM(o.ChainPath, 0o644, "CERTIFICATE", ders...); err != nil {
				return err
			}
			_, keyDER, err := s.MarshalRaw()
			if err != nil {
				return fmt.Errorf("marshal svid key: %w", err)
			}
			if err := writePEM(o.KeyPath, 0o600, "PRIVATE KEY", keyDER); err != nil {
				return err
			}
		}
		ids = append(ids, o.SpiffeID)
		svids = append(svids, o)
	}
	bundles := map[string]bundleOut{}
	tds := []string{}
	for _, b := range xc.Bundles.Bundles() {
		td := b.TrustDomain().Name()
		bo := bundleOut{Authorities: len(b.X509Authorities())}
		if *out != "" {
			bo.Path = filepath.Join(*out, "bundle_"+td+".pem")
			ders := [][]byte{}
			for _, a := range b.X509Authorities() {
				ders = append(ders, a.Raw)
			}
			if err := writePEM(bo.Path, 0o644, "CERTIFICATE", ders...); err != nil {
				return err
			}
		}
		bundles[td] = bo
		tds = append(tds, td)
	}
	sort.Strings(tds)
	return printJSON(map[string]any{
		"spiffe_ids":            ids,
		"svids":                 svids,
		"bundle_trust_domains":  tds,
		"bundles":               bundles,
		"default_svid_spiffeid": firstID(ids),
	})
}

func firstID(ids []string) string {
	if len(ids) == 0 {
		return ""
	}
	return ids[0]
}

func runJWT(args []string) error {
	fs, c := newFlags("jwt")
	aud := fs.String("audience", "", "audience (required)")
	sub := fs.String("spiffeID", "", "SPIFFE ID to request (optional)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *aud == "" {
		return usageError{"-audience is required"}
	}
	opts, err := c.clientOptions()
	if err != nil {
		return err
	}
	params := jwtsvid.Params{Audience: *aud}
	if *sub != "" {
		id, err := spiffeid.FromString(*sub)
		if err != nil {
			return usageError{fmt.Sprintf("invalid -spiffeID: %v", err)}
		}
		params.Subject = id
	}
	ctx, cancel := c.context()
	defer cancel()
	svid, err := workloadapi.FetchJWTSVID(ctx, params, opts...)
	if err != nil {
		return fmt.Errorf("fetch jwt svid: %w", err)
	}
	return printJSON(map[string]any{
		"spiffe_id": svid.ID.String(),
		"audience":  svid.Audience,
		"expiry":    svid.Expiry.UTC().Format(time.RFC3339),
		"hint":      svid.Hint,
		"token":     svid.Marshal(),
	})
}

func runValidate(args []string) error {
	fs, c := newFlags("validate")
	aud := fs.String("audience", "", "audience (required)")
	token := fs.String("token", "", "JWT-SVID to validate (required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *aud == "" || *token == "" {
		return usageError{"-audience and -token are required"}
	}
	opts, err := c.clientOptions()
	if err != nil {
		return err
	}
	ctx, cancel := c.context()
	defer cancel()
	svid, err := workloadapi.ValidateJWTSVID(ctx, *token, *aud, opts...)
	if err != nil {
		return fmt.Errorf("validate jwt svid: %w", err)
	}
	return printJSON(map[string]any{
		"spiffe_id": svid.ID.String(),
		"audience":  svid.Audience,
		"expiry":    svid.Expiry.UTC().Format(time.RFC3339),
	})
}

func runWatchRotation(args []string) error {
	fs, c := newFlags("watch-rotation")
	count := fs.Int("count", 2, "number of distinct SVID serials to observe (including the first)")
	if err := parse(fs, args); err != nil {
		return err
	}
	opts, err := c.clientOptions()
	if err != nil {
		return err
	}
	ctx, cancel := c.context()
	defer cancel()
	source, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(opts...))
	if err != nil {
		return fmt.Errorf("create x509 source: %w", err)
	}
	defer source.Close()
	seen := map[string]bool{}
	serials := []string{}
	check := func() error {
		svid, err := source.GetX509SVID()
		if err != nil {
			return fmt.Errorf("get x509 svid: %w", err)
		}
		serial := svid.Certificates[0].SerialNumber.Text(16)
		if !seen[serial] {
			seen[serial] = true
			serials = append(serials, serial)
			if err := printJSON(map[string]any{"event": "svid", "spiffe_id": svid.ID.String(), "serial": serial}); err != nil {
				return err
			}
		}
		return nil
	}
	updated := source.Updated()
	for {
		if err := check(); err != nil {
			return err
		}
		if len(serials) >= *count {
			return printJSON(map[string]any{"event": "done", "serials": serials})
		}
		select {
		case <-updated:
		case <-ctx.Done():
			return fmt.Errorf("observed %d of %d distinct serials before the timeout: %w", len(serials), *count, ctx.Err())
		}
	}
}

func sourceOpts(opts []workloadapi.ClientOption) workloadapi.X509SourceOption {
	return workloadapi.WithClientOptions(opts...)
}

func runMTLSServer(args []string) error {
	fs, c := newFlags("mtls-server")
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	allow := fs.String("allow-id", "", "SPIFFE ID allowed to connect (required)")
	conns := fs.Int("connections", 1, "number of connections to serve before exiting")
	if err := parse(fs, args); err != nil {
		return err
	}
	allowed, err := spiffeid.FromString(*allow)
	if err != nil {
		return usageError{fmt.Sprintf("invalid -allow-id: %v", err)}
	}
	opts, err := c.clientOptions()
	if err != nil {
		return err
	}
	ctx, cancel := c.context()
	defer cancel()
	ln, err := spiffetls.ListenWithMode(ctx, "tcp", *addr,
		spiffetls.MTLSServerWithSourceOptions(tlsconfig.AuthorizeID(allowed), sourceOpts(opts)))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	go func() {
		<-ctx.Done()
		_ = ln.Close()
	}()
	if err := printJSON(map[string]any{"event": "listening", "addr": ln.Addr().String()}); err != nil {
		return err
	}
	served := 0
	for served < *conns {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("accept: %w", ctx.Err())
			}
			return fmt.Errorf("accept: %w", err)
		}
		err = serveOne(conn)
		_ = conn.Close()
		if err != nil {
			// A rejected handshake is reported but the server keeps serving.
			_ = printJSON(map[string]any{"event": "rejected", "error": err.Error()})
			continue
		}
		served++
	}
	return nil
}

func peerIDOf(conn net.Conn) (spiffeid.ID, error) {
	return spiffetls.PeerIDFromConn(conn)
}

func serveOne(conn net.Conn) error {
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	peer, err := peerIDOf(conn)
	if err != nil {
		return fmt.Errorf("peer id: %w", err)
	}
	if _, err := fmt.Fprintf(conn, "hello %s\n", peer); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return printJSON(map[string]any{
		"event":    "served",
		"peer_id":  peer.String(),
		"received": strings.TrimRight(line, "\n"),
	})
}

func runMTLSClient(args []string) error {
	fs, c := newFlags("mtls-client")
	addr := fs.String("addr", "", "server address host:port (required)")
	serverID := fs.String("server-id", "", "expected server SPIFFE ID (required)")
	msg := fs.String("message", "ping", "line to send")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *addr == "" {
		return usageError{"-addr is required"}
	}
	sid, err := spiffeid.FromString(*serverID)
	if err != nil {
		return usageError{fmt.Sprintf("invalid -server-id: %v", err)}
	}
	opts, err := c.clientOptions()
	if err != nil {
		return err
	}
	ctx, cancel := c.context()
	defer cancel()
	conn, err := spiffetls.DialWithMode(ctx, "tcp", *addr,
		spiffetls.MTLSClientWithSourceOptions(tlsconfig.AuthorizeID(sid), sourceOpts(opts)))
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := fmt.Fprintf(conn, "%s\n", *msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	peer, err := peerIDOf(conn)
	if err != nil {
		return fmt.Errorf("peer id: %w", err)
	}
	return printJSON(map[string]any{
		"peer_id": peer.String(),
		"reply":   strings.TrimRight(reply, "\n"),
	})
}
