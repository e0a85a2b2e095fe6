package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"

	"github.com/amibus/amibus/internal/config"
)

// Results of a configuration reload: the values of the result label of
// ami_config_reloads_total.
const (
	// ReloadApplied: the new file was valid and its node changes applied.
	ReloadApplied = "applied"
	// ReloadUnchanged: the new file was valid and changed nothing.
	ReloadUnchanged = "unchanged"
	// ReloadInvalid: the new file did not parse or validate; nothing changed.
	ReloadInvalid = "invalid"
	// ReloadRefused: the new file changes a setting the running process
	// cannot apply (or applying failed); nothing changed.
	ReloadRefused = "refused"
)

// watchSettle is how long the watcher waits after a change in the
// directory before it reads the file: an editor's save or a ConfigMap's
// symlink swap is several events, and the file is read once, complete.
const watchSettle = 200 * time.Millisecond

// ApplyFunc applies a new configuration, parsed and validated as at
// start-up, to the running process. It reports whether anything changed;
// an error means nothing changed (or, when changed is true, that part of
// the change failed, which the error says).
type ApplyFunc func(ctx context.Context, next *config.Config) (changed bool, err error)

// NodeReloader is a service whose node list can change while it runs
// (ami-ingest's and ami-actor's Service).
type NodeReloader interface {
	Reload(ctx context.Context, next *config.Config) (config.NodeChanges, error)
}

// ReloadNodes is the ApplyFunc of a NodeReloader.
func ReloadNodes(svc NodeReloader) ApplyFunc {
	return func(ctx context.Context, next *config.Config) (bool, error) {
		ch, err := svc.Reload(ctx, next)
		return !ch.Empty(), err
	}
}

// NodeListSetter is a service that reads of the nodes their names only
// (ami-state's Service: the nodes its replicas share).
type NodeListSetter interface {
	SetNodes(names []string) (changed bool, err error)
}

// ReloadNodeList is the ApplyFunc of a NodeListSetter whose process started
// with running and reads what b does: a new configuration that changes
// anything else b reads refuses the whole reload naming the fields
// (config.CheckReload, against the start-up configuration as for the
// other binaries); otherwise the new node names are handed to svc, and a
// list svc refuses changes nothing.
func ReloadNodeList(running *config.Config, b config.Binary, svc NodeListSetter) ApplyFunc {
	return func(_ context.Context, next *config.Config) (bool, error) {
		if err := config.CheckReload(running, next, b); err != nil {
			return false, err
		}
		changed, err := svc.SetNodes(next.NodeNames())
		if err != nil && !changed {
			return false, fmt.Errorf("%w: nodes: %w", config.ErrReloadRefused, err)
		}
		return changed, err
	}
}

