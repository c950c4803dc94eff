package main

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/peerline/peerline/internal/atomicfile"
	"github.com/peerline/peerline/internal/identity"
	"github.com/peerline/peerline/loginsrv"
)

// Files of a login server's data directory.
const (
	loginKeyFile     = "login.key"    // private key (0600)
	loginPubFile     = "login.pub"    // public key, to hand to clients and supernodes
	admitSecretFile  = "admit.secret" // supernode admission secret (0600)
	loginRelaySecret = "turn.secret"  // TURN credential secret, shared with standalone relays (0600)
	loginDBFile      = "accounts.db"
)

func loginsrvCommand() *cli.Command {
	return &cli.Command{
		Name:  "loginsrv",
		Usage: "run the login server (accounts, credentials, buddy lists, directory, host-cache seeds)",
		UsageText: "peerline loginsrv --data DIR [--listen HOST:PORT] [options]\n\n" +
			"Example:\n" +
			"   peerline loginsrv --data run/login --listen 127.0.0.1:7000\n" +
			"   peerline loginsrv --data run/login --init    # prints the key clients and supernodes need",
		Description: "On first start the server creates its signing key (login.key, login.pub) and a\n" +
			"supernode admission secret (admit.secret) in --data. Accounts live in accounts.db\n" +
			"(SQLite, synchronous commits: an acknowledged registration survives a crash).\n" +
			"With --init it only creates those files, prints the key and exits.",
		Flags: []cli.Flag{
			dataFlag,
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:7000", Usage: "control `ADDR` to listen on"},
			&cli.StringFlag{Name: "admit-secret", Usage: "supernode admission `SECRET` (default: the one in DATA/admit.secret, created if missing)", EnvVars: []string{"PEERLINE_ADMIT_SECRET"}},
			&cli.DurationFlag{Name: "cred-ttl", Value: 0, Usage: "lifetime of issued credentials (0 = 24h)"},
			&cli.DurationFlag{Name: "heartbeat", Value: 0, Usage: "supernode heartbeat interval (0 = 10s)"},
			&cli.UintFlag{Name: "argon2-time", Value: uint(loginsrv.DefaultArgon2Params.Time), Usage: "argon2id passes"},
			&cli.UintFlag{Name: "argon2-memory", Value: uint(loginsrv.DefaultArgon2Params.MemoryKiB), Usage: "argon2id memory in KiB"},
			&cli.UintFlag{Name: "argon2-threads", Value: uint(loginsrv.DefaultArgon2Params.Threads), Usage: "argon2id lanes"},
			&cli.StringFlag{Name: "metrics-listen", Usage: "serve Prometheus counters at http://`ADDR`/metrics (off by default)"},
			&cli.BoolFlag{Name: "init", Usage: "create the key and admission secret, print them and exit"},
			&cli.StringSliceFlag{Name: "relay", Usage: "`ADDR` (host:port) of a standalone relay ('peerline relay --secret-file DATA/turn.secret'); repeatable"},
			&cli.BoolFlag{Name: "no-relay-credentials", Usage: "issue no TURN credentials (supernodes then run no relay)"},
			&cli.IntFlag{Name: "clients-per-supernode", Usage: "the supernode layer's target: one supernode per `N` attached clients; eligible clients promote themselves while it is short (0 = no target)"},
			&cli.IntFlag{Name: "min-supernodes", Usage: "the supernode layer's target is at least `N` supernodes (0 = none)"},
			&cli.Float64Flag{Name: "promotions-per-second", Usage: "client promotions admitted per second at most, more are answered busy (0 = 2)"},
			jsonFlag, logLevelFlag,
		},
		Action: runLoginsrv,
	}
}

// loginState is the key material of a login server's data directory.
type loginState struct {
	Key         ed25519.PrivateKey `json:"-"`
	PublicKey   string             `json:"login_key"`
	AdmitSecret string             `json:"admit_secret"`
	Dir         string             `json:"data"`
}

