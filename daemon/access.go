package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/daemon/identity"
	"github.com/mwi-project/mwi/daemon/issuerclient"
	"github.com/mwi-project/mwi/daemon/output"
	"github.com/mwi-project/mwi/internal/hostaccess"
	"github.com/mwi-project/mwi/internal/krl"
)

// accessPollInterval is how often mwid asks the issuer for its locks and
// KRL while an ssh_host output has an access_dir: a lock reaches the
// host's sshd within it, plus the time of one request.
const accessPollInterval = 3 * time.Second

// accessPollTimeout bounds one request of a poll.
const accessPollTimeout = 10 * time.Second

// accessKeeper keeps the access directories of ssh_host outputs current
// (see package hostaccess): the host certificate and user CAs that each
// renewal brings, through Certified, and the locks and KRL that the poll
// loop fetches from the issuer. One mutex covers the state and the
// writes, so that the renewal and the poll never write a directory at
// once, nor an older state over a newer.
type accessKeeper struct {
	log *slog.Logger
	now func() time.Time
	// kick asks the poll loop to poll now: a directory was certified.
	kick chan struct{}

	mu sync.Mutex
	// locks, and when the issuer last answered for them (zero: never,
	// since mwid started, unless a directory's file said so).
	locks        []api.Lock
	locksETag    string
	locksUpdated time.Time
	// krl is the issuer's KRL, nil until fetched; krlSerial counts its
	// changes, so that each directory knows whether it has the latest.
	krl       []byte
	krlETag   string
	krlSerial int
	pollErr   string // the last poll's failure, or ""
	dirs      map[string]*accessDir
}

// accessDir is what the keeper knows of one access directory.
type accessDir struct {
	hostCert string // authorized_keys form
	userCAs  []string
	// written is the content last written, with Written as it was then,
	// and krlSerial the KRL last written.
	written   hostaccess.File
	krlSerial int
	lastWrite time.Time
	lastError string
}

func newAccessKeeper(log *slog.Logger, now func() time.Time) *accessKeeper {
	return &accessKeeper{log: log, now: now, kick: make(chan struct{}, 1), dirs: map[string]*accessDir{}}
}

// Certified records the host certificate and user CAs for the access
// directory dir and writes its files at once, so that when a renewal
// reports the output written, the files agree with the certificate. It
// implements output.AccessKeeper.
func (k *accessKeeper) Certified(dir string, hostCert *ssh.Certificate, userCAs []ssh.PublicKey) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	d := k.dirs[dir]
	if d == nil {
		d = &accessDir{}
		k.dirs[dir] = d
		k.seed(dir)
	}
	d.hostCert = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hostCert)))
	d.userCAs = nil
	for _, ca := range userCAs {
		d.userCAs = append(d.userCAs, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ca))))
	}
	err := k.write(dir, d, true)
	select {
	case k.kick <- struct{}{}:
	default:
	}
	return err
}

// seed takes the locks from the file an earlier mwid left in dir, while
// this one has not heard from the issuer: a restart must not lift a lock,
// even while the issuer is unreachable. k.mu is held.
func (k *accessKeeper) seed(dir string) {
	if !k.locksUpdated.IsZero() || k.locks != nil {
		return
	}
	f, err := hostaccess.Read(dir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			k.log.Warn("cannot read the access directory's earlier locks; starting without them", "access_dir", dir, "err", err)
		}
		return
	}
	k.locks, k.locksUpdated = f.Locks, f.LocksUpdated
}

// resume takes up the access directory dir from the files an earlier mwid
// wrote there, if any. k.mu is held.
func (k *accessKeeper) resume(dir string) {
	f, err := hostaccess.Read(dir)
	if err != nil || f.HostCertificate == "" {
		return // the first renewal certifies it
	}
	k.seed(dir)
	k.dirs[dir] = &accessDir{hostCert: f.HostCertificate, userCAs: f.UserCAs}
	k.log.Info("access directory taken up from the files an earlier mwid wrote, until a renewal", "access_dir", dir)
}

// write writes the files of dir if they changed, or if force is set or
// the last write is RefreshInterval old: the file's Written is mwid's
// heartbeat, by which mwictl tells a running mwid from a stopped one.
// k.mu is held.
func (k *accessKeeper) write(dir string, d *accessDir, force bool) error {
	now := k.now()
	f := hostaccess.File{
		Version:         hostaccess.Version,
		Written:         now,
		LocksUpdated:    k.locksUpdated,
		Locks:           k.locks,
		HostCertificate: d.hostCert,
		UserCAs:         d.userCAs,
	}
	var krl []byte
	if d.krlSerial != k.krlSerial {
		krl = k.krl
	}
	if !force && krl == nil && sameAccess(f, d.written) && now.Sub(d.lastWrite) < hostaccess.RefreshInterval {
		return nil
	}
	err := output.WriteAccess(output.AccessDirectory(dir), f, krl)
	if err != nil {
		if msg := err.Error(); msg != d.lastError {
			k.log.Error("cannot write the access directory", "access_dir", dir, "err", err)
			d.lastError = msg
		}
		return err
	}
	if d.lastError != "" {
		k.log.Info("access directory written again", "access_dir", dir)
	}
	d.written, d.lastWrite, d.lastError = f, now, ""
	if krl != nil {
		d.krlSerial = k.krlSerial
	}
	return nil
}

