#pragma once

// The gRPC face of the agent: translates requests to EnvironmentManager calls and absl::Status
// to gRPC status, and logs one line per call. Exec runs on the callback API as a raw method, its
// messages encoded by the agent itself (see exec_session.h and exec_wire.h).

#include <grpcpp/grpcpp.h>

#include "environment_manager.h"
#include "fork_server.h"
#include "llima/v1/agent.grpc.pb.h"

namespace llima {

inline constexpr char kAgentVersion[] = "0.1.0";

class AgentServiceImpl final
    : public v1::AgentService::WithRawCallbackMethod_Exec<v1::AgentService::Service> {
 public:
  AgentServiceImpl(EnvironmentManager& environments, ForkServer& fork_server)
      : environments_(environments), fork_server_(fork_server) {}

  grpc::Status CreateEnvironment(grpc::ServerContext* context,
                                 const v1::CreateEnvironmentRequest* request,
                                 v1::Environment* response) override;
  grpc::Status GetEnvironment(grpc::ServerContext* context,
                              const v1::GetEnvironmentRequest* request,
                              v1::Environment* response) override;
  grpc::Status ListEnvironments(grpc::ServerContext* context,
                                const v1::ListEnvironmentsRequest* request,
                                v1::ListEnvironmentsResponse* response) override;
  grpc::Status DeleteEnvironment(grpc::ServerContext* context,
                                 const v1::DeleteEnvironmentRequest* request,
                                 v1::DeleteEnvironmentResponse* response) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Exec(
      grpc::CallbackServerContext* context) override;
  grpc::Status GetAgentInfo(grpc::ServerContext* context, const v1::GetAgentInfoRequest* request,
                            v1::AgentInfo* response) override;

 private:
  EnvironmentManager& environments_;
  ForkServer& fork_server_;
};

}  // namespace llima
