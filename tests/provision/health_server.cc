// A minimal gRPC server with the standard health service, for testing provision/health-check.sh
// against a real gRPC implementation (the same grpc++ and the same default health service as
// llima-agent). It also registers the unimplemented AgentService base: a synchronous server
// needs at least one synchronous service besides the health service.
// usage: health_server SOCKET serving|not-serving
// Prints "ready" on stdout once it listens, then serves until stdin is closed.
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "llima/v1/agent.grpc.pb.h"

int main(int argc, char** argv) {
  if (argc != 3 || (std::strcmp(argv[2], "serving") != 0 &&
                    std::strcmp(argv[2], "not-serving") != 0)) {
    std::fprintf(stderr, "usage: %s SOCKET serving|not-serving\n", argv[0]);
    return 2;
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  llima::v1::AgentService::Service unimplemented_api;
  builder.RegisterService(&unimplemented_api);
  builder.AddListeningPort(std::string("unix:") + argv[1], grpc::InsecureServerCredentials());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    std::fprintf(stderr, "health_server: cannot listen on %s\n", argv[1]);
    return 1;
  }
  server->GetHealthCheckService()->SetServingStatus(std::strcmp(argv[2], "serving") == 0);
  std::printf("ready\n");
  std::fflush(stdout);
  char buf[256];
  while (read(STDIN_FILENO, buf, sizeof buf) > 0) {
  }
  server->Shutdown();
  unlink(argv[1]);
  return 0;
}
