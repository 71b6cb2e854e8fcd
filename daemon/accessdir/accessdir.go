// Package accessdir keeps the access directories of mwid's ssh_host
// outputs current (see package hostaccess): the host certificate and user
// CAs that each renewal brings, through Keeper.Certified, and the locks and
// KRL that Keeper.Run polls from the issuer every PollInterval. Each file is
// rewritten at least every hostaccess.RefreshInterval, which is mwid's
// heartbeat.
//
// The Keeper asks the daemon only for what a poll needs, through the
// functions of Config: the directories, the issuer and the bot's identity.
package accessdir

import (
	"bytes"
	"context"
	"crypto/tls"
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
	"github.com/mwi-project/mwi/daemon/output"
	"github.com/mwi-project/mwi/internal/hostaccess"
	"github.com/mwi-project/mwi/internal/krl"
)

// PollInterval is how often mwid asks the issuer for its locks and KRL
// while an ssh_host output has an access_dir: a lock reaches the host's
// sshd within it, plus the time of one request.
const PollInterval = 3 * time.Second

// pollTimeout bounds one request of a poll.
const pollTimeout = 10 * time.Second

// Issuer is what a Keeper asks of the issuer; *issuerclient.Client
// implements it. Each call returns the ETag of its answer and whether the
// answer changed since etag, which is then empty.
type Issuer interface {
	Locks(ctx context.Context, identity *tls.Certificate, etag string) (list api.LockList, newETag string, modified bool, err error)
	KRL(ctx context.Context, etag string) (krl []byte, newETag string, modified bool, err error)
}

// Config is what a Keeper reads from the daemon. The functions are called
// at each poll, so that a reload that changes what they return applies at
// the next.
type Config struct {
	Log *slog.Logger
	// Now, if set, replaces time.Now.
	Now func() time.Time
	// Dirs returns the access directories to keep (see Dirs).
	Dirs func() []string
	// Issuer returns the issuer to poll.
	Issuer func() Issuer
	// Identity returns the bot's identity to poll the locks with, or nil
	// until mwid has joined.
	Identity func() *tls.Certificate
}

// Keeper keeps the access directories current. One mutex covers the state
// and the writes, so that the renewal and the poll never write a directory
// at once, nor an older state over a newer.
type Keeper struct {
	log *slog.Logger
	now func() time.Time
	cfg Config
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
	dirs      map[string]*dirState
}

// dirState is what the keeper knows of one access directory.
type dirState struct {
	hostCert string // authorized_keys form
	userCAs  []string
	// written is the content last written, with Written as it was then,
	// and krlSerial the KRL last written.
	written   hostaccess.File
	krlSerial int
	lastWrite time.Time
	lastError string
}

// New returns a Keeper that reads from the daemon what cfg says.
func New(cfg Config) *Keeper {
	k := &Keeper{log: cfg.Log, now: cfg.Now, cfg: cfg, kick: make(chan struct{}, 1), dirs: map[string]*dirState{}}
	if k.log == nil {
		k.log = slog.Default()
	}
	if k.now == nil {
		k.now = time.Now
	}
	return k
}

// Certified records the host certificate and user CAs for the access
// directory dir and writes its files at once, so that when a renewal
// reports the output written, the files agree with the certificate. It
// implements output.AccessKeeper.
func (k *Keeper) Certified(dir string, hostCert *ssh.Certificate, userCAs []ssh.PublicKey) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	d := k.dirs[dir]
	if d == nil {
		d = &dirState{}
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
func (k *Keeper) seed(dir string) {
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
func (k *Keeper) resume(dir string) {
	f, err := hostaccess.Read(dir)
	if err != nil || f.HostCertificate == "" {
		return // the first renewal certifies it
	}
	k.seed(dir)
	k.dirs[dir] = &dirState{hostCert: f.HostCertificate, userCAs: f.UserCAs}
	k.log.Info("access directory taken up from the files an earlier mwid wrote, until a renewal", "access_dir", dir)
}

// write writes the files of dir if they changed, or if force is set or
// the last write is RefreshInterval old: the file's Written is mwid's
// heartbeat, by which mwictl tells a running mwid from a stopped one.
// k.mu is held.
func (k *Keeper) write(dir string, d *dirState, force bool) error {
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

// Poll polls the issuer once, as Run does, if any access directory is
// configured: mwid --oneshot's single poll.
func (k *Keeper) Poll(ctx context.Context) {
	if dirs := k.cfg.Dirs(); len(dirs) > 0 {
		k.poll(ctx, k.cfg.Issuer(), k.cfg.Identity(), dirs)
	}
}

// Run runs Poll every PollInterval, and at once when a directory was
// certified, until ctx is done.
func (k *Keeper) Run(ctx context.Context) {
	t := time.NewTicker(PollInterval)
	defer t.Stop()
	for {
		k.Poll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-k.kick:
		}
	}
}

// poll fetches the locks and the KRL from ic with the bot identity id
// (nil before mwid joined), and brings the access directories dirs up to date; the
// directories no longer configured are forgotten. Whether or not the
// issuer answers, each directory's file is rewritten at least every
// RefreshInterval, with the last locks known. A directory not certified
// since mwid started is taken up from the files an earlier mwid left
// there, so that a restart while the issuer is unreachable does not leave
// them to go stale, which would refuse every login.
func (k *Keeper) poll(ctx context.Context, ic Issuer, id *tls.Certificate, dirs []string) {
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
	if id == nil {
		// Not joined yet: nothing to ask the issuer with, but the
		// heartbeat goes on.
		k.mu.Lock()
		for dir, d := range k.dirs {
			k.write(dir, d, false)
		}
		k.mu.Unlock()
		return
	}

	ctx, cancel := context.WithTimeout(ctx, pollTimeout)
	defer cancel()
	list, locksETag, locksChanged, lerr := ic.Locks(ctx, id, locksETag)
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

// Status returns what mwid's status shows of the access directory dir:
// nil for one not known yet.
func (k *Keeper) Status(dir string) *api.AccessDirStatus {
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

// Dirs returns the access directories of the ssh_host outputs among outs.
func Dirs(outs []output.Output) []string {
	var dirs []string
	for _, o := range outs {
		if h, ok := o.(output.SSHHost); ok && h.AccessDir != "" {
			dirs = append(dirs, h.AccessDir)
		}
	}
	return dirs
}
