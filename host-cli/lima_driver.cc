#include "lima_driver.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "embedded_lima_config.h"
#include "json.h"
#include "read_file.h"
#include "unique_fd.h"

extern char** environ;

namespace llima {
namespace {

constexpr char kInstallLima[] =
    "limactl was not found in PATH. llima-box runs its environments in a Lima VM: install Lima "
    "first (on macOS: brew install lima), or use --local with an agent on this machine";

std::string LimaHome() {
  const char* lima_home = getenv("LIMA_HOME");
  if (lima_home != nullptr && *lima_home != '\0') return lima_home;
  const char* home = getenv("HOME");
  return absl::StrCat(home != nullptr ? home : "", "/.lima");
}

std::string LastLines(const std::string& text, int count) {
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
  if (lines.size() > static_cast<size_t>(count)) lines.erase(lines.begin(), lines.end() - count);
  return absl::StrJoin(lines, "\n");
}

}  // namespace

const std::string& DefaultLimaConfig() {
  static const std::string* config = new std::string(kEmbeddedLimaConfig);
  return *config;
}

absl::StatusOr<CommandResult> RunProgram(const std::vector<std::string>& argv,
                                         const std::function<void(const std::string&)>& on_line) {
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
    return absl::InternalError("cannot create pipes");
  }
  UniqueFd out_r(out[0]), out_w(out[1]), err_r(err[0]), err_w(err[1]);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out_w.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, err_w.get(), 2);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid;
  int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    if (rc == ENOENT) return absl::NotFoundError(absl::StrCat(argv[0], " not found"));
    return absl::InternalError(absl::StrCat("cannot run ", argv[0], ": ", strerror(rc)));
  }
  out_w.reset();
  err_w.reset();
  CommandResult result;
  std::string pending_line;
  while (out_r || err_r) {
    pollfd pfds[2] = {{out_r ? out_r.get() : -1, POLLIN, 0}, {err_r ? err_r.get() : -1, POLLIN, 0}};
    if (poll(pfds, 2, -1) < 0 && errno != EINTR) break;
    char buf[8192];
    if (pfds[0].revents) {
      ssize_t n = read(out_r.get(), buf, sizeof(buf));
      if (n <= 0) out_r.reset();
      else result.out.append(buf, n);
    }
    if (pfds[1].revents) {
      ssize_t n = read(err_r.get(), buf, sizeof(buf));
      if (n <= 0) {
        err_r.reset();
      } else {
        result.err.append(buf, n);
        pending_line.append(buf, n);
        size_t nl;
        while ((nl = pending_line.find('\n')) != std::string::npos) {
          if (on_line) on_line(pending_line.substr(0, nl));
          pending_line.erase(0, nl + 1);
        }
      }
    }
  }
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