func loadLoginState(dir, secretFlag string) (loginState, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return loginState{}, err
	}
	key, err := identity.LoadOrCreateKey(filepath.Join(dir, loginKeyFile))
	if err != nil {
		return loginState{}, err
	}
	pub := identity.EncodeKey(key.Public().(ed25519.PublicKey))
	if err := atomicfile.WriteFile(filepath.Join(dir, loginPubFile), []byte(pub+"\n"), 0o644); err != nil {
		return loginState{}, err
	}
	secret := secretFlag
	if secret == "" {
		path := filepath.Join(dir, admitSecretFile)
		b, err := os.ReadFile(path)
		switch {
		case err == nil:
			secret = strings.TrimSpace(string(b))
		case errors.Is(err, os.ErrNotExist):
			secret = randomSecret()
			if err := atomicfile.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
				return loginState{}, err
			}
		default:
			return loginState{}, err
		}
	}
	return loginState{Key: key, PublicKey: pub, AdmitSecret: secret, Dir: dir}, nil
}

// loadOrCreateSecret reads a secret file (its trimmed text is the secret), creating it
// with a random secret if missing.
func loadOrCreateSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		return []byte(strings.TrimSpace(string(b))), nil
	case errors.Is(err, os.ErrNotExist):
		secret := randomSecret()
		if err := atomicfile.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
			return nil, err
		}
		return []byte(secret), nil
	}
	return nil, err
}

func runLoginsrv(c *cli.Context) error {
	log := newLogger(c)
	st, err := loadLoginState(c.String("data"), c.String("admit-secret"))
	if err != nil {
		return err
	}
	if c.Bool("init") {
		if c.Bool("json") {
			return printJSON(c.App.Writer, st)
		}
		fmt.Fprintf(c.App.Writer, "login key:    %s\nadmit secret: %s\n", st.PublicKey, st.AdmitSecret)
		return nil
	}
	var relaySecret []byte
	if !c.Bool("no-relay-credentials") {
		relaySecret, err = loadOrCreateSecret(filepath.Join(st.Dir, loginRelaySecret))
		if err != nil {
			return err
		}
	}
	store, err := loginsrv.OpenSQLite(filepath.Join(st.Dir, loginDBFile))
	if err != nil {
		return err
	}
	defer store.Close()
	params := loginsrv.DefaultArgon2Params
	params.Time = uint32(c.Uint("argon2-time"))
	params.MemoryKiB = uint32(c.Uint("argon2-memory"))
	params.Threads = uint8(c.Uint("argon2-threads"))
	maxConns := connBudget(10000, 3, 4)
	ln, err := net.Listen("tcp", c.String("listen"))
	if err != nil {
		return fmt.Errorf("--listen %s: %w", c.String("listen"), err)
	}
	srv, err := loginsrv.New(loginsrv.Config{
		Key:               st.Key,
		Listener:          ln,
		Store:             store,
		Hasher:            loginsrv.NewHasher(params, 0),
		AdmitSecret:       st.AdmitSecret,
		RelaySecret:       relaySecret,
		Relays:            c.StringSlice("relay"),
		CredentialTTL:     c.Duration("cred-ttl"),
		HeartbeatInterval: c.Duration("heartbeat"),
		MaxConns:          maxConns,
		Logger:            log,

		ClientsPerSupernode: c.Int("clients-per-supernode"),
		MinSupernodes:       c.Int("min-supernodes"),
		PromotionsPerSecond: c.Float64("promotions-per-second"),
	})
	if err != nil {
		ln.Close()
		return err
	}
	if addr := c.String("metrics-listen"); addr != "" {
		_, stop, err := serveMetrics(addr, func(w io.Writer) {
			srv.Metrics().WritePrometheus(w, "peerline_loginsrv")
			fmt.Fprintf(w, "# TYPE peerline_loginsrv_argon2_hashes_total counter\npeerline_loginsrv_argon2_hashes_total %d\n", srv.Hasher().Count())
		})
		if err != nil {
			ln.Close()
			return err
		}
		defer stop()
	}
	log.Info("login server listening", "addr", ln.Addr().String(), "login_key", st.PublicKey, "data", st.Dir, "max_conns", maxConns)
	return srv.Run(c.Context)
}

// connBudget is how many connections a server admits: def, or num/den of the descriptors
// the process may open (RLIMIT_NOFILE) when that is fewer. A flood is then shed by the
// admission policy, which keeps slots for sources that authenticated, before the
// descriptors run out and every accept fails, real users' too.
func connBudget(def, num, den int) int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == 0 {
		return def
	}
	return int(max(1, min(uint64(def), rl.Cur*uint64(num)/uint64(den))))
}