// sameAccess reports whether a and b say the same, leaving out when they
// were written; when the issuer last answered is left out too, since it
// moves at every poll.
func sameAccess(a, b hostaccess.File) bool {
	return a.HostCertificate == b.HostCertificate && slices.Equal(a.UserCAs, b.UserCAs) &&
		slices.EqualFunc(a.Locks, b.Locks, func(x, y api.Lock) bool {
			return x.Bot == y.Bot && x.Instance == y.Instance && x.Token == y.Token && x.Reason == y.Reason &&
				x.At.Equal(y.At) && x.Expires.Equal(y.Expires)
		})
}

// poll fetches the locks and the KRL from the issuer with the bot
// identity of c, and brings the access directories dirs up to date; the
// directories no longer configured are forgotten. Whether or not the
// issuer answers, each directory's file is rewritten at least every
// RefreshInterval, with the last locks known. A directory not certified
// since mwid started is taken up from the files an earlier mwid left
// there, so that a restart while the issuer is unreachable does not leave
// them to go stale, which would refuse every login.
func (k *accessKeeper) poll(ctx context.Context, ic *issuerclient.Client, c *identity.Credentials, dirs []string) {
	k.mu.Lock()
	for dir := range k.dirs {
		if !slices.Contains(dirs, dir) {
			delete(k.dirs, dir)
		}
	}
	for _, dir := range dirs {
		if k.dirs[dir] == nil {
			k.resume(dir)
		}
	}
	known := len(k.dirs) > 0
	locksETag, krlETag := k.locksETag, k.krlETag
	k.mu.Unlock()
	if !known {
		return
	}
	if c == nil {
		// Not joined yet: nothing to ask the issuer with, but the
		// heartbeat goes on.
		k.mu.Lock()
		for dir, d := range k.dirs {
			k.write(dir, d, false)
		}
		k.mu.Unlock()
		return
	}

	ctx, cancel := context.WithTimeout(ctx, accessPollTimeout)
	defer cancel()
	list, locksETag, locksChanged, lerr := ic.Locks(ctx, c.TLS, locksETag)
	data, krlETag, krlChanged, kerr := ic.KRL(ctx, krlETag)

	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	if kerr == nil && krlChanged {
		// sshd reads a RevokedKeys file that is not a KRL as a list of
		// keys: an empty answer or an error page would revoke no one.
		if err := krl.Check(data); err != nil {
			kerr = fmt.Errorf("GET /v1/ssh/krl: %w; keeping the last KRL", err)
		}
	}
	if lerr == nil {
		k.locksETag, k.locksUpdated = locksETag, now
		if locksChanged {
			if list.Locks == nil {
				list.Locks = []api.Lock{}
			}
			toLocalClock(list, now)
			if !sameAccess(hostaccess.File{Locks: list.Locks}, hostaccess.File{Locks: k.locks}) {
				k.log.Info("locks changed", "locks", len(list.Locks))
			}
			k.locks = list.Locks
		}
	}
	if kerr == nil {
		k.krlETag = krlETag
		if krlChanged && (k.krl == nil || !bytes.Equal(data, k.krl)) {
			k.krl = data
			k.krlSerial++
		}
	}
	err := errors.Join(lerr, kerr)
	switch {
	case err != nil && err.Error() != k.pollErr:
		k.log.Warn("cannot poll the issuer's locks and KRL; the access directories keep the last ones", "err", err)
		k.pollErr = err.Error()
	case err == nil && k.pollErr != "":
		k.log.Info("the issuer's locks and KRL are polled again")
		k.pollErr = ""
	}
	for dir, d := range k.dirs {
		k.write(dir, d, false)
	}
}

// toLocalClock moves the expiry of list's locks from the issuer's clock,
// whose time list.Now gives, to this host's, at now: mwictl compares them
// with the host's clock, and a host clock ahead of the issuer's would
// otherwise lift a lock early by as much.
func toLocalClock(list api.LockList, now time.Time) {
	if list.Now.IsZero() {
		return
	}
	skew := now.Sub(list.Now)
	for i := range list.Locks {
		if !list.Locks[i].Expires.IsZero() {
			list.Locks[i].Expires = list.Locks[i].Expires.Add(skew).Round(0)
		}
	}
}

// status returns what status shows of the access directory dir: nil for
// one not known yet.
func (k *accessKeeper) status(dir string) *api.AccessDirStatus {
	k.mu.Lock()
	defer k.mu.Unlock()
	d := k.dirs[dir]
	if d == nil {
		return nil
	}
	st := &api.AccessDirStatus{Path: dir, Locks: len(k.locks), LastError: d.lastError, PollError: k.pollErr}
	if !d.lastWrite.IsZero() {
		t := d.lastWrite
		st.LastWrite = &t
	}
	if !k.locksUpdated.IsZero() {
		t := k.locksUpdated
		st.LocksUpdated = &t
	}
	return st
}

// accessDirs returns the access directories of cfg's ssh_host outputs.
func accessDirs(cfg *config.Config) []string {
	var dirs []string
	for _, o := range cfg.Outputs {
		if h, ok := o.(output.SSHHost); ok && h.AccessDir != "" {
			dirs = append(dirs, h.AccessDir)
		}
	}
	return dirs
}

// pollAccess runs the access keeper's poll every accessPollInterval, and
// at once when a directory was certified, until ctx is done. It reads the
// configuration at each poll, so that a reload that adds or removes an
// access_dir applies at the next.
func (s *Server) pollAccess(ctx context.Context) {
	t := time.NewTicker(accessPollInterval)
	defer t.Stop()
	for {
		if dirs := accessDirs(s.config()); len(dirs) > 0 {
			s.access.poll(ctx, s.issuer.Load(), s.creds.Current(), dirs)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.access.kick:
		}
	}
}