namespace {

// A field of limactl's JSON as the proto3 JSON mapping reads it: null is the default, an
// integer may come as a number or as a string of digits.
absl::Status ReadString(const json::Value& object, absl::string_view key, std::string* out) {
  const json::Value* v = object.Find(key);
  if (v == nullptr || v->is_null()) return absl::OkStatus();
  if (v->type() != json::Value::Type::kString) {
    return absl::InvalidArgumentError(absl::StrCat("\"", key, "\" is not a string"));
  }
  *out = v->text();
  return absl::OkStatus();
}

absl::Status ReadInteger(const json::Value& object, absl::string_view key, int64_t min,
                         int64_t max, int64_t* out) {
  const json::Value* v = object.Find(key);
  if (v == nullptr || v->is_null()) return absl::OkStatus();
  int64_t value;
  if ((v->type() != json::Value::Type::kNumber && v->type() != json::Value::Type::kString) ||
      !absl::SimpleAtoi(v->text(), &value) || value < min || value > max) {
    return absl::InvalidArgumentError(absl::StrCat("\"", key, "\" is not an integer in range"));
  }
  *out = value;
  return absl::OkStatus();
}

absl::StatusOr<internal::LimaInstance> ReadInstance(const json::Value& object) {
  if (object.type() != json::Value::Type::kObject) {
    return absl::InvalidArgumentError("a line is not a JSON object");
  }
  std::string name, status, dir, arch, vm_type;
  int64_t cpus = 0, memory = 0, disk = 0;
  for (absl::Status s : {ReadString(object, "name", &name), ReadString(object, "status", &status),
                         ReadString(object, "dir", &dir), ReadString(object, "arch", &arch),
                         ReadString(object, "vmType", &vm_type),
                         ReadInteger(object, "cpus", INT32_MIN, INT32_MAX, &cpus),
                         ReadInteger(object, "memory", INT64_MIN, INT64_MAX, &memory),
                         ReadInteger(object, "disk", INT64_MIN, INT64_MAX, &disk)}) {
    if (!s.ok()) return s;
  }
  internal::LimaInstance instance;
  instance.set_name(name);
  instance.set_status(status);
  instance.set_dir(dir);
  instance.set_arch(arch);
  instance.set_vm_type(vm_type);
  instance.set_cpus(static_cast<int32_t>(cpus));
  instance.set_memory(memory);
  instance.set_disk(disk);
  if (const json::Value* errors = object.Find("errors"); errors != nullptr && !errors->is_null()) {
    if (errors->type() != json::Value::Type::kArray) {
      return absl::InvalidArgumentError("\"errors\" is not an array");
    }
    for (const json::Value& e : errors->items()) {
      if (e.type() != json::Value::Type::kString) {
        return absl::InvalidArgumentError("\"errors\" holds something other than strings");
      }
      instance.add_errors(e.text());
    }
  }
  return instance;
}

}  // namespace

absl::StatusOr<std::vector<internal::LimaInstance>> ParseLimaList(const std::string& json_lines) {
  std::vector<internal::LimaInstance> instances;
  for (absl::string_view line : absl::StrSplit(json_lines, '\n', absl::SkipWhitespace())) {
    absl::StatusOr<json::Value> parsed = json::Parse(line);
    absl::StatusOr<internal::LimaInstance> instance =
        parsed.ok() ? ReadInstance(*parsed) : parsed.status();
    if (!instance.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("cannot read `limactl list --json` output: ",
                                                     instance.status().message()));
    }
    instances.push_back(*std::move(instance));
  }
  return instances;
}

LimaDriver::LimaDriver(absl::string_view agent_source, std::string limactl)
    : limactl_(std::move(limactl)), agent_source_(agent_source) {}

