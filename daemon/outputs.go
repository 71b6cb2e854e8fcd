package daemon

import (
	"context"
	"time"

	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/daemon/identity"
	"github.com/mwi-project/mwi/daemon/output"
	"github.com/mwi-project/mwi/daemon/sshconfig"
)

// outputState is what the last write of an output did.
type outputState struct {
	lastWrite   *time.Time
	lastError   string
	lastErrorAt *time.Time
}

// pendingWrite is an output that a renewal asked the issuer for, with the
// function that writes it from the answer.
type pendingWrite struct {
	out   output.Output
	write output.Write
}

// requestOutputs adds what each output needs from the issuer to req, and
// returns the writes to make once the issuer answers. An output that
// cannot say what it needs (a host key that cannot be read) is left out of
// this renewal and its failure recorded, so that it does not stop the
// renewal of everything else; an output that writes nothing has no write.
func (s *Server) requestOutputs(outs []output.Output, req *output.Request) []pendingWrite {
	var writes []pendingWrite
	for _, o := range outs {
		w, err := o.Request(req)
		if err != nil {
			s.recordOutput(o, err)
			continue
		}
		if w != nil {
			writes = append(writes, pendingWrite{o, w})
		}
	}
	return writes
}

// writeOutputs makes the writes from the credentials c, recording each
// outcome for Status, and returns the first failure.
func (s *Server) writeOutputs(ctx context.Context, writes []pendingWrite, c *identity.Credentials, env output.Env) error {
	var first error
	for _, w := range writes {
		err := w.write(ctx, c, env)
		s.recordOutput(w.out, err)
		if err != nil && first == nil {
			first = err
		}
	}
	return first
}

// outputEnv is what the outputs take from cfg as a whole.
func (s *Server) outputEnv(cfg *config.Config) output.Env {
	return output.Env{Log: s.log, Patterns: sshconfig.Patterns(cfg.SSHHosts), Revision: cfg.Revision, Access: s.access}
}

// outputTypes returns the types of cfg's outputs, for metrics.
func outputTypes(cfg *config.Config) []string {
	var types []string
	for _, o := range cfg.Outputs {
		types = append(types, o.Type())
	}
	return types
}

// recordOutput records the outcome of writing the output o, for Status
// and metrics, and logs a failure. Every kind of output reports here.
func (s *Server) recordOutput(o output.Output, err error) {
	path := o.Path()
	if err != nil {
		s.metrics.OutputFailed(o.Type())
	}
	now := s.now()
	s.mu.Lock()
	st := s.outputs[path]
	if st == nil {
		st = &outputState{}
		s.outputs[path] = st
	}
	if err != nil {
		st.lastError, st.lastErrorAt = err.Error(), &now
	} else {
		st.lastWrite, st.lastError, st.lastErrorAt = &now, "", nil
	}
	s.mu.Unlock()
	if err != nil {
		s.log.Error("output failed", "path", path, "err", err)
	}
}
