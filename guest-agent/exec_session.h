#pragma once

// One Exec call: the gRPC reactor on one side, the process's pipes on the other. Callbacks from
// gRPC only queue work; a thread per call moves bytes with poll(), so a slow reader or a
// process that never reads stdin stalls only its own call (gRPC's flow control pushes back on
// the client, pipe capacity on the process). Exec is a raw method: the session reads output
// straight into the slices gRPC sends and decodes requests itself (exec_wire.h).
//
// A thread per call is bounded by a limit on sessions alive at once: past it, Exec answers
// RESOURCE_EXHAUSTED at once instead of starting another thread.

#include <grpcpp/grpcpp.h>

#include "absl/time/time.h"
#include "environment_manager.h"
#include "fork_server.h"
#include "llima/v1/agent.grpc.pb.h"

namespace llima {

struct ExecLimits {
  // Sessions alive at once. A session lives from the call's arrival until its thread ends:
  // the call itself, the hang-up grace after its client went away, and, for a detached
  // process whose client has gone, until that process exits (its output is drained).
  int max_sessions = 1024;
  // How long a new call may take to send its start message before it ends with
  // DEADLINE_EXCEEDED.
  absl::Duration start_timeout = absl::Seconds(30);
};

// The limits for every later call. Process-wide because calls are created through
// NewExecReactor, which the service calls with its own arguments only; set before serving.
void ConfigureExecSessions(const ExecLimits& limits);

// Creates the reactor for a new Exec call; it deletes itself when the call is done. Refuses
// the call (RESOURCE_EXHAUSTED) at the session limit, and (UNAVAILABLE) once stopping.
grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* NewExecReactor(
    EnvironmentManager& environments, ForkServer& fork_server);

// For a graceful stop: refuses new calls and ends those in flight with UNAVAILABLE. An
// attached process gets what a vanished client gives it (SIGHUP, SIGKILL after the grace); a
// detached one keeps running.
void StopExecSessions();

// Waits until every session's thread has ended or `deadline` has passed; false then.
bool WaitForExecSessions(absl::Time deadline);

// After the sessions have ended at a stop: a detached process still running would die of
// SIGPIPE (or, on a terminal, SIGHUP) at its next write once the agent's end of its output is
// closed. A small process forked for the purpose, "llima-drain", takes those ends over and
// discards what comes until the processes end.
void HandOverDetachedOutput();

// Sessions alive now.
int LiveExecSessions();

}  // namespace llima
