package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/internal/atomicfile"
	"github.com/peerline/peerline/internal/identity"
)

// Flags shared by several commands.
var (
	dataFlag = &cli.StringFlag{
		Name: "data", Aliases: []string{"d"}, Usage: "state `DIR` (keys, database, host cache, control socket)",
		EnvVars: []string{"PEERLINE_DATA"}, Required: true,
	}
	jsonFlag     = &cli.BoolFlag{Name: "json", Usage: "print a machine-readable JSON result"}
	loginFlag    = &cli.StringFlag{Name: "login", Usage: "login server `HOST:PORT`", EnvVars: []string{"PEERLINE_LOGIN"}}
	loginKeyFlag = &cli.StringFlag{Name: "login-key", Usage: "the login server's public `KEY` (its data dir has it in login.pub)", EnvVars: []string{"PEERLINE_LOGIN_KEY"}}
	logLevelFlag = &cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error", EnvVars: []string{"PEERLINE_LOG_LEVEL"}}
)

// newLogger makes the key-value logger every role writes to stderr.
func newLogger(c *cli.Context) *slog.Logger {
	// The level was checked before the command ran (checkCommandLine).
	lvl, _ := parseLogLevel(c.String("log-level"))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// clientFile remembers, in a client's data dir, which login server and user it belongs to,
// so that later commands need only --data.
type clientFile struct {
	Login    string `json:"login"`
	LoginKey string `json:"login_key"`
	User     string `json:"user"`
}

const clientFileName = "client.json"

func loadClientFile(dir string) (clientFile, error) {
	var cf clientFile
	b, err := os.ReadFile(filepath.Join(dir, clientFileName))
	if err != nil {
		return cf, err
	}
	if err := json.Unmarshal(b, &cf); err != nil {
		return cf, fmt.Errorf("%s: %w", filepath.Join(dir, clientFileName), err)
	}
	return cf, nil
}

func saveClientFile(dir string, cf clientFile) error {
	b, _ := json.MarshalIndent(cf, "", "  ")
	return atomicfile.WriteFile(filepath.Join(dir, clientFileName), append(b, '\n'), 0o600)
}

// loginServer resolves --login and --login-key, falling back to the data dir's client.json.
func loginServer(c *cli.Context) (client.LoginServer, clientFile, error) {
	var cf clientFile
	if c.IsSet("data") || c.String("data") != "" {
		cf, _ = loadClientFile(c.String("data"))
	}
	if v := c.String("login"); v != "" {
		cf.Login = v
	}
	if v := c.String("login-key"); v != "" {
		cf.LoginKey = v
	}
	if f := c.String("login-key-file"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return client.LoginServer{}, cf, err
		}
		cf.LoginKey = strings.TrimSpace(string(b))
	}
	if cf.Login == "" || cf.LoginKey == "" {
		return client.LoginServer{}, cf, errors.New("the login server is not known: give --login HOST:PORT and --login-key KEY")
	}
	key, err := identity.DecodeKey(cf.LoginKey)
	if err != nil {
		return client.LoginServer{}, cf, fmt.Errorf("--login-key: %w", err)
	}
	return client.LoginServer{Addr: cf.Login, Key: key}, cf, nil
}

var loginKeyFileFlag = &cli.StringFlag{Name: "login-key-file", Usage: "read the login server's key from `FILE` (its login.pub)"}

// errNoPassword: there is no password to give, and waiting will not bring one. It is
// client.ErrNeedPassword, which the client takes as fatal rather than retrying.
var errNoPassword error = noPasswordError{}

type noPasswordError struct{}

func (noPasswordError) Error() string {
	return "no password: set PEERLINE_PASSWORD or run in a terminal"
}
func (noPasswordError) Unwrap() error { return client.ErrNeedPassword }

// readPassword takes the password from PEERLINE_PASSWORD, or prompts on the terminal
// (twice when confirm is set).
func readPassword(ctx context.Context, prompt string, confirm bool) (string, error) {
	if pw, ok := os.LookupEnv("PEERLINE_PASSWORD"); ok {
		return pw, nil
	}
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		// A pipe: read one line, so scripts can do `echo pw | peerline register ...`.
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil && line == "" {
			return "", errNoPassword
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	fmt.Fprint(os.Stderr, prompt)
	pw, err := term.ReadPassword(fd)
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return "", err
	}
	if confirm {
		fmt.Fprint(os.Stderr, "Again: ")
		again, err := term.ReadPassword(fd)
		fmt.Fprintln(os.Stderr)
		if err != nil {
			return "", err
		}
		if string(again) != string(pw) {
			return "", errors.New("the passwords differ")
		}
	}
	return string(pw), nil
}

// secretFromFlags reads a secret given inline or in a file, or creates one in path.
func randomSecret() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// serveMetrics serves what write writes, in the Prometheus text format, at
// http://addr/metrics until stop is called; bound is the address it listens on (addr with
// port 0 picks one).
func serveMetrics(addr string, write func(io.Writer)) (bound string, stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("--metrics-listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		write(w)
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	return ln.Addr().String(), func() { hs.Close() }, nil
}
