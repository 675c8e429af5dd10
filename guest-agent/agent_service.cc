#include "agent_service.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "exec_session.h"
#include "grpc_status.h"
#include "log.h"

namespace llima {
grpc::Status AgentServiceImpl::CreateEnvironment(grpc::ServerContext*,
                                                 const v1::CreateEnvironmentRequest* request,
                                                 v1::Environment* response) {
  absl::StatusOr<v1::Environment> env = environments_.CreateAndLog(*request);
  if (!env.ok()) return ToGrpcStatus(env.status());
  *response = std::move(*env);
  return grpc::Status::OK;
}

grpc::Status AgentServiceImpl::GetEnvironment(grpc::ServerContext*,
                                              const v1::GetEnvironmentRequest* request,
                                              v1::Environment* response) {
  absl::Time start = absl::Now();
  absl::StatusOr<v1::Environment> env = environments_.Get(*request);
  LogOperation("get", request->name().empty() ? request->project_path() : request->name(),
               absl::Now() - start, env.status());
  if (!env.ok()) return ToGrpcStatus(env.status());
  *response = std::move(*env);
  return grpc::Status::OK;
}

grpc::Status AgentServiceImpl::ListEnvironments(grpc::ServerContext*,
                                                const v1::ListEnvironmentsRequest*,
                                                v1::ListEnvironmentsResponse* response) {
  absl::Time start = absl::Now();
  for (v1::Environment& env : environments_.List()) {
    *response->add_environments() = std::move(env);
  }
  LogOperation("list", "", absl::Now() - start, absl::OkStatus(),
               absl::StrCat("count=", response->environments_size()));
  return grpc::Status::OK;
}

grpc::Status AgentServiceImpl::DeleteEnvironment(grpc::ServerContext*,
                                                 const v1::DeleteEnvironmentRequest* request,
                                                 v1::DeleteEnvironmentResponse*) {
  absl::Time start = absl::Now();
  absl::Status s = environments_.Delete(request->name());
  LogOperation("delete", request->name(), absl::Now() - start, s);
  return ToGrpcStatus(s);
}

grpc::Status AgentServiceImpl::GetAgentInfo(grpc::ServerContext*, const v1::GetAgentInfoRequest*,
                                            v1::AgentInfo* response) {
  response->set_version(kAgentVersion);
  response->set_cgroups(environments_.cgroups().available());
  response->set_cgroups_detail(environments_.cgroups().available()
                                   ? "cgroup v2"
                                   : environments_.cgroups().unavailable_reason());
  *response->mutable_default_limits() = environments_.default_limits();
  *response->mutable_limits_enforcement() = environments_.cgroups().enforcement();
  return grpc::Status::OK;
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* AgentServiceImpl::Exec(
    grpc::CallbackServerContext*) {
  return NewExecReactor(environments_, fork_server_);
}

}  // namespace llima
