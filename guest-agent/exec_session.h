#pragma once

// One Exec call: the gRPC reactor on one side, the process's pipes on the other. Callbacks from
// gRPC only queue work; a thread per call moves bytes with poll(), so a slow reader or a
// process that never reads stdin stalls only its own call (gRPC's flow control pushes back on
// the client, pipe capacity on the process).

#include <grpcpp/grpcpp.h>

#include "environment_manager.h"
#include "fork_server.h"
#include "llima/v1/agent.grpc.pb.h"

namespace llima {

// Creates the reactor for a new Exec call; it deletes itself when the call is done.
grpc::ServerBidiReactor<v1::ExecRequest, v1::ExecResponse>* NewExecReactor(
    EnvironmentManager& environments, ForkServer& fork_server);

}  // namespace llima
