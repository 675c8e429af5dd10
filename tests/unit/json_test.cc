// The clients' own JSON: the reader of `limactl list --json` and the writer of `list --json`.
// (The tests in tests/cli check the writer's output against protobuf's own JSON parser.)

#include "json.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lima_driver.h"
#include "list_json.h"

namespace llima {
namespace {

using ::testing::HasSubstr;

TEST(JsonParse, ReadsEveryKindOfValue) {
  absl::StatusOr<json::Value> v = json::Parse(
      R"( {"s":"a\"b\\c\/\n\t\u00e9\ud83d\ude00", "n":-12.5e+3, "z":0, "t":true, "f":false,)"
      R"( "x":null, "a":[1,[],{}], "o":{"k":"v"}} )");
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_EQ(v->type(), json::Value::Type::kObject);
  EXPECT_EQ(v->Find("s")->text(), "a\"b\\c/\n\t\xc3\xa9\xf0\x9f\x98\x80");
  EXPECT_EQ(v->Find("n")->type(), json::Value::Type::kNumber);
  EXPECT_EQ(v->Find("n")->text(), "-12.5e+3");
  EXPECT_EQ(v->Find("z")->text(), "0");
  EXPECT_TRUE(v->Find("t")->boolean());
  EXPECT_EQ(v->Find("f")->type(), json::Value::Type::kBool);
  EXPECT_FALSE(v->Find("f")->boolean());
  EXPECT_TRUE(v->Find("x")->is_null());
  ASSERT_EQ(v->Find("a")->items().size(), 3u);
  EXPECT_EQ(v->Find("a")->items()[1].type(), json::Value::Type::kArray);
  EXPECT_EQ(v->Find("o")->Find("k")->text(), "v");
  EXPECT_EQ(v->Find("missing"), nullptr);
  EXPECT_EQ(v->Find("o")->Find("k")->Find("k"), nullptr);
}

TEST(JsonParse, ADuplicatedNameMeansTheLastValue) {
  absl::StatusOr<json::Value> v = json::Parse(R"({"k":1,"k":2})");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->Find("k")->text(), "2");
}

TEST(JsonParse, RefusesWhatIsNotJson) {
  for (const char* bad : {"", "   ", "{", "[1,]", "{\"a\" 1}", "{\"a\":1,}", "{a:1}", "01",
                          "1.", "-", "1e", "\"abc", "\"a\tb\"", "\"\\x\"", "\"\\ud800\"",
                          "\"\\udc00\"", "\"\\u12\"", "tru", "nul", "{} {}", "[1 2]"}) {
    absl::StatusOr<json::Value> v = json::Parse(bad);
    EXPECT_FALSE(v.ok()) << "accepted: " << bad;
    if (!v.ok()) {
      EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(v.status().message(), HasSubstr("not JSON at offset"));
    }
  }
}

TEST(JsonParse, NestingIsBounded) {
  EXPECT_TRUE(json::Parse(std::string(64, '[') + std::string(64, ']')).ok());
  absl::StatusOr<json::Value> deep = json::Parse(std::string(100000, '['));
  ASSERT_FALSE(deep.ok());
  EXPECT_THAT(deep.status().message(), HasSubstr("nested too deeply"));
}

TEST(JsonQuote, EscapesWhatMustBeAndRoundTrips) {
  EXPECT_EQ(json::Quote("a\"b\\c\nd\x01"), R"("a\"b\\c\nd\u0001")");
  EXPECT_EQ(json::Quote("caf\xc3\xa9"), "\"caf\xc3\xa9\"");
  std::string every;
  for (int c = 1; c < 128; ++c) every += static_cast<char>(c);
  absl::StatusOr<json::Value> back = json::Parse(json::Quote(every));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->text(), every);
}

TEST(ParseLimaList, ReadsTheFieldsItKnowsAndSkipsTheRest) {
  absl::StatusOr<std::vector<internal::LimaInstance>> list = ParseLimaList(
      R"({"name":"other","status":"Running","arch":"aarch64"})"
      "\n\n"
      R"({"name":"llima-box","status":"Broken","dir":"/h/.lima/llima-box","vmType":"vz",)"
      R"("arch":"x86_64","cpus":4,"memory":"8589934592","disk":107374182400,)"
      R"("network":[{"lima":"shared","deep":{"x":[null]}}],"sshLocalPort":60022,)"
      R"("errors":["no disk"],"hostname":null})"
      "\n");
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name(), "other");
  EXPECT_EQ((*list)[0].cpus(), 0);
  const internal::LimaInstance& box = (*list)[1];
  EXPECT_EQ(box.name(), "llima-box");
  EXPECT_EQ(box.status(), "Broken");
  EXPECT_EQ(box.dir(), "/h/.lima/llima-box");
  EXPECT_EQ(box.vm_type(), "vz");
  EXPECT_EQ(box.arch(), "x86_64");
  EXPECT_EQ(box.cpus(), 4);
  EXPECT_EQ(box.memory(), 8589934592);
  EXPECT_EQ(box.disk(), 107374182400);
  ASSERT_EQ(box.errors_size(), 1);
  EXPECT_EQ(box.errors(0), "no disk");
  EXPECT_TRUE(ParseLimaList("").ok());
}