absl::StatusOr<bool> LimaDriver::StageAgentSource(const internal::LimaInstance& instance) {
  if (agent_source_.empty() || instance.dir().empty()) return false;
  std::string path = absl::StrCat(instance.dir(), "/agent-src.tar.gz");
  if (ReadFileOrEmpty(path) == agent_source_) return false;
  std::string temp = path + ".tmp";
  {
    UniqueFd fd(open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd || write(fd.get(), agent_source_.data(), agent_source_.size()) !=
                   static_cast<ssize_t>(agent_source_.size())) {
      return absl::InternalError(absl::StrCat("cannot write ", temp, ": ", strerror(errno)));
    }
  }
  if (rename(temp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot write ", path, ": ", strerror(errno)));
  }
  return true;
}

std::string LimaDriver::ConfigPath() const {
  return absl::StrCat(LimaHome(), "/", kInstanceName, "/lima.yaml");
}

std::string LimaDriver::SocketPath(const internal::LimaInstance& instance) {
  return absl::StrCat(instance.dir(), "/sock/agent.sock");
}

absl::StatusOr<CommandResult> LimaDriver::Limactl(
    const std::vector<std::string>& args,
    const std::function<void(const std::string&)>& on_line) {
  std::vector<std::string> argv = {limactl_, "--tty=false"};
  argv.insert(argv.end(), args.begin(), args.end());
  absl::StatusOr<CommandResult> result = RunProgram(argv, on_line);
  if (absl::IsNotFound(result.status())) return absl::FailedPreconditionError(kInstallLima);
  if (!result.ok()) return result.status();
  if (result->exit_code != 0) {
    return absl::InternalError(absl::StrCat("`limactl ", absl::StrJoin(args, " "),
                                            "` failed (exit ", result->exit_code, "):\n",
                                            LastLines(result->err, 15)));
  }
  return result;
}

absl::StatusOr<std::optional<internal::LimaInstance>> LimaDriver::Instance() {
  absl::StatusOr<CommandResult> listed = Limactl({"list", "--json"});
  if (!listed.ok()) return listed.status();
  absl::StatusOr<std::vector<internal::LimaInstance>> instances = ParseLimaList(listed->out);
  if (!instances.ok()) return instances.status();
  for (internal::LimaInstance& instance : *instances) {
    if (instance.name() == kInstanceName) return std::move(instance);
  }
  return std::nullopt;
}

absl::Status LimaDriver::Create() {
  // limactl create copies the file into the instance directory, where it stays the user's to
  // edit; it is written from the embedded default only here, for an instance that is new.
  char path[] = "/tmp/llima-box-lima-XXXXXX.yaml";
  int fd = mkstemps(path, 5);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot create a temporary file: ",
                                                      strerror(errno)));
  UniqueFd file(fd);
  const std::string& config = DefaultLimaConfig();
  bool written = write(fd, config.data(), config.size()) == static_cast<ssize_t>(config.size());
  file.reset();
  absl::Status status = written ? absl::OkStatus()
                                : absl::InternalError("cannot write the Lima configuration");
  if (status.ok()) {
    absl::StatusOr<CommandResult> created =
        Limactl({"create", absl::StrCat("--name=", kInstanceName), path});
    status = created.status();
  }
  unlink(path);
  return status;
}

absl::Status LimaDriver::Start() {
  // The first boot builds the agent inside the VM, which takes minutes.
  return Limactl({"start", "--timeout=30m", kInstanceName}, [](const std::string& line) {
           fprintf(stderr, "llima-box: lima: %s\n", line.c_str());
         }).status();
}

absl::Status LimaDriver::Stop() { return Limactl({"stop", kInstanceName}).status(); }

absl::Status LimaDriver::Delete() {
  return Limactl({"delete", "--force", kInstanceName}).status();
}

absl::StatusOr<internal::LimaInstance> LimaDriver::EnsureRunning(
    const std::function<void(const std::string&)>& progress) {
  absl::StatusOr<std::optional<internal::LimaInstance>> instance = Instance();
  if (!instance.ok()) return instance.status();
  if (!instance->has_value()) {
    progress("creating the llima-box VM (first run; this downloads an Ubuntu image)");
    if (auto s = Create(); !s.ok()) return s;
    instance = Instance();
    if (!instance.ok()) return instance.status();
    if (!instance->has_value()) {
      return absl::InternalError("limactl create succeeded but the instance is not listed");
    }
  }
  // The VM builds the agent from these sources at boot, when they changed.
  absl::StatusOr<bool> staged = StageAgentSource(**instance);
  if (!staged.ok()) return staged.status();
  const std::string& status = (**instance).status();
  if (status == "Running") {
    if (*staged) {
      progress("this llima-box brings a newer agent; the VM installs it at its next start "
               "(llima-box vm stop; llima-box vm start)");
    }
    return **instance;
  }
  if (status == "Stopped") {
    progress("starting the llima-box VM");
    if (auto s = Start(); !s.ok()) return s;
    instance = Instance();
    if (!instance.ok()) return instance.status();
    if (instance->has_value() && (**instance).status() == "Running") return **instance;
  }
  std::string errors = instance->has_value()
                           ? absl::StrJoin((**instance).errors(), "; ")
                           : std::string("it disappeared");
  return absl::FailedPreconditionError(absl::StrCat(
      "the llima-box VM is ", instance->has_value() ? (**instance).status() : "missing",
      errors.empty() ? "" : absl::StrCat(" (", errors, ")"),
      ". See `limactl list`; `llima-box vm delete` and a new `llima-box shell` recreate it "
      "(environments in it are lost; project directories are not)"));
}

}  // namespace llima