// StartReloader re-reads the configuration file on SIGHUP and, with
// --watch-config, when it changes, and hands each valid new configuration
// to apply; it runs until the returned stop is called (which waits for it).
// The file's directory is watched, not the file: a Kubernetes ConfigMap
// update swaps a symlink in the directory and never touches the file's own
// name, and editors replace a file by renaming. A change whose content is
// the one last read is ignored. Invalid files are logged one line per
// problem, naming its field; every reload is counted by result.
func (e *Env) StartReloader(apply ApplyFunc) (stop func(), err error) {
	var w *fsnotify.Watcher
	if e.WatchConfig {
		if w, err = fsnotify.NewWatcher(); err != nil {
			return nil, err
		}
		for _, dir := range watchDirs(e.ConfigPath, e.Config) {
			if err := w.Add(dir); err != nil {
				w.Close()
				return nil, err
			}
		}
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	r := &reloader{env: e, apply: apply, w: w, hup: hup}
	r.last, _ = os.ReadFile(e.ConfigPath)
	go func() {
		defer close(done)
		r.run(ctx)
	}()
	return func() {
		cancel()
		<-done
		signal.Stop(hup)
		if w != nil {
			w.Close()
		}
	}, nil
}

type reloader struct {
	env   *Env
	apply ApplyFunc
	w     *fsnotify.Watcher // nil without --watch-config
	hup   chan os.Signal
	last  []byte // the content read last
	// invalid: the last file read did not load; any change in a watched
	// directory (a secret file arriving after the file naming it) retries.
	invalid bool
}

// watchDirs are the directories whose changes may change the configuration:
// the file's, and those of the secret files it names (a Kubernetes Secret
// volume is updated by a symlink swap too, and a node's new secret_file
// may appear after the ConfigMap that names it).
func watchDirs(path string, cfg *config.Config) []string {
	dirs := []string{filepath.Dir(path)}
	add := func(f string) {
		if f == "" {
			return
		}
		d := filepath.Dir(f)
		for _, x := range dirs {
			if x == d {
				return
			}
		}
		dirs = append(dirs, d)
	}
	for _, n := range cfg.Nodes {
		add(n.SecretFile)
		add(n.ActorSecretFile)
	}
	return dirs
}

func (r *reloader) run(ctx context.Context) {
	var events <-chan fsnotify.Event
	var errs <-chan error
	if r.w != nil {
		events, errs = r.w.Events, r.w.Errors
	}
	settle := time.NewTimer(watchSettle)
	settle.Stop()
	defer settle.Stop()
	name := filepath.Base(r.env.ConfigPath)
	cfgDir := filepath.Dir(r.env.ConfigPath)
	secrets := false // a secret directory changed since the last reload
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.hup:
			r.env.Log.Info("SIGHUP: reloading the configuration", zap.String("file", r.env.ConfigPath))
			r.reload(ctx, true, secrets)
			secrets = false
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			// The file itself, a ConfigMap's or Secret's "..data" symlink
			// swap, or a file appearing in a secret directory.
			inCfg := filepath.Dir(ev.Name) == cfgDir
			if b := filepath.Base(ev.Name); b == name || b == "..data" || !inCfg {
				secrets = secrets || !inCfg
				settle.Reset(watchSettle)
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			r.env.Log.Warn("watching the configuration file", zap.Error(err))
		case <-settle.C:
			r.reload(ctx, false, secrets)
			secrets = false
		}
	}
}

// reload reads the file and applies it. A change seen by the watcher whose
// content is the one read last (an editor's temporary file, a touch) is
// not a reload, unless that content did not load or secret files changed;
// SIGHUP always is.
func (r *reloader) reload(ctx context.Context, asked, secrets bool) {
	e := r.env
	data, err := os.ReadFile(e.ConfigPath)
	if err == nil && !asked && !secrets && !r.invalid && bytes.Equal(data, r.last) {
		return
	}
	if err == nil {
		r.last = data
	}
	count := func(result string) { e.Metrics.ConfigReloads.WithLabelValues(result).Inc() }
	next, err := config.LoadFile(e.ConfigPath)
	r.invalid = err != nil
	if err != nil {
		count(ReloadInvalid)
		var ve *config.ValidationError
		if errors.As(err, &ve) {
			for _, fe := range ve.Errors {
				e.Log.Error("configuration reload: invalid file, nothing changed",
					zap.String("field", fe.Path), zap.String("problem", fe.Msg))
			}
			if ve.Omitted > 0 {
				e.Log.Error("configuration reload: more problems", zap.Int("omitted", ve.Omitted))
			}
			return
		}
		e.Log.Error("configuration reload: invalid file, nothing changed", zap.Error(err))
		return
	}
	if e.levelFlag != "" {
		next.Log.Level = e.levelFlag
	}
	r.watchSecrets(next)
	changed, err := r.apply(ctx, next)
	switch {
	case err != nil && !changed:
		count(ReloadRefused)
		e.Log.Error("configuration reload refused, nothing changed", zap.Error(err))
	case err != nil:
		count(ReloadApplied)
		e.Log.Error("configuration reload applied in part", zap.Error(err))
	case changed:
		count(ReloadApplied)
	default:
		count(ReloadUnchanged)
		e.Log.Info("configuration reload: nothing to change")
	}
}

// watchSecrets adds the directories of the secret files next names, so that
// a node added by a reload has its secret followed like those of the nodes
// at start-up. A directory already watched is not added twice (fsnotify).
func (r *reloader) watchSecrets(next *config.Config) {
	if r.w == nil {
		return
	}
	for _, dir := range watchDirs(r.env.ConfigPath, next) {
		if err := r.w.Add(dir); err != nil {
			r.env.Log.Warn("configuration reload: secret directory not watched", zap.String("dir", dir), zap.Error(err))
		}
	}
}
