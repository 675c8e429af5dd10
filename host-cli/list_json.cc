#include "list_json.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "json.h"

namespace llima {
namespace {

// RFC 3339 in UTC, with 0, 3, 6 or 9 digits of fraction as protobuf writes a Timestamp. Nanos
// out of [0, 1e9) (the agent never sends them) are carried into the seconds.
std::string TimestampJson(const google::protobuf::Timestamp& t) {
  absl::Time time = absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
  absl::Time whole = absl::FromUnixSeconds(absl::ToUnixSeconds(time));
  if (whole > time) whole -= absl::Seconds(1);
  std::string text = absl::FormatTime("%E4Y-%m-%dT%H:%M:%S", whole, absl::UTCTimeZone());
  int64_t nanos = absl::ToInt64Nanoseconds(time - whole);
  if (nanos > 0) {
    if (nanos % 1000000 == 0) {
      absl::StrAppendFormat(&text, ".%03d", nanos / 1000000);
    } else if (nanos % 1000 == 0) {
      absl::StrAppendFormat(&text, ".%06d", nanos / 1000);
    } else {
      absl::StrAppendFormat(&text, ".%09d", nanos);
    }
  }
  return json::Quote(text + "Z");
}

std::string Int64Json(int64_t value) { return absl::StrCat("\"", value, "\""); }

std::string BoolJson(bool value) { return value ? "true" : "false"; }

std::string StringsJson(const google::protobuf::RepeatedPtrField<std::string>& strings) {
  std::vector<std::string> quoted;
  for (const std::string& s : strings) quoted.push_back(json::Quote(s));
  return absl::StrCat("[", absl::StrJoin(quoted, ","), "]");
}

// Members in field-number order; message fields only when set, as protobuf prints them.
class Object {
 public:
  Object& Add(const char* name, const std::string& json) {
    absl::StrAppend(&text_, text_.empty() ? "{" : ",", "\"", name, "\":", json);
    return *this;
  }
  std::string Close() const { return text_.empty() ? "{}" : text_ + "}"; }

 private:
  std::string text_;
};

std::string StateJson(v1::Environment::State state) {
  const std::string& name = v1::Environment::State_Name(state);
  // A value this client does not know yet is printed as its number, as protobuf does.
  return name.empty() ? absl::StrCat(static_cast<int>(state)) : json::Quote(name);
}

std::string DetachedJson(const v1::DetachedProcess& p) {
  Object o;
  o.Add("pid", absl::StrCat(p.pid())).Add("argv", StringsJson(p.argv()));
  if (p.has_started_at()) o.Add("startedAt", TimestampJson(p.started_at()));
  return o.Close();
}

std::string EnvironmentJson(const v1::Environment& env) {
  Object o;
  o.Add("name", json::Quote(env.name()))
      .Add("projectPath", json::Quote(env.project_path()))
      .Add("state", StateJson(env.state()));
  if (env.has_created_at()) o.Add("createdAt", TimestampJson(env.created_at()));
  o.Add("processCount", absl::StrCat(env.process_count()))
      .Add("uid", absl::StrCat(env.uid()))
      .Add("gid", absl::StrCat(env.gid()))
      .Add("home", json::Quote(env.home()))
      .Add("shell", json::Quote(env.shell()))
      .Add("detail", json::Quote(env.detail()));
  std::vector<std::string> detached;
  for (const v1::DetachedProcess& p : env.detached()) detached.push_back(DetachedJson(p));
  o.Add("detached", absl::StrCat("[", absl::StrJoin(detached, ","), "]"));
  if (env.has_limits()) {
    const v1::ResourceLimits& l = env.limits();
    o.Add("limits", Object()
                        .Add("memoryMaxBytes", Int64Json(l.memory_max_bytes()))
                        .Add("pidsMax", Int64Json(l.pids_max()))
                        .Add("cpuMillicores", Int64Json(l.cpu_millicores()))
                        .Close());
  }
  if (env.has_limits_enforcement()) {
    const v1::LimitsEnforcement& e = env.limits_enforcement();
    o.Add("limitsEnforcement", Object()
                                   .Add("memory", BoolJson(e.memory()))
                                   .Add("pids", BoolJson(e.pids()))
                                   .Add("cpu", BoolJson(e.cpu()))
                                   .Add("detail", json::Quote(e.detail()))
                                   .Close());
  }
  return o.Close();
}

}  // namespace

std::string EnvironmentsToJson(const std::vector<v1::Environment>& environments) {
  std::vector<std::string> items;
  for (const v1::Environment& env : environments) items.push_back(EnvironmentJson(env));
  return absl::StrCat("{\"environments\":[", absl::StrJoin(items, ","), "]}");
}

}  // namespace llima