TEST(ParseLimaList, SaysWhatItCannotRead) {
  struct Case {
    const char* line;
    const char* says;
  };
  for (const Case& c : {Case{"not json", "not JSON at offset 0"},
                        Case{"[1]", "not a JSON object"},
                        Case{R"({"name":3})", "\"name\" is not a string"},
                        Case{R"({"cpus":"four"})", "\"cpus\" is not an integer"},
                        Case{R"({"cpus":4294967296})", "\"cpus\" is not an integer"},
                        Case{R"({"memory":1.5})", "\"memory\" is not an integer"},
                        Case{R"({"errors":"x"})", "\"errors\" is not an array"},
                        Case{R"({"errors":[1]})", "other than strings"}}) {
    absl::StatusOr<std::vector<internal::LimaInstance>> list = ParseLimaList(c.line);
    ASSERT_FALSE(list.ok()) << c.line;
    EXPECT_THAT(list.status().message(), HasSubstr("cannot read `limactl list --json` output"));
    EXPECT_THAT(list.status().message(), HasSubstr(c.says)) << c.line;
  }
}

TEST(EnvironmentsToJson, WritesTimestampsAsProtobufDoes) {
  auto created_at = [](int64_t seconds, int32_t nanos) {
    v1::Environment env;
    env.mutable_created_at()->set_seconds(seconds);
    env.mutable_created_at()->set_nanos(nanos);
    std::string json = EnvironmentsToJson({env});
    size_t at = json.find("\"createdAt\":\"") + 13;
    return json.substr(at, json.find('"', at) - at);
  };
  EXPECT_EQ(created_at(0, 0), "1970-01-01T00:00:00Z");
  EXPECT_EQ(created_at(1700000000, 120000000), "2023-11-14T22:13:20.120Z");
  EXPECT_EQ(created_at(1700000000, 120000), "2023-11-14T22:13:20.000120Z");
  EXPECT_EQ(created_at(1700000000, 1), "2023-11-14T22:13:20.000000001Z");
  EXPECT_EQ(created_at(-1, 500000000), "1969-12-31T23:59:59.500Z");
  EXPECT_EQ(created_at(-62135596800, 0), "0001-01-01T00:00:00Z");    // the earliest valid
  EXPECT_EQ(created_at(-30610310400, 0), "0999-12-31T00:00:00Z");    // four digits of year
  EXPECT_EQ(created_at(10, -250000000), "1970-01-01T00:00:09.750Z");  // carried
  EXPECT_EQ(created_at(10, 1250000000), "1970-01-01T00:00:11.250Z");
}

TEST(EnvironmentsToJson, WritesProtobufsJsonMapping) {
  EXPECT_EQ(EnvironmentsToJson({}), R"({"environments":[]})");

  v1::Environment env;
  env.set_name("app-1a2b");
  env.set_project_path("/home/u/\"app\"");
  env.set_state(v1::Environment::STATE_RUNNING);
  env.mutable_created_at()->set_seconds(1700000000);
  env.mutable_created_at()->set_nanos(5000000);
  env.set_process_count(2);
  env.set_uid(501);
  env.set_gid(20);
  env.set_home("/home/app-1a2b");
  env.set_shell("/bin/bash");
  v1::DetachedProcess* p = env.add_detached();
  p->set_pid(7);
  p->add_argv("sleep");
  p->add_argv("9");
  p->mutable_started_at()->set_seconds(1700000001);
  p->mutable_started_at()->set_nanos(123456789);
  env.mutable_limits()->set_memory_max_bytes(int64_t{1} << 33);
  env.mutable_limits()->set_pids_max(4096);
  env.mutable_limits()->set_cpu_millicores(-1);
  env.mutable_limits_enforcement()->set_pids(true);
  env.mutable_limits_enforcement()->set_detail("no memory controller");
  v1::Environment bare;
  bare.set_state(static_cast<v1::Environment::State>(7));

  EXPECT_EQ(EnvironmentsToJson({env, bare}),
            R"({"environments":[{"name":"app-1a2b","projectPath":"/home/u/\"app\"",)"
            R"("state":"STATE_RUNNING","createdAt":"2023-11-14T22:13:20.005Z","processCount":2,)"
            R"("uid":501,"gid":20,"home":"/home/app-1a2b","shell":"/bin/bash","detail":"",)"
            R"("detached":[{"pid":7,"argv":["sleep","9"],)"
            R"("startedAt":"2023-11-14T22:13:21.123456789Z"}],)"
            R"("limits":{"memoryMaxBytes":"8589934592","pidsMax":"4096","cpuMillicores":"-1"},)"
            R"("limitsEnforcement":{"memory":false,"pids":true,"cpu":false,)"
            R"("detail":"no memory controller"}},)"
            R"({"name":"","projectPath":"","state":7,"processCount":0,"uid":0,"gid":0,)"
            R"("home":"","shell":"","detail":"","detached":[]}]})");
}

}  // namespace
}  // namespace llima
